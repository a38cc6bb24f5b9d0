"""Audio encoders over VGGish log-mel examples: one example [1, 96, 64] per second -> [d_A].

- ``vggish`` (paper): ``teso.audio.VGGish``, frozen, 128-d raw embeddings (no PCA). Its weights are
  loaded from ``AudioConfig.weights``; with None the network is random — the config says so.
- ``cnn`` (``tiny`` variant, SynthAVS): a small CNN trained from scratch on the same examples.
"""

from __future__ import annotations

import torch
from torch import nn

from teso.errors import TesoError
from teso.model.config import AudioConfig

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


class AudioEncoder(nn.Module):
    """Per-second audio features: log-mel examples [N, 1, 96, 64] -> [N, d_A]."""

    def __init__(self, config: AudioConfig, load_weights: bool = True) -> None:
        super().__init__()
        self.kind = config.encoder
        self.frozen = config.encoder == "vggish" and config.freeze
        if config.encoder == "vggish":
            from teso.audio.vggish import VGGish

            if config.weights is not None and load_weights:
                self.net: nn.Module = VGGish.from_pretrained(config.weights)
            else:
                self.net = VGGish()
        else:
            self.net = TinyAudioCNN(list(config.cnn_channels), config.dim)
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
            with torch.no_grad():  # frozen: no graph through the 72 M-parameter VGGish
                return self.net(examples)
        return self.net(examples)
