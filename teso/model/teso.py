"""The TeSO model, assembled from already-built parts (``teso.model.build.build_teso`` builds them).

Shapes: B clips × T frames (one per second), S×S frames, N_T cues of width d_T, N_Q queries,
N_C classes, d = the foundation's query width; masks come out at S/4 × S/4.

    frames [B, T, 3, S, S] ──encode_visual──> VisualFeatures (Swin + pixel decoder, cacheable)
    audio  [B, T, 1, 96, 64] log-mel, second t with frame t ──encoder──> [B·T, d_A] ──MLP──> [B·T, d]
    text   [B, T, N_T, d_T] (+ text_count [B, T]) ──MLP──> [B·T, N_T, d]
    SeDAM ──> F_AT [B·T, N_T, d] + keep mask ──PMQS──> prompted queries ──decoder──> TeSOOutput
"""

from __future__ import annotations

import torch
from torch import nn

from teso.errors import TesoError
from teso.model.audio_encoder import AudioEncoder
from teso.model.config import TeSOConfig
from teso.model.foundation import VisualFeatures, VisualFoundation
from teso.model.losses import TeSOLoss
from teso.model.pmqs import PMQS
from teso.model.postprocess import TeSOOutput
from teso.model.preprocess import TeSOTargets, prepare_text
from teso.model.sedam import Projection, SeDAM, latent_infonce
from teso.model.wiring import Wiring, resolve_wiring


