"""PMQS — prompting mask queries with semantics (SPEC §2): F~_Q = F_Q + softmax(F_Q F_AT^T / √d + M) F_AT.

N layers, each: masked multi-head attention of the queries over the prompt tokens (key padding mask =
the dynamic mask; empty cue slots masked too unless ``text.padding="zero"`` made them zero rows that
carry the audio) with a residual, then an FFN with a residual, each
behind a LayerNorm (pre-norm). The attention output projection and the FFN's last layer start at
zero, so — like the adapters — a fresh PMQS leaves the pre-trained queries exactly as they are and
training starts from the foundation's own behaviour.

A frame whose tokens are all masked keeps its queries unchanged: softmax over an all −inf row would
give NaN, so such frames attend over a dummy all-kept row and their result is then discarded.

``config.ground_tokens`` (a lever, off in the paper): before the layers, every prompt token attends to
the frame's pixel features (the pixel decoder's S/8 map) — pre-norm cross-attention with a residual,
its output projection starting at zero — so a cue such as "guitar" can pick up what the guitar looks
like in this frame before the queries read it. Masked tokens stay masked: grounding changes what a
token holds, never whether the queries see it.

``null_key`` (built with SeDAM's soft mask): every attention also sees a zero key with a zero value
(logit 0, contributes nothing). The soft mask log σ(ξ/τ) lowers the logits of the cues it distrusts;
without a null key the softmax would renormalise the weights over the cues and a frame could never
drop them all. With it, low ξ everywhere means the queries attend mostly to nothing — the soft form
of Eq. 4's "every cue masked, PMQS adds nothing".
"""

from __future__ import annotations

import torch
from torch import nn

from teso.errors import TesoError
from teso.model.config import PMQSConfig


class PMQSLayer(nn.Module):
    """One pre-norm prompting layer: [N, Q, d] queries, [N, K, d] tokens, [N, K] keep -> [N, Q, d]."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, null_key: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True, add_zero_attn=null_key)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)
        nn.init.zeros_(self.ffn[-1].weight)
        nn.init.zeros_(self.ffn[-1].bias)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``bias`` [N, K] float added to every query's attention logits over the K tokens (0 = kept,
        −inf = masked, log σ(ξ/τ) = soft mask)."""
        kv = self.norm_kv(tokens)
        n, q = queries.shape[:2]
        # One float mask [N·H, Q, K] (not a bool key_padding_mask beside it): PyTorch refuses to mix
        # the two kinds, and add_zero_attn pads it with the null key's zero column itself.
        mask = bias[:, None, None, :].expand(n, self.num_heads, q, bias.shape[-1])
        mask = mask.reshape(n * self.num_heads, q, bias.shape[-1]).to(queries.dtype)
        attended, _ = self.attn(self.norm_q(queries), kv, kv, attn_mask=mask, need_weights=False)
        x = queries + attended
        return x + self.ffn(self.norm_ffn(x))


class TokenGrounding(nn.Module):
    """Prompt tokens attend to the frame's pixels: [N, K, d] tokens, [N, P, C] pixels -> [N, K, d]."""

    def __init__(self, dim: int, num_heads: int, pixel_dim: int) -> None:
        super().__init__()
        self.norm_tokens = nn.LayerNorm(dim)
        self.pixel_proj = nn.Linear(pixel_dim, dim)
        self.norm_pixels = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        # Zero output: a fresh grounding leaves the tokens as they are (the paper's PMQS).
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, tokens: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        kv = self.norm_pixels(self.pixel_proj(pixels))
        attended, _ = self.attn(self.norm_tokens(tokens), kv, kv, need_weights=False)
        return tokens + attended


class PMQS(nn.Module):
    """Stack of PMQS layers applied to Mask2Former's query features, per frame (optionally after
    grounding the tokens in the frame's pixels)."""

    def __init__(
        self, dim: int, config: PMQSConfig, null_key: bool = False, pixel_dim: int | None = None
    ) -> None:
        super().__init__()
        self.null_key = null_key
        self.layers = nn.ModuleList(
            [PMQSLayer(dim, config.num_heads, config.ffn_dim, null_key) for _ in range(config.num_layers)]
        )
        # Built after the layers: with it off or on, the same seed gives the layers the same weights.
        self.ground = (
            TokenGrounding(dim, config.num_heads, pixel_dim or dim) if config.ground_tokens else None
        )

    def forward(
        self,
        queries: torch.Tensor,
        tokens: torch.Tensor,
        keep: torch.Tensor,
        key_bias: torch.Tensor | None = None,
        pixels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``queries`` [N, Q, d], ``tokens`` F_AT [N, K, d], ``keep`` [N, K] bool -> prompted [N, Q, d].

        ``pixels`` [N, P, C]: the frame's pixel features, required when the tokens are grounded.

        ``key_bias`` [N, K] (SeDAM's soft mask while training, −inf on removed padding) replaces ``keep`` as
        the attention mask when given; frames with no real token at all (bias −inf everywhere) keep
        their queries unchanged either way."""
        if key_bias is not None:
            any_kept = torch.isfinite(key_bias).any(dim=-1)
            bias = key_bias
        else:
            any_kept = keep.any(dim=-1)
            safe_keep = keep | ~any_kept[:, None]
            bias = torch.zeros(keep.shape, dtype=queries.dtype, device=queries.device)
            bias = bias.masked_fill(~safe_keep, float("-inf"))
        if key_bias is not None and not self.null_key:
            # All −inf rows would give NaN; their result is discarded below anyway.
            bias = torch.where(any_kept[:, None], bias, torch.zeros_like(bias))
        if self.ground is not None:
            if pixels is None or pixels.shape[0] != tokens.shape[0]:
                got = None if pixels is None else tuple(pixels.shape)
                raise TesoError(
                    f"PMQS ground_tokens: expected pixel features [N={tokens.shape[0]}, P, C], got {got}"
                )
            tokens = self.ground(tokens, pixels)
        x = queries
        for layer in self.layers:
            x = layer(x, tokens, bias)
        return torch.where(any_kept[:, None, None], x, queries)
