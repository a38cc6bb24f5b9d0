"""SeDAM — semantic-driven audio modelling (SPEC §2–3), its dynamic mask and the latent infoNCE.

Per frame (N = B·T frames, d = the foundation's query width):
    F_A  [N, d]        = MLP(audio feature [N, d_A])            (two-layer projection)
    F_T  [N, N_T, d]   = MLP(cue embeddings [N, N_T, d_T])      (two-layer projection)
    F_AL [N, N_L, d]   = Linear(F_A) reshaped                    (N_L latent audio features)
    F~_AL              = N cross-modal layers, text as query, F_AL as key/value
    F_AT [N, N_T, d]   = FC(LN(F_T + F~_AL)); F~_AL = the last layer's attention output
                         (``output="attention"``, Eq. 2 read literally) or the layers' residual
                         stream (``"residual"``)
    ξ_i                = mean over heads and keys of the scaled scores q_i·k_j / sqrt(d_head) of the
                         first cross-modal layer (``mask_layer="first"``: the layer that compares F_T
                         with F_AL directly, Eq. 3) or of the last one (``"last"``)
    keep_i             = slot_i and ξ_i > 0   (Eq. 4); slot_i = a real cue, or any slot with
                         ``zero_padding`` (an empty slot is then a zero F_T row that queries the
                         audio like a cue: paper §3.3, "pad with a zero matrix")
    key_bias_i         = log σ(ξ_i / τ) while training with ``mask_train="soft"`` (−∞ off the slots):
                         the differentiable stand-in for Eq. 4 that PMQS adds to its attention
                         logits, so that ξ learns which cues the audio supports
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from teso.model.config import SeDAMConfig


class Projection(nn.Module):
    """Two-layer MLP ``Linear-GELU-Linear``: [..., in_dim] -> [..., dim]."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossModalLayer(nn.Module):
    """Post-norm transformer layer: cues attend to the latent audio features, then an FFN.

    Attention is written out (not ``nn.MultiheadAttention``) because the dynamic mask needs the
    pre-softmax scores. ``attention_only``: the last layer when SeDAM's output is the attention
    output F~_AL itself; its residual, LN and FFN would feed nothing, so they are not built.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, attention_only: bool = False) -> None:
        super().__init__()
        self.attention_only = attention_only
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        if not attention_only:
            self.norm1 = nn.LayerNorm(dim)
            self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
            self.norm2 = nn.LayerNorm(dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        return x.view(n, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, text: torch.Tensor, latents: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``text`` [N, N_T, d], ``latents`` [N, N_L, d] -> (updated text [N, N_T, d], attention
        output [N, N_T, d] (audio latents only, before the residual), scaled scores [N, H, N_T, N_L]).
        An ``attention_only`` layer returns its input as the updated text."""
        q, k, v = (
            self._heads(self.q_proj(text)),
            self._heads(self.k_proj(latents)),
            self._heads(self.v_proj(latents)),
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        attended = self.out_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(text.shape))
        if self.attention_only:
            return text, attended, scores
        x = self.norm1(text + attended)
        x = self.norm2(x + self.ffn(x))
        return x, attended, scores


@dataclass
class SeDAMOutput:
    """``tokens`` [N, K, d] prompt tokens for PMQS; ``keep`` [N, K] bool (False = masked key);
    ``cue_keep`` [N, N_T] bool: cues that survived the dynamic mask (REC#2);
    ``latents`` [N, N_L, d] or None (no audio); ``xi`` [N, N_T] or None (needs audio and text);
    ``key_bias`` [N, K] float or None: the soft mask PMQS adds to its attention logits (training
    with ``mask_train="soft"`` only; ``keep`` then still holds the hard Eq. 4 decision)."""

    tokens: torch.Tensor
    keep: torch.Tensor
    cue_keep: torch.Tensor
    latents: torch.Tensor | None
    xi: torch.Tensor | None
    key_bias: torch.Tensor | None = None


