"""PMQS — prompting mask queries with semantics (SPEC §2): F~_Q = F_Q + softmax(F_Q F_AT^T / √d + M) F_AT.

N layers, each: masked multi-head attention of the queries over the prompt tokens (key padding mask =
the dynamic mask, padding cues always masked) with a residual, then an FFN with a residual, each
behind a LayerNorm (pre-norm). The attention output projection and the FFN's last layer start at
zero, so — like the adapters — a fresh PMQS leaves the pre-trained queries exactly as they are and
training starts from the foundation's own behaviour.

A frame whose tokens are all masked keeps its queries unchanged: softmax over an all −inf row would
give NaN, so such frames attend over a dummy all-kept row and their result is then discarded.
"""

from __future__ import annotations

import torch
from torch import nn

from teso.model.config import PMQSConfig


class PMQSLayer(nn.Module):
    """One pre-norm prompting layer: [N, Q, d] queries, [N, K, d] tokens, [N, K] keep -> [N, Q, d]."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)
        nn.init.zeros_(self.ffn[-1].weight)
        nn.init.zeros_(self.ffn[-1].bias)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(tokens)
        attended, _ = self.attn(self.norm_q(queries), kv, kv, key_padding_mask=~keep, need_weights=False)
        x = queries + attended
        return x + self.ffn(self.norm_ffn(x))


class PMQS(nn.Module):
    """Stack of PMQS layers applied to Mask2Former's query features, per frame."""

    def __init__(self, dim: int, config: PMQSConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [PMQSLayer(dim, config.num_heads, config.ffn_dim) for _ in range(config.num_layers)]
        )

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``queries`` [N, Q, d], ``tokens`` F_AT [N, K, d], ``keep`` [N, K] bool -> prompted [N, Q, d]."""
        any_kept = keep.any(dim=-1)
        safe_keep = keep | ~any_kept[:, None]
        x = queries
        for layer in self.layers:
            x = layer(x, tokens, safe_keep)
        return torch.where(any_kept[:, None, None], x, queries)