class TeSO(nn.Module):
    """TeSO from its parts. Missing parts (None) are the ablations of ``config.ablation``; which parts
    exist and how they connect is ``self.wiring`` (``teso.model.wiring``), resolved once."""

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
        self.wiring: Wiring = resolve_wiring(config)
        w = self.wiring
        parts = {
            "audio_encoder": (audio_encoder, w.audio),
            "audio_proj": (audio_proj, w.audio),
            "text_proj": (text_proj, w.text),
            "sedam": (sedam, w.sedam),
            "pmqs": (pmqs, w.pmqs),
        }
        wrong = [name for name, (part, wanted) in parts.items() if (part is not None) != wanted]
        if wrong:
            raise TesoError(f"TeSO parts {wrong} do not match the wiring ({w.describe()})")
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

    # ----- forward --------------------------------------------------------------------------------
    def encode_visual(self, frames: torch.Tensor) -> VisualFeatures:
        """Frames [B, T, 3, S, S] (``preprocess_frames`` output) -> VisualFeatures of the B·T images."""
        self._check_frames(frames)
        b, t = frames.shape[:2]
        return self.foundation.encode(frames.reshape(b * t, *frames.shape[2:]), (b, t))

    @staticmethod
    def _check_frames(frames: torch.Tensor) -> None:
        if frames.dim() != 5 or frames.shape[2] != 3 or frames.shape[-1] != frames.shape[-2]:
            raise TesoError(f"frames: expected [B, T, 3, S, S] normalised frames, got {tuple(frames.shape)}")
        if frames.shape[-1] % 32:
            raise TesoError(f"frames: side S must be a multiple of 32, got {frames.shape[-1]}")

    def _audio_tokens(self, audio: torch.Tensor | None, b: int, t: int) -> torch.Tensor | None:
        if not self.wiring.audio:
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
        if not self.wiring.text:
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
        return self._decode(visual, audio, text, text_count, targets, visual.batch_shape, None)

    def _decode(
        self,
        visual: VisualFeatures,
        audio: torch.Tensor | None,
        text: torch.Tensor | None,
        text_count: torch.Tensor | None,
        targets: TeSOTargets | None,
        batch_shape: tuple[int, int],
        decoded: torch.Tensor | None,
    ) -> TeSOOutput:
        """``decode`` for B×T = ``batch_shape`` frames of audio / text, of which ``visual`` holds the
        ``decoded`` ones ([B, T] bool, None = all): the prompt is made for every frame (infoNCE
        reads every second's latents), the decoder runs on the decoded frames only."""
        w = self.wiring
        b, t = batch_shape
        n = b * t
        device = visual.mask_features.device
        a = self._audio_tokens(audio, b, t)
        txt, valid = self._text_tokens(text, text_count, b, t, device)

        tokens = keep = latents = xi = key_bias = None
        cue_keep = torch.zeros_like(valid)
        if w.sedam:  # tokens "fused", "latents" or "cues": SeDAM's path follows from which input is None
            out = self.sedam(a, txt, valid)
            tokens, keep, cue_keep, latents, xi = out.tokens, out.keep, out.cue_keep, out.latents, out.xi
            key_bias = out.key_bias
        elif w.tokens == "projected":
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
            if w.latents
            else visual.mask_features.new_zeros(())
        )
        if decoded is not None:
            idx = decoded.reshape(-1).nonzero().squeeze(1).to(device)
            cue_keep = cue_keep[idx]
            xi = None if xi is None else xi[idx]
            if tokens is not None:
                tokens, keep = tokens[idx], keep[idx]
                key_bias = None if key_bias is None else key_bias[idx]
            out_shape = (1, idx.numel())
        else:
            out_shape = (b, t)
        prompt, extra_keep, prompt_at = None, None, 0
        if w.prompt == "pmqs":
            # The S/8 map ([N, C, S/8, S/8] -> [N, P, C]) of exactly the frames being decoded.
            pixels = (
                visual.multi_scale[-1].flatten(2).transpose(1, 2) if self.config.pmqs.ground_tokens else None
            )
            prompt = self._pmqs_prompt(tokens, keep, key_bias, pixels)
            prompt_at = self.config.pmqs.after_layer
        elif w.prompt == "append":
            prompt, extra_keep = self._append_prompt(tokens), keep
        class_logits, mask_logits = self.foundation.decode(visual, prompt, extra_keep, prompt_at)

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(*out_shape, *x.shape[1:])

        result = TeSOOutput(
            class_logits=split(class_logits[-1]),
            mask_logits=split(mask_logits[-1]),
            cue_keep=split(cue_keep),
            infonce=infonce,
            aux=[(split(c), split(m)) for c, m in zip(class_logits[:-1], mask_logits[:-1])],
            xi=None if xi is None else split(xi),
            decoded=decoded,
            prompt_keep=None if keep is None else split(keep),
        )
        if targets is not None:
            result.losses = self._losses(class_logits, mask_logits, targets, infonce, b, t, decoded)
        return result

    def _pmqs_prompt(
        self,
        tokens: torch.Tensor,
        keep: torch.Tensor,
        key_bias: torch.Tensor | None,
        pixels: torch.Tensor | None = None,
    ):
        def prompt(queries: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # The decoder works sequence-first (Q, N, d); PMQS batch-first (N, Q, d).
            prompted = self.pmqs(queries.transpose(0, 1), tokens, keep, key_bias, pixels)
            return prompted.transpose(0, 1), positions

        return prompt

    @staticmethod
    def _append_prompt(tokens: torch.Tensor):
        # "(−) PMQS": the tokens [N, K, d] join the queries with no position embedding; the masked
        # ones are removed from the decoder's self-attention keys by the foundation (extra_keep).
        extra = tokens.transpose(0, 1)

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
        decoded: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The loss over the annotated frames. ``class_logits`` / ``mask_logits`` cover the B·T
        frames, or the ``decoded`` ones only (then every decoded frame is annotated)."""
        masks = targets.masks
        if masks.dim() != 4 or tuple(masks.shape[:2]) != (b, t):
            raise TesoError(f"targets.masks: expected [B={b}, T={t}, H, W], got {tuple(masks.shape)}")
        annotated = self._annotated(targets, b, t)
        device = mask_logits[-1].device
        flat_masks = masks.reshape(b * t, *masks.shape[2:]).to(device)
        idx = annotated.reshape(-1).nonzero().squeeze(1).to(device)
        if decoded is not None:
            return self.criterion(class_logits, mask_logits, flat_masks[idx], infonce)
        return self.criterion(
            [c[idx] for c in class_logits], [m[idx] for m in mask_logits], flat_masks[idx], infonce
        )

    @staticmethod
    def _annotated(targets: TeSOTargets, b: int, t: int) -> torch.Tensor:
        annotated = targets.annotated
        if annotated is None:
            return torch.ones(b, t, dtype=torch.bool)
        if tuple(annotated.shape) != (b, t):
            raise TesoError(f"targets.annotated: expected [B={b}, T={t}] bool, got {tuple(annotated.shape)}")
        return annotated.bool()

    def forward(
        self,
        frames: torch.Tensor,
        audio: torch.Tensor | None,
        text: torch.Tensor | None,
        text_count: torch.Tensor | None,
        targets: TeSOTargets | None = None,
        *,
        annotated_only: bool = False,
    ) -> TeSOOutput:
        """``encode_visual`` + ``decode``. Frames [B, T, 3, S, S]; audio [B, T, 1, 96, 64] log-mel
        (second t with frame t); text [B, T, M, d_T] with text_count [B, T].

        ``annotated_only`` (training; needs ``targets``): run the visual network and the decoder on
        the frames ``targets.annotated`` marks only — the others add nothing to the loss (S4 train
        annotates frame 0 of 5). Audio, SeDAM and infoNCE still see every second. The output's
        per-frame fields then cover the annotated frames only (``TeSOOutput.decoded``).
        """
        if not annotated_only or targets is None or targets.annotated is None:
            if annotated_only and targets is None:
                raise TesoError("annotated_only: needs targets (it decodes the annotated frames only)")
            return self.decode(self.encode_visual(frames), audio, text, text_count, targets)
        self._check_frames(frames)
        b, t = frames.shape[:2]
        annotated = self._annotated(targets, b, t).to(frames.device)
        if not annotated.any():
            raise TesoError(
                "targets.annotated: no frame of the batch is annotated; annotated_only needs at least one "
                "(every AVSBench clip annotates its first frame)"
            )
        if annotated.all():
            return self.decode(self.encode_visual(frames), audio, text, text_count, targets)
        chosen = frames.reshape(b * t, *frames.shape[2:])[annotated.reshape(-1)]
        visual = self.foundation.encode(chosen, (1, chosen.shape[0]))
        return self._decode(visual, audio, text, text_count, targets, (b, t), annotated)
