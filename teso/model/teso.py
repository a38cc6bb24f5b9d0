"""The TeSO model, assembled from already-built parts (``teso.model.build.build_teso`` builds them).

Shapes: B clips × T frames (one per second), S×S frames, N_T cues of width d_T, N_Q queries,
N_C classes, d = the foundation's query width; masks come out at S/4 × S/4.

    frames [B, T, 3, S, S] ──encode_visual──> VisualFeatures (Swin + pixel decoder, cacheable)
    audio  [B, T, 1, 96, 64] log-mel, second t with frame t ──encoder──> [B·T, d_A] ──MLP──> [B·T, d]
    text   [B, T, N_T, d_T] (+ text_count [B, T]) ──MLP──> [B·T, N_T, d]
    SeDAM ──> F_AT [B·T, N_T, d] + keep mask ──PMQS──> prompted queries ──decoder──> TeSOOutput
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from teso.errors import TesoError
from teso.model.audio_encoder import AudioEncoder
from teso.model.config import TeSOConfig
from teso.model.foundation import VisualFeatures, VisualFoundation
from teso.model.losses import TeSOLoss
from teso.model.pmqs import PMQS
from teso.model.sedam import Projection, SeDAM, latent_infonce

# Mask2Former's image processor normalisation (ImageNet statistics, on 0..1 pixel values).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess_frames(frames: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 RGB frames [..., H, W, 3] -> normalised float [..., 3, S, S] (S = ``image_size``).

    Like Mask2Former's image processor: bilinear resize (antialiased, as PIL does when shrinking),
    scale to 0..1, subtract the ImageNet mean and divide by its std per channel. Unlike it, frames
    are resized to a square S×S (aspect ratio not kept), as AVS models do, so that the masks map
    back to the frame by a plain resize.
    """
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8:
        raise TesoError(
            f"frames: expected uint8 RGB frames [..., H, W, 3], got {getattr(frames, 'dtype', frames)}"
        )
    if frames.dim() < 3 or frames.shape[-1] != 3:
        raise TesoError(f"frames: expected uint8 RGB frames [..., H, W, 3], got shape {tuple(frames.shape)}")
    lead = frames.shape[:-3]
    x = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.reshape(*lead, 3, image_size, image_size)


