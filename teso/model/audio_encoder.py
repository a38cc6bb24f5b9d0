"""Audio encoders over VGGish log-mel examples: one example [1, 96, 64] per second -> [d_A].

- ``vggish`` (paper): ``teso.audio.VGGish``, frozen, 128-d raw embeddings (no PCA). Its weights are
  loaded from ``AudioConfig.weights``; with None the network is random — the config says so.
- ``cnn`` (``tiny`` variant, SynthAVS): a small CNN over the same examples, trained from scratch, or
  loaded from ``AudioConfig.weights`` (a ``.safetensors`` file of ``TinyAudioCNN`` key names, written by
  :func:`save_cnn_weights`; ``teso pretrain`` makes one by sound-event tagging on SynthAVS).

Freezing rule (``AudioConfig.freeze``): VGGish follows it; a ``cnn`` follows it only when it was given
``weights`` — a randomly initialised CNN would be a frozen random projection, so it always trains.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from teso.errors import TesoError
from teso.model.config import AudioConfig
from teso.utils.files import atomic_write
from teso.utils.state_dict import check_state_dict

EXAMPLE_SHAPE = (1, 96, 64)  # VGGish log-mel example: 96 frames of 10 ms × 64 mel bands


class TinyAudioCNN(nn.Module):
    """Conv3×3-GELU-MaxPool blocks, global average pooling, linear: [N, 1, 96, 64] -> [N, d_A]."""

    def __init__(self, channels: list[int], dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for out_ch in channels:
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.GELU(), nn.MaxPool2d(2)]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(in_ch, dim)

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(examples).mean(dim=(2, 3)))


CNN_FORMAT = "teso-audio-cnn"  # safetensors metadata ``format`` of a TinyAudioCNN weights file


def save_cnn_weights(net: TinyAudioCNN, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``net``'s state dict (its own key names: ``features.0.weight`` … ``proj.bias``) to ``path``
    as safetensors, atomically. Metadata: ``format``, ``cnn_channels``, ``dim`` and ``extra`` (JSON)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    channels = [m.out_channels for m in net.features if isinstance(m, nn.Conv2d)]
    metadata = {
        "format": CNN_FORMAT,
        "cnn_channels": json.dumps(channels),
        "dim": str(net.proj.out_features),
        "extra": json.dumps(extra or {}),
    }
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_cnn_weights(net: TinyAudioCNN, path: str | os.PathLike) -> None:
    """Load ``path`` into ``net`` strictly: every key present, none extra, every shape equal.

    Raises:
        TesoError: naming ``path`` when it is missing, unreadable, or does not fit ``net`` (the keys
            or shapes that differ are listed; a different ``cnn_channels`` / ``dim`` shows as shapes).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TesoError(
            f"audio.weights {path}: not found (expected a TinyAudioCNN .safetensors file, e.g. the "
            "audio.safetensors written by `teso pretrain`)"
        )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise TesoError(f"audio.weights {path}: not a readable safetensors file ({exc})") from exc
    expected = net.state_dict()
    check_state_dict(
        expected,
        state,
        f"audio.weights {path}",
        "a TinyAudioCNN state dict",
        "shapes differ from the configured CNN (audio.cnn_channels / audio.dim)",
    )
    net.load_state_dict({k: state[k].to(v.dtype) for k, v in expected.items()}, strict=True)


class AudioEncoder(nn.Module):
    """Per-second audio features: log-mel examples [N, 1, 96, 64] -> [N, d_A]."""

    def __init__(self, config: AudioConfig, load_weights: bool = True) -> None:
        super().__init__()
        self.kind = config.encoder
        # The freezing rule of the module docstring; decided by the config alone, so a model rebuilt
        # from a checkpoint (load_weights=False) trains the same parameters as the original.
        self.frozen = config.freeze and (config.encoder == "vggish" or config.weights is not None)
        if config.encoder == "vggish":
            from teso.audio.vggish import VGGish

            if config.weights is not None and load_weights:
                self.net: nn.Module = VGGish.from_pretrained(config.weights)
            else:
                self.net = VGGish()
        else:
            self.net = TinyAudioCNN(list(config.cnn_channels), config.dim)
            if config.weights is not None and load_weights:
                load_cnn_weights(self.net, config.weights)
        self.dim = config.dim
        self.set_frozen(self.frozen)

    def set_frozen(self, frozen: bool) -> None:
        self.frozen = frozen
        for param in self.net.parameters():
            param.requires_grad_(not frozen)

    def train(self, mode: bool = True) -> AudioEncoder:
        super().train(mode)
        if self.frozen:
            self.net.eval()  # a frozen encoder always computes its inference features
        return self

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        if examples.dim() != 4 or tuple(examples.shape[1:]) != EXAMPLE_SHAPE:
            raise TesoError(
                f"audio: expected log-mel examples [N, 1, 96, 64] (one a second), got {tuple(examples.shape)}"
            )
        if self.frozen:
            with torch.no_grad():  # frozen: no graph through the encoder (72 M parameters for VGGish)
                return self.net(examples)
        return self.net(examples)
