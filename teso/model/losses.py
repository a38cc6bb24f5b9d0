"""TeSO's training loss (SPEC §3): Mask2Former's set-prediction loss + λ_infoNCE · infoNCE.

The set-prediction part is transformers' ``Mask2FormerLoss`` (Hungarian matching, point-sampled
BCE and Dice, cross-entropy with a down-weighted "no object" class), applied to the final decoder
prediction and — with deep supervision — to every intermediate one. Only annotated frames count.

Targets per frame (``build_targets``):
- binary (N_C = 1): one mask of class 0 holding every foreground pixel (> 0), or no mask at all
  (``zeros(0, H, W)``) for an empty frame — then every query is pushed to "no object";
- semantic (N_C = 71): one mask per class id present, class id = the head's channel (background 0
  and the ignore value 255 are never targets).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss

from teso.errors import TesoError
from teso.model.config import LossConfig

IGNORE_VALUE = 255  # AVSBench / Mask2Former "ignore" label in semantic masks


def build_targets(masks: torch.Tensor, num_classes: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-frame Mask2Former targets from ground-truth maps.

    ``masks`` [n, H, W]: binary maps (any value > 0 = sounding) when ``num_classes == 1``, class-id
    maps otherwise. Returns ``mask_labels`` (n tensors [k_i, H, W] float) and ``class_labels``
    (n tensors [k_i] long).
    """
    if masks.dim() != 3:
        raise TesoError(f"targets.masks: expected per-frame maps [n, H, W], got {tuple(masks.shape)}")
    mask_labels, class_labels = [], []
    for frame in masks:
        if num_classes == 1:
            fg = frame > 0
            if fg.any():
                mask_labels.append(fg[None].float())
                class_labels.append(torch.zeros(1, dtype=torch.long, device=frame.device))
            else:
                mask_labels.append(torch.zeros(0, *frame.shape, device=frame.device))
                class_labels.append(torch.zeros(0, dtype=torch.long, device=frame.device))
            continue
        ids = frame.long().unique()
        ids = ids[(ids != 0) & (ids != IGNORE_VALUE)]
        if ids.numel() and (ids.min() < 0 or ids.max() >= num_classes):
            raise TesoError(
                f"targets.masks: class ids must lie in 1..{num_classes - 1} (or 0/255), got {ids.tolist()}"
            )
        mask_labels.append((frame.long()[None] == ids[:, None, None]).float())
        class_labels.append(ids)
    return mask_labels, class_labels


class TeSOLoss(nn.Module):
    """Named loss terms; call with the decoder's per-layer predictions of the annotated frames."""

    def __init__(self, config: LossConfig, num_classes: int, infonce: bool = True) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.use_infonce = infonce
        hf = Mask2FormerConfig(
            num_labels=num_classes,
            class_weight=config.class_weight,
            mask_weight=config.mask_weight,
            dice_weight=config.dice_weight,
            no_object_weight=config.no_object_weight,
            train_num_points=config.train_num_points,
            oversample_ratio=config.oversample_ratio,
            importance_sample_ratio=config.importance_sample_ratio,
        )
        self.criterion = Mask2FormerLoss(hf, weight_dict={})
        # The class weights follow from the config; keeping them out of the state dict keeps checkpoints
        # independent of the loss settings.
        weight = self.criterion.empty_weight
        del self.criterion.empty_weight
        self.criterion.register_buffer("empty_weight", weight, persistent=False)

    def _weighted(
        self, class_logits: torch.Tensor, mask_logits: torch.Tensor, mask_labels: list, class_labels: list
    ) -> dict[str, torch.Tensor]:
        raw = self.criterion(
            masks_queries_logits=mask_logits,
            class_queries_logits=class_logits,
            mask_labels=mask_labels,
            class_labels=class_labels,
        )
        return {
            "mask": raw["loss_mask"] * self.config.mask_weight,
            "dice": raw["loss_dice"] * self.config.dice_weight,
            "class": raw["loss_cross_entropy"] * self.config.class_weight,
        }

    def forward(
        self,
        class_logits: list[torch.Tensor],
        mask_logits: list[torch.Tensor],
        masks: torch.Tensor,
        infonce: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """``class_logits`` / ``mask_logits``: per decoder prediction (last = final) [n, N_Q, N_C+1]
        and [n, N_Q, h, w] of the n annotated frames; ``masks`` [n, H, W] their ground truth;
        ``infonce`` scalar.

        Returns ``loss_mask``, ``loss_dice``, ``loss_class`` (final prediction, weighted),
        ``loss_aux`` (the same summed over intermediate predictions; 0 without deep supervision),
        ``loss_seg`` (their sum), ``loss_infonce`` (unweighted) and ``loss`` = seg + λ·infoNCE.
        """
        final_c, final_m = class_logits[-1], mask_logits[-1]
        zero = final_m.sum() * 0.0  # keeps the graph connected when nothing is supervised
        if final_m.shape[0] == 0:
            terms = {"mask": zero, "dice": zero, "class": zero}
            aux = zero
        else:
            mask_labels, class_labels = build_targets(masks, self.num_classes)
            terms = self._weighted(final_c, final_m, mask_labels, class_labels)
            aux = zero
            if self.config.deep_supervision:
                for c, m in zip(class_logits[:-1], mask_logits[:-1]):
                    aux = aux + sum(self._weighted(c, m, mask_labels, class_labels).values())
        seg = terms["mask"] + terms["dice"] + terms["class"] + aux
        total = seg + self.config.infonce_weight * infonce if self.use_infonce else seg
        return {
            "loss_mask": terms["mask"],
            "loss_dice": terms["dice"],
            "loss_class": terms["class"],
            "loss_aux": aux,
            "loss_seg": seg,
            "loss_infonce": infonce.detach() if not self.use_infonce else infonce,
            "loss": total,
        }