def prepare_text(
    text: torch.Tensor, text_count: torch.Tensor, num_cues: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one place cues are padded / truncated to N_T.

    ``text`` [B, T, M, d_T] (any M >= 0), ``text_count`` [B, T] valid cues per frame (0..M).
    Returns ``text`` [B, T, N_T, d_T] with zeros beyond the count (the first N_T cues kept when there
    are more) and ``valid`` [B, T, N_T] bool.
    """
    if text.dim() != 4:
        raise TesoError(f"text: expected cue embeddings [B, T, N_T, d_T], got {tuple(text.shape)}")
    if text_count.shape != text.shape[:2]:
        raise TesoError(
            f"text_count: expected shape {tuple(text.shape[:2])} (B, T), got {tuple(text_count.shape)}"
        )
    if text_count.is_floating_point() or text_count.dtype == torch.bool:
        raise TesoError(f"text_count: expected integer counts, got {text_count.dtype}")
    m = text.shape[2]
    if (text_count < 0).any() or (text_count > m).any():
        raise TesoError(
            f"text_count: counts must lie in 0..{m} (the cues given per frame), got {text_count.tolist()}"
        )
    if m < num_cues:
        text = F.pad(text, (0, 0, 0, num_cues - m))
    text = text[:, :, :num_cues]
    valid = torch.arange(num_cues, device=text.device) < text_count.clamp(max=num_cues)[..., None]
    return text * valid[..., None].to(text.dtype), valid


def pack_cues(
    cues: Sequence[Sequence[torch.Tensor]], num_cues: int, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-clip, per-frame cue embeddings (each [n_i, d_T], n_i may be 0) -> ``text`` [B, T, N_T, d_T],
    ``text_count`` [B, T] (long), padded / truncated by ``prepare_text``."""
    b = len(cues)
    t = len(cues[0]) if b else 0
    if any(len(clip) != t for clip in cues):
        raise TesoError("cues: every clip must have the same number of frames")
    longest = max([c.shape[0] for clip in cues for c in clip] + [0])
    text = torch.zeros(b, t, longest, dim)
    count = torch.zeros(b, t, dtype=torch.long)
    for i, clip in enumerate(cues):
        for j, c in enumerate(clip):
            if c.dim() != 2 or (c.shape[0] and c.shape[1] != dim):
                raise TesoError(f"cues[{i}][{j}]: expected [n, {dim}] embeddings, got {tuple(c.shape)}")
            text[i, j, : c.shape[0]] = c
            count[i, j] = c.shape[0]
    padded, _ = prepare_text(text, count, num_cues)
    return padded, count.clamp(max=num_cues)


@dataclass
class TeSOTargets:
    """Ground truth: ``masks`` [B, T, H, W] (binary maps or class-id maps), ``annotated`` [B, T] bool
    (None = every frame annotated). Unannotated frames add nothing to the segmentation loss."""

    masks: torch.Tensor
    annotated: torch.Tensor | None = None


@dataclass
class TeSOOutput:
    """What ``TeSO.forward`` / ``TeSO.decode`` return.

    ``class_logits`` [B, T, N_Q, N_C+1] (last = no object); ``mask_logits`` [B, T, N_Q, S/4, S/4];
    ``cue_keep`` [B, T, N_T] bool (REC#2: cues surviving the dynamic mask; all False without
    text); ``xi`` [B, T, N_T] the dynamic-mask scores, or None; ``infonce`` scalar (0 without
    latents); ``aux`` the intermediate predictions ``[(class_logits, mask_logits), ...]`` (first =
    learnable queries) in the same shapes; ``losses`` the named loss terms when targets were given.
    """

    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    cue_keep: torch.Tensor
    infonce: torch.Tensor
    aux: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    xi: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None

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


class TeSO(nn.Module):
    """TeSO from its parts. Missing parts (None) are the ablations of ``config.ablation``."""

    def __init__(
        self,
        config: TeSOConfig,
        foundation: VisualFoundation,
        audio_encoder: AudioEncoder | None,
        audio_proj: Projection | None,
        text_proj: Projection | None,
        sedam: SeDAM | None,
        pmqs: PMQS | None,
        criterion: TeSOLoss,
    ) -> None:
        super().__init__()
        self.config = config
        self.foundation = foundation
        self.audio_encoder = audio_encoder
        self.audio_proj = audio_proj
        self.text_proj = text_proj
        self.sedam = sedam
        self.pmqs = pmqs
        self.criterion = criterion
        self.set_trainable()

    # ----- training setup -------------------------------------------------------------------------
    def set_trainable(self) -> None:
        """Apply ``config.freeze_foundation``: frozen = only adapters, class head, audio/text
        projections, SeDAM, PMQS train; VGGish follows ``audio.freeze``, and a "cnn" audio encoder
        does too when it loads ``audio.weights`` (without weights it always trains)."""
        for param in self.parameters():
            param.requires_grad_(True)
        self.foundation.freeze(self.config.freeze_foundation)
        if self.audio_encoder is not None:
            self.audio_encoder.set_frozen(self.audio_encoder.frozen)

    def train(self, mode: bool = True) -> TeSO:
        super().train(mode)
        if self.config.freeze_foundation:
            # Frozen weights compute what the pre-trained model computes (no Swin drop-path); the
            # adapters hooked into it have no dropout, so they train the same either way.
            self.foundation.m2f.eval()
        return self

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters split for the optimiser (SPEC §3: lr 1e-4 for ``visual`` — adapters and
        any unfrozen foundation weight — and 1e-3 for ``other``: class head, projections, SeDAM, PMQS)."""
        head = {id(p) for p in self.foundation.class_head.parameters()}
        visual, other = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith("foundation.") and id(param) not in head:
                visual.append(param)
            else:
                other.append(param)
        return {"visual": visual, "other": other}

    # ----- forward --------------------------------------------------------------------------------
    def encode_visual(self, frames: torch.Tensor) -> VisualFeatures:
        """Frames [B, T, 3, S, S] (``preprocess_frames`` output) -> VisualFeatures of the B·T images."""
        if frames.dim() != 5 or frames.shape[2] != 3 or frames.shape[-1] != frames.shape[-2]:
            raise TesoError(f"frames: expected [B, T, 3, S, S] normalised frames, got {tuple(frames.shape)}")
        if frames.shape[-1] % 32:
            raise TesoError(f"frames: side S must be a multiple of 32, got {frames.shape[-1]}")
        b, t = frames.shape[:2]
        return self.foundation.encode(frames.reshape(b * t, *frames.shape[2:]), (b, t))

    def _audio_tokens(self, audio: torch.Tensor | None, b: int, t: int) -> torch.Tensor | None:
        if not self.config.ablation.audio:
            return None
        if audio is None:
            raise TesoError("audio: required (log-mel [B, T, 1, 96, 64]) unless ablation.audio is off")
        if audio.dim() != 5 or tuple(audio.shape[:2]) != (b, t):
            raise TesoError(f"audio: expected log-mel [B={b}, T={t}, 1, 96, 64], got {tuple(audio.shape)}")
        feats = self.audio_encoder(audio.reshape(b * t, *audio.shape[2:]))
        return self.audio_proj(feats)

    def _text_tokens(
        self, text: torch.Tensor | None, text_count: torch.Tensor | None, b: int, t: int, device: torch.device
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        n_t = self.config.text.num_cues
        if not self.config.ablation.text:
            return None, torch.zeros(b * t, n_t, dtype=torch.bool, device=device)
        if text is None or text_count is None:
            raise TesoError("text / text_count: required unless ablation.text is off")
        if text.dim() != 4 or tuple(text.shape[:2]) != (b, t) or text.shape[-1] != self.config.text.dim:
            raise TesoError(
                f"text: expected cue embeddings [B={b}, T={t}, N_T, d_T={self.config.text.dim}], "
                f"got {tuple(text.shape)}"
            )
        padded, valid = prepare_text(text, text_count.to(text.device), n_t)
        return self.text_proj(padded.reshape(b * t, n_t, -1)), valid.reshape(b * t, n_t)

    def decode(
        self,
        visual: VisualFeatures,
        audio: torch.Tensor | None,
        text: torch.Tensor | None,
        text_count: torch.Tensor | None,
        targets: TeSOTargets | None = None,
    ) -> TeSOOutput:
        """Prompt the queries with audio + cues and decode the cached ``visual`` features.

        ``audio`` [B, T, 1, 96, 64], ``text`` [B, T, M, d_T], ``text_count`` [B, T]; either may be
        None when its ablation switch is off.
        """
        b, t = visual.batch_shape
        n = b * t
        device = visual.mask_features.device
        ab = self.config.ablation
        a = self._audio_tokens(audio, b, t)
        txt, valid = self._text_tokens(text, text_count, b, t, device)

        tokens = keep = latents = xi = key_bias = None
        cue_keep = torch.zeros_like(valid)
        if self.sedam is not None:
            out = self.sedam(a, txt, valid)
            tokens, keep, cue_keep, latents, xi = out.tokens, out.keep, out.cue_keep, out.latents, out.xi
            key_bias = out.key_bias
        elif ab.audio or ab.text:
            # "(−) SeDAM": projected cues and the projected audio vector go straight to the prompt.
            parts, keeps = [], []
            if txt is not None:
                parts.append(txt)
                keeps.append(valid)
                cue_keep = valid.clone()
            if a is not None:
                parts.append(a[:, None])
                keeps.append(torch.ones(n, 1, dtype=torch.bool, device=device))
            tokens, keep = torch.cat(parts, 1), torch.cat(keeps, 1)

        infonce = (
            latent_infonce(latents, self.config.sedam.infonce_temperature)
            if latents is not None
            else visual.mask_features.new_zeros(())
        )
        prompt = None
        if tokens is not None:
            prompt = (
                self._pmqs_prompt(tokens, keep, key_bias)
                if self.pmqs is not None
                else self._append_prompt(tokens, keep)
            )
        class_logits, mask_logits = self.foundation.decode(visual, prompt)

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, t, *x.shape[1:])

        result = TeSOOutput(
            class_logits=split(class_logits[-1]),
            mask_logits=split(mask_logits[-1]),
            cue_keep=cue_keep.reshape(b, t, -1),
            infonce=infonce,
            aux=[(split(c), split(m)) for c, m in zip(class_logits[:-1], mask_logits[:-1])],
            xi=None if xi is None else xi.reshape(b, t, -1),
        )
        if targets is not None:
            result.losses = self._losses(class_logits, mask_logits, targets, infonce, b, t)
        return result

    def _pmqs_prompt(self, tokens: torch.Tensor, keep: torch.Tensor, key_bias: torch.Tensor | None):
        def prompt(queries: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # The decoder works sequence-first (Q, N, d); PMQS batch-first (N, Q, d).
            prompted = self.pmqs(queries.transpose(0, 1), tokens, keep, key_bias)
            return prompted.transpose(0, 1), positions

        return prompt

    @staticmethod
    def _append_prompt(tokens: torch.Tensor, keep: torch.Tensor):
        # "(−) PMQS": the tokens join the queries; masked ones are zeroed (the HF decoder's
        # self-attention takes no key mask), and they get no position embedding.
        extra = (tokens * keep[..., None].to(tokens.dtype)).transpose(0, 1)

        def prompt(queries: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.cat([queries, extra], 0), torch.cat([positions, torch.zeros_like(extra)], 0)

        return prompt

    def _losses(
        self,
        class_logits: list[torch.Tensor],
        mask_logits: list[torch.Tensor],
        targets: TeSOTargets,
        infonce: torch.Tensor,
        b: int,
        t: int,
    ) -> dict[str, torch.Tensor]:
        masks = targets.masks
        if masks.dim() != 4 or tuple(masks.shape[:2]) != (b, t):
            raise TesoError(f"targets.masks: expected [B={b}, T={t}, H, W], got {tuple(masks.shape)}")
        annotated = targets.annotated
        if annotated is None:
            annotated = torch.ones(b, t, dtype=torch.bool)
        if tuple(annotated.shape) != (b, t):
            raise TesoError(f"targets.annotated: expected [B={b}, T={t}] bool, got {tuple(annotated.shape)}")
        idx = annotated.reshape(-1).nonzero().squeeze(1).to(mask_logits[-1].device)
        flat_masks = masks.reshape(b * t, *masks.shape[2:]).to(mask_logits[-1].device)[idx]
        return self.criterion(
            [c[idx] for c in class_logits], [m[idx] for m in mask_logits], flat_masks, infonce
        )

    def forward(
        self,
        frames: torch.Tensor,
        audio: torch.Tensor | None,
        text: torch.Tensor | None,
        text_count: torch.Tensor | None,
        targets: TeSOTargets | None = None,
    ) -> TeSOOutput:
        """``encode_visual`` + ``decode``. Frames [B, T, 3, S, S]; audio [B, T, 1, 96, 64] log-mel
        (second t with frame t); text [B, T, M, d_T] with text_count [B, T]."""
        return self.decode(self.encode_visual(frames), audio, text, text_count, targets)