class SeDAM(nn.Module):
    """Latent audio features, cross-modal fusion with the cues, output FC(LN(·)), dynamic mask."""

    def __init__(
        self,
        dim: int,
        config: SeDAMConfig,
        dynamic_mask: bool = True,
        soft_mask: bool | None = None,
        zero_padding: bool = False,
    ) -> None:
        """``dynamic_mask``: apply Eq. 4; ``soft_mask``: also return the soft mask while training
        (None = whenever the dynamic mask is on and ``config.mask_train`` is "soft"; ``build_teso``
        passes ``Wiring.soft_mask``, False where nothing reads it); ``zero_padding``: empty cue slots
        are zero F_T rows that take part in the fusion and the mask (``text.padding="zero"``)."""
        super().__init__()
        self.zero_padding = zero_padding
        self.dim = dim
        self.num_latents = config.num_latents
        self.mask_layer = config.mask_layer
        self.output = config.output
        self.dynamic_mask = dynamic_mask
        if soft_mask is None:
            soft_mask = dynamic_mask and config.mask_train == "soft"
        self.soft_mask = soft_mask
        self.mask_temperature = config.mask_temperature
        self.mask_slots = config.mask_slots
        self.latent_proj = nn.Linear(dim, config.num_latents * dim)
        last = config.num_layers - 1 if self.output == "attention" else -1
        self.layers = nn.ModuleList(
            [
                CrossModalLayer(dim, config.num_heads, config.ffn_dim, attention_only=i == last)
                for i in range(config.num_layers)
            ]
        )
        self.out_norm = nn.LayerNorm(dim)
        self.out_fc = nn.Linear(dim, dim)

    def latents(self, audio: torch.Tensor) -> torch.Tensor:
        """Projected audio [N, d] -> latent audio features F_AL [N, N_L, d]."""
        return self.latent_proj(audio).view(audio.shape[0], self.num_latents, self.dim)

    def forward(
        self,
        audio: torch.Tensor | None,
        text: torch.Tensor | None,
        valid: torch.Tensor,
    ) -> SeDAMOutput:
        """``audio`` [N, d] projected audio or None ("(−) audio"); ``text`` [N, N_T, d] projected cues
        or None ("(−) text"); ``valid`` [N, N_T] bool, False for zero-padding cues."""
        n = valid.shape[0]
        if audio is None and text is None:
            raise ValueError("SeDAM needs audio or text")
        if text is None:
            # Audio-only prompting: the latents themselves are the prompt, all of them kept.
            lat = self.latents(audio)
            tokens = self.out_fc(self.out_norm(lat))
            keep = torch.ones(n, self.num_latents, dtype=torch.bool, device=lat.device)
            return SeDAMOutput(tokens, keep, torch.zeros_like(valid), lat, None)
        if audio is None:
            # Cue-only prompting: no audio to score against, so only padding is masked.
            tokens = self.out_fc(self.out_norm(text))
            return SeDAMOutput(tokens, valid.clone(), valid.clone(), None, None)
        lat = self.latents(audio)
        if self.zero_padding:
            # The projection maps a zero embedding to its biases; the paper's zero matrix is F_T itself.
            text = text * valid[..., None].to(text.dtype)
            slots = torch.ones_like(valid)
        else:
            slots = valid
        x = text
        all_scores = []
        for layer in self.layers:
            x, attended, scores = layer(x, lat)
            all_scores.append(scores)
        fused = attended if self.output == "attention" else x
        tokens = self.out_fc(self.out_norm(text + fused))
        chosen = all_scores[0] if self.mask_layer == "first" else all_scores[-1]
        xi = chosen.mean(dim=(1, 3))
        # With mask_slots="cues" the zero rows are exempt: the mask judges text cues, not the audio.
        exempt = (
            slots & ~valid if self.zero_padding and self.mask_slots == "cues" else torch.zeros_like(valid)
        )
        keep = dynamic_keep(xi, slots) | exempt if self.dynamic_mask else slots.clone()
        key_bias = None
        if self.soft_mask and self.training:
            soft = F.logsigmoid(xi / self.mask_temperature).masked_fill(exempt, 0.0)
            key_bias = soft.masked_fill(~slots, float("-inf"))
        # REC#2 counts real cues only: a kept zero slot is audio, not a recognised object.
        return SeDAMOutput(tokens, keep, keep & valid, lat, xi, key_bias)


def dynamic_keep(xi: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Eq. 4 as a boolean keep mask: slot i is kept iff it takes part (``valid``) and ξ_i > 0.

    ``xi``, ``valid`` [N, N_T] -> [N, N_T] bool."""
    return valid & (xi > 0)


def latent_infonce(latents: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """infoNCE over the N_L latents of each frame (SPEC §3), mean over frames and latents.

    For latent a_j the positive is a_j itself and the frame's other latents are the negatives:
    ``-log softmax_i(cos(a_j, a_i) / τ)[j]``. ``latents`` [N, N_L, d] -> scalar. Identical latents
    give log N_L; mutually orthogonal ones give nearly 0.
    """
    z = F.normalize(latents, dim=-1)
    logits = z @ z.transpose(1, 2) / temperature
    n, n_l, _ = logits.shape
    target = torch.arange(n_l, device=latents.device).expand(n, n_l)
    return F.cross_entropy(logits.reshape(n * n_l, n_l), target.reshape(-1))
