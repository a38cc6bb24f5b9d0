"""What the engine feeds the model: AVSBench clips joined with their cached text features."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from teso.cues.features import TextFeatures
from teso.data.avsbench import AVSBenchDataset
from teso.errors import TesoError


class ClipDataset(Dataset):
    """``AVSBenchDataset`` items plus ``text`` [T, N_T, d_T] and ``text_count`` [T] per clip.

    ``text`` is None when the model takes no text (the "(−) text" ablations); otherwise every clip of
    the split must have features, checked once up front so a long run fails before it starts.
    Frames come resized to ``image_size`` (uint8 [T, S, S, 3]); ``mask_size`` resizes the masks too
    (training targets at the model's resolution), None keeps the dataset's own (evaluation).
    """

    def __init__(
        self,
        root: str,
        subset: str,
        split: str,
        *,
        image_size: int,
        text: TextFeatures | None,
        audio: str = "logmel",
        mask_size: int | None = None,
    ) -> None:
        self.base = AVSBenchDataset(
            root, subset, split, audio=audio, image_size=image_size, mask_size=mask_size
        )
        self.text = text
        if text is not None:
            text.require(self.base.uids)

    def __len__(self) -> int:
        return len(self.base)

    @property
    def records(self):
        return self.base.records

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.base[index]
        if self.text is not None:
            feats, counts = self.text.get(item["uid"])
            if feats.shape[0] != item["frames"].shape[0]:
                raise TesoError(
                    f"{self.text.path(item['uid'])}: text features for {feats.shape[0]} frames, "
                    f"but clip {item['uid']} has {item['frames'].shape[0]}"
                )
            item["text"], item["text_count"] = feats, counts
        return item


def open_text_features(root: str, cues: str, encoder: str, expected_dim: int) -> TextFeatures:
    """The cached text features a model config expects; a width mismatch is a loud error."""
    feats = TextFeatures.open(root, encoder=encoder, cues=cues)
    if feats.dim != expected_dim:
        raise TesoError(
            f"{feats.dir}: text features are {feats.dim}-d ({feats.encoder}), but the model expects "
            f"text.dim = {expected_dim}; set model.text.dim={feats.dim} or encode with the matching encoder"
        )
    return feats


def segmentation_targets(batch: dict[str, Any], num_classes: int) -> torch.Tensor:
    """[B, T, H, W] targets: binary masks (N_C = 1) or semantic class ids (N_C > 1)."""
    if num_classes == 1:
        return batch["masks"].to(torch.long)
    if "semantic" not in batch:
        raise TesoError(f"model has {num_classes} classes but the dataset has no semantic masks")
    return batch["semantic"]
