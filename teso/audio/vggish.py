"""VGGish, laid out so that the widely used PyTorch port's weights load unchanged.

The port (harritaylor/torchvggish, ``vggish-10086976.pth``) names its parameters
``features.{0,3,6,8,11,13}.{weight,bias}`` (the convolutions of a ``Sequential`` that also holds
the ReLUs and max-pools) and ``embeddings.{0,2,4}.{weight,bias}``. Its first fully connected layer
was converted from TensorFlow, which flattens feature maps channels-last; the port therefore
moves channels last before flattening, and so does :meth:`VGGish.forward` — flattening
channels-first would load without complaint and give wrong embeddings.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from teso.errors import TesoError
from teso.utils.files import atomic_write
from teso.utils.state_dict import check_state_dict

EMBEDDING_SIZE = 128
# Conv widths in order, "M" = 2x2 max-pool: gives conv indices 0, 3, 6, 8, 11, 13 in ``features``.
_LAYOUT: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
_FINAL_CHANNELS, _FINAL_TIME, _FINAL_FREQ = 512, 6, 4  # 96 x 64 input after four 2x2 pools


def _make_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 1
    for item in _LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(channels, int(item), kernel_size=3, padding=1))
            layers.append(nn.ReLU(inplace=True))
            channels = int(item)
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """VGGish embedding network: log-mel examples ``[N, 1, 96, 64]`` -> embeddings ``[N, 128]``.

    Raw embeddings (ReLU after the last layer, as in the port), no PCA / quantisation.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _make_features()
        self.embeddings = nn.Sequential(
            nn.Linear(_FINAL_CHANNELS * _FINAL_TIME * _FINAL_FREQ, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_SIZE),
            nn.ReLU(inplace=True),
        )

    @staticmethod
    def flatten_features(maps: Tensor) -> Tensor:
        """``[N, 512, 6, 4]`` (channels, time, frequency) -> ``[N, 12288]`` in channels-last order.

        Element ``(c, t, f)`` lands at index ``(t * 4 + f) * 512 + c``, the TensorFlow order the
        converted weights expect.
        """
        return maps.permute(0, 2, 3, 1).reshape(maps.shape[0], -1)

    def forward(self, examples: Tensor) -> Tensor:
        """``[N, 1, 96, 64]`` log-mel examples -> ``[N, 128]`` embeddings."""
        if examples.dim() != 4 or tuple(examples.shape[1:]) != (1, 96, 64):
            raise TesoError(
                f"VGGish expects log-mel examples of shape [N, 1, 96, 64], got {tuple(examples.shape)}"
            )
        return self.embeddings(self.flatten_features(self.features(examples)))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> VGGish:
        """Build VGGish and load ``path`` strictly; returns the model in eval mode.

        ``path`` is the port's ``.pth`` (read with ``torch.load(weights_only=True)``) or a
        ``.safetensors`` file written by :meth:`save_safetensors`.

        Raises:
            TesoError: missing or unreadable file, or keys / shapes that differ from the port's
                (the message lists the missing and unexpected keys).
        """
        path = Path(path)
        if not path.is_file():
            raise TesoError(f"{path}: VGGish weights not found (expected a .pth or .safetensors file)")
        state = _read_state_dict(path, map_location)
        # Built on the meta device and filled by assignment: no time spent initialising 72 M weights
        # that the file overwrites anyway.
        with torch.device("meta"):
            model = cls()
        expected = model.state_dict()
        check_state_dict(
            expected, state, str(path), "a VGGish state dict", "VGGish weights have wrong shapes"
        )
        # contiguous float32 copies only where needed (a half-precision or strided file)
        state = {k: state[k].to(dtype=v.dtype).contiguous() for k, v in expected.items()}
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()

    def save_safetensors(self, path: str | os.PathLike) -> Path:
        """Write the weights (port key names) to ``path`` as safetensors, atomically."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"model": "vggish"}))


def _read_state_dict(path: Path, map_location: str | torch.device) -> dict[str, Tensor]:
    if path.suffix.lower() == ".safetensors":
        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as exc:
            raise TesoError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        state = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load raises many types (pickle, zip, runtime) for bad files
        raise TesoError(f"{path}: not a readable PyTorch weights file ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise TesoError(f"{path}: expected a state dict (a mapping of names to tensors) of VGGish weights")
    return dict(state)
