"""``TeSOPredictor``: encode a clip's frames once, then decode it under many audio / cue inputs.

The visual encoding (Swin + pixel decoder) is by far the costliest part and depends on the frames
only, so audio-control runs (normal, muted, noise at 10 / 40 dB) reuse it:

    predictor = TeSOPredictor(model)
    predictor.set_clip(frames)                          # uint8 [T, H, W, 3] or float [T, 3, S, S]
    probs = predictor.predict(audio, text, text_count)  # [T, N_C, h, w]
"""

from __future__ import annotations

import numpy as np
import torch

from teso.errors import TesoError
from teso.model.foundation import VisualFeatures
from teso.model.postprocess import TeSOOutput
from teso.model.preprocess import preprocess_frames
from teso.model.teso import TeSO


class TeSOPredictor:
    """Caching inference wrapper around a TeSO model (puts it in eval mode, runs without grad)."""

    def __init__(self, model: TeSO) -> None:
        self.model = model.eval()
        self._visual: VisualFeatures | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def set_clip(self, frames: np.ndarray | torch.Tensor) -> None:
        """Encode and cache one clip: uint8 RGB [T, H, W, 3] (preprocessed here) or normalised float
        [T, 3, S, S]."""
        if isinstance(frames, np.ndarray) or frames.dtype == torch.uint8:
            frames = preprocess_frames(frames, self.model.config.visual.image_size)
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise TesoError(f"frames: expected [T, 3, S, S] or uint8 [T, H, W, 3], got {tuple(frames.shape)}")
        self._visual = self.model.encode_visual(frames[None].to(self.device))

    @property
    def num_frames(self) -> int:
        if self._visual is None:
            raise TesoError("TeSOPredictor: call set_clip(frames) before predict")
        return self._visual.batch_shape[1]

    @torch.no_grad()
    def predict_output(
        self,
        audio: torch.Tensor | None,
        text: torch.Tensor | None,
        text_count: torch.Tensor | None,
    ) -> TeSOOutput:
        """The full ``TeSOOutput`` (B = 1) for the cached clip. ``audio`` [T, 1, 96, 64],
        ``text`` [T, M, d_T], ``text_count`` [T]."""
        t = self.num_frames
        dev = self.device

        def batch(x: torch.Tensor | None, name: str) -> torch.Tensor | None:
            if x is None:
                return None
            if x.shape[0] != t:
                raise TesoError(f"{name}: expected {t} frames (the clip's), got {x.shape[0]}")
            return x[None].to(dev)

        return self.model.decode(
            self._visual, batch(audio, "audio"), batch(text, "text"), batch(text_count, "text_count")
        )

    def predict(
        self,
        audio: torch.Tensor | None,
        text: torch.Tensor | None,
        text_count: torch.Tensor | None,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Per-class probability maps [T, N_C, h, w] (at ``size`` = (H, W) when given)."""
        out = self.predict_output(audio, text, text_count)
        return (out.probs if size is None else out.probs_at(size))[0]
