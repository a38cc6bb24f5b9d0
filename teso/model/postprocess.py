"""Model outputs: ``TeSOOutput`` (what ``TeSO.forward`` / ``TeSO.decode`` return) with its per-class
probability maps, and ``sounding_maps`` (probabilities -> foreground map and class map).

Shapes: B clips × T frames, N_Q queries, N_C classes, S/4 × S/4 the mask logits' side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class TeSOOutput:
    """What ``TeSO.forward`` / ``TeSO.decode`` return.

    ``class_logits`` [B, T, N_Q, N_C+1] (last = no object); ``mask_logits`` [B, T, N_Q, S/4, S/4];
    ``cue_keep`` [B, T, N_T] bool (REC#2: cues surviving the dynamic mask; all False without
    text); ``xi`` [B, T, N_T] the dynamic-mask scores, or None; ``infonce`` scalar (0 without
    latents); ``aux`` the intermediate predictions ``[(class_logits, mask_logits), ...]`` (first =
    learnable queries) in the same shapes; ``losses`` the named loss terms when targets were given.

    ``decoded`` [B, T] bool, or None when every frame was decoded. ``TeSO.forward(...,
    annotated_only=True)`` runs the visual network on the annotated frames only: the per-frame
    fields (logits, ``aux``, ``cue_keep``, ``xi``, ``prompt_keep``) then hold just the N_a frames
    ``decoded`` marks, as [1, N_a, ...] in (clip, frame) order; ``infonce`` still covers every frame.
    """

    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    cue_keep: torch.Tensor
    infonce: torch.Tensor
    aux: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    xi: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    decoded: torch.Tensor | None = None
    prompt_keep: torch.Tensor | None = None

    @staticmethod
    def _combine(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        cls = class_logits.softmax(-1)[..., :-1]
        return torch.einsum("btqc,btqhw->btchw", cls, mask_logits.sigmoid())

    @property
    def probs(self) -> torch.Tensor:
        """Per-class maps einsum(softmax(class)[..., :N_C], sigmoid(mask)): [B, T, N_C, S/4, S/4]."""
        return self._combine(self.class_logits, self.mask_logits)

    def probs_at(self, size: tuple[int, int]) -> torch.Tensor:
        """``probs`` at a ground-truth resolution (H, W): mask logits are resized bilinearly before the
        sigmoid, as Mask2Former's post-processing does. -> [B, T, N_C, H, W]."""
        b, t, q, h, w = self.mask_logits.shape
        logits = F.interpolate(
            self.mask_logits.reshape(b * t, q, h, w), size=tuple(size), mode="bilinear", align_corners=False
        ).reshape(b, t, q, *size)
        return self._combine(self.class_logits, logits)

    def frame_probs_at(self, b: int, t: int, size: tuple[int, int]) -> torch.Tensor:
        """``probs_at`` of one frame (clip ``b``, frame ``t``) -> [N_C, H, W]. Resizing only the N_Q
        mask logits of that frame keeps memory at N_Q·H·W floats for long or high-resolution videos."""
        logits = F.interpolate(
            self.mask_logits[b, t][None], size=tuple(size), mode="bilinear", align_corners=False
        )
        return self._combine(self.class_logits[b, t][None, None], logits[None])[0, 0]


def sounding_maps(
    probs: torch.Tensor, num_classes: int, threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-pixel sounding probability and, for semantic models, the class map.

    ``probs`` [..., N_C, H, W] (``TeSOOutput.probs`` / ``probs_at``) -> (foreground [..., H, W] in
    [0, 1], class ids [..., H, W] long or None when N_C = 1).

    Binary: channel 0, clamped to 1 (the einsum over queries exceeds 1 where queries overlap; the
    clamp changes no comparison with a threshold in [0, 1]). Semantic: background (id 0) is never a
    target, so its channel carries no evidence; a pixel's sounding probability is the score of its
    best non-background class, and its class is that class where the score exceeds ``threshold``
    (``>``, the binary rule), background (0) elsewhere.
    """
    if num_classes == 1:
        return probs[..., 0, :, :].clamp(0, 1), None
    best, idx = probs[..., 1:, :, :].max(dim=-3)
    fg = best.clamp(0, 1)
    return fg, torch.where(fg > threshold, idx + 1, torch.zeros_like(idx))
