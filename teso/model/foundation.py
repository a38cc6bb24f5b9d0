"""The visual foundation: Hugging Face Mask2Former (Swin backbone) wrapped for TeSO.

What the wrapper adds to ``Mask2FormerForUniversalSegmentation`` (transformers 5.x):
- building it from a ``VisualConfig`` with random weights, or from a local directory / hub id with
  ``from_pretrained`` (failures raise TesoError; nothing falls back to random weights);
- a new class head ``Linear(d, N_C + 1)`` (the last logit is "no object"); the HF model's own loss
  module is removed (TeSO's loss lives in ``teso.model.losses``);
- the adapters of ``teso.model.adapters``, hooked in;
- freezing, keeping the class head and adapters trainable;
- the split into ``encode`` (Swin + pixel decoder: depends on the frames only, so the predictor can
  cache it) and ``decode`` (masked-attention decoder + heads);
- query prompting: a forward **pre**-hook with kwargs on the masked-attention decoder receives the
  learnable query features repeated per image, ``inputs_embeds`` (Q, N, d), and may replace them
  (and, for extra prompt tokens, extend ``query_position_embeddings``). A forward hook on
  ``queries_features`` would never fire: the transformer module reads its ``.weight`` directly;
- a key mask for extra prompt tokens: HF's decoder calls every layer's self-attention with
  ``attention_mask=None``, so a forward pre-hook on each ``self_attn`` supplies an additive mask
  that removes the masked extra tokens from the keys (the "(−) PMQS" row appends tokens).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

from teso.errors import TesoError
from teso.model.adapters import attach_adapters
from teso.model.config import AdapterConfig, VisualConfig

# A prompt function maps (query features (Q, N, d), query position embeddings (Q, N, d)) to new ones;
# it may add tokens (Q' >= Q) as long as both tensors keep the same length.
QueryPromptFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

# Architecture fields compared between a VisualConfig and a loaded checkpoint's HF config.
_M2F_FIELDS = (
    "hidden_dim",
    "feature_size",
    "mask_feature_size",
    "encoder_layers",
    "encoder_feedforward_dim",
    "decoder_layers",
    "dim_feedforward",
    "num_attention_heads",
    "num_queries",
)
_SWIN_FIELDS = ("embed_dim", "depths", "num_heads", "window_size")
# "owner/name" as on the hub; anything else that is not an existing path is a missing directory.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class VisualFeatures:
    """The frames' encoding, independent of audio and text (cacheable).

    ``mask_features`` [N, C_m, S/4, S/4] per-pixel embeddings; ``multi_scale`` three maps
    [N, C, S/32, S/32], [N, C, S/16, S/16], [N, C, S/8, S/8]; ``batch_shape`` (B, T) with N = B·T.
    """

    mask_features: torch.Tensor
    multi_scale: tuple[torch.Tensor, ...]
    batch_shape: tuple[int, int]


def mask2former_config(visual: VisualConfig, num_classes: int) -> Mask2FormerConfig:
    """The HF config of the foundation described by ``visual`` (Swin backbone, random weights)."""
    swin = SwinConfig(
        image_size=visual.image_size,
        embed_dim=visual.embed_dim,
        depths=list(visual.depths),
        num_heads=list(visual.num_heads),
        window_size=visual.window_size,
        drop_path_rate=visual.drop_path_rate,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return Mask2FormerConfig(
        backbone_config=swin,
        num_labels=num_classes,
        hidden_dim=visual.hidden_dim,
        feature_size=visual.feature_size,
        mask_feature_size=visual.mask_feature_size,
        encoder_layers=visual.encoder_layers,
        encoder_feedforward_dim=visual.encoder_feedforward_dim,
        decoder_layers=visual.decoder_layers,
        dim_feedforward=visual.dim_feedforward,
        num_attention_heads=visual.num_attention_heads,
        num_queries=visual.num_queries,
        dropout=visual.dropout,
    )


def _architecture_mismatches(visual: VisualConfig, hf: Mask2FormerConfig) -> list[str]:
    out = []
    for name in _M2F_FIELDS:
        if getattr(hf, name) != getattr(visual, name):
            out.append(f"visual.{name}: config {getattr(visual, name)} vs checkpoint {getattr(hf, name)}")
    backbone = hf.backbone_config
    for name in _SWIN_FIELDS:
        theirs = getattr(backbone, name)
        theirs = list(theirs) if isinstance(theirs, (list, tuple)) else theirs
        if theirs != getattr(visual, name):
            out.append(f"visual.{name}: config {getattr(visual, name)} vs checkpoint {theirs}")
    return out


def load_mask2former(visual: VisualConfig, num_classes: int, load_pretrained: bool = True) -> nn.Module:
    """The HF Mask2Former of ``visual``: pre-trained from ``visual.pretrained`` when set and
    ``load_pretrained`` (else random weights). Its class head is still the checkpoint's."""
    source = visual.pretrained
    if source is None or not load_pretrained:
        return Mask2FormerForUniversalSegmentation(mask2former_config(visual, num_classes))
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise TesoError(f"visual.pretrained {source}: expected a directory written by save_pretrained")
        target = str(path)
    elif _HUB_ID.match(source):
        target = source
    else:
        raise TesoError(
            f"visual.pretrained {source}: no such directory (expected a save_pretrained directory "
            f"or a hub id such as facebook/mask2former-swin-base-ade-semantic)"
        )
    try:
        m2f = Mask2FormerForUniversalSegmentation.from_pretrained(target)
    except Exception as exc:  # from_pretrained raises OSError, ValueError, HTTP errors, ...
        raise TesoError(
            f"visual.pretrained {source}: not a local directory and not loadable as a hub id ({exc})"
            if target == source and not path.exists()
            else f"visual.pretrained {source}: could not load Mask2Former weights ({exc})"
        ) from exc
    mismatches = _architecture_mismatches(visual, m2f.config)
    if mismatches:
        raise TesoError(
            f"visual.pretrained {source}: checkpoint architecture differs from the config: "
            + "; ".join(mismatches)
        )
    return m2f


class _PromptHook:
    """Forward pre-hook (with kwargs) on the masked-attention decoder; applies the active prompt.

    A callable object so that ``copy.deepcopy`` of the model keeps a working hook.
    """

    def __init__(self) -> None:
        self.prompt: QueryPromptFn | None = None

    def __call__(self, _module: nn.Module, args: tuple, kwargs: dict):
        if self.prompt is None:
            return None
        queries, positions = self.prompt(kwargs["inputs_embeds"], kwargs["query_position_embeddings"])
        if queries.shape != positions.shape:
            raise RuntimeError("query prompt must return query features and positions of the same shape")
        kwargs = dict(kwargs, inputs_embeds=queries, query_position_embeddings=positions)
        return args, kwargs


class _LayerPromptHook:
    """Forward pre-hook (with kwargs) on one masked-attention decoder layer: applies the active prompt
    to the queries that layer receives (``PMQSConfig.after_layer``). The decoder calls its layers
    with ``(hidden_states, level_index, attention_mask, position_embeddings,
    query_position_embeddings, encoder_hidden_states, ...)`` positionally (transformers 5.0-5.25).
    """

    def __init__(self) -> None:
        self.prompt: QueryPromptFn | None = None

    def __call__(self, _module: nn.Module, args: tuple, kwargs: dict):
        if self.prompt is None:
            return None
        queries, positions = self.prompt(args[0], args[4])
        if queries.shape != args[0].shape:
            raise RuntimeError("a prompt inside the decoder must keep the number of queries")
        return (queries, *args[1:]), kwargs


class _TokenKeyMaskHook:
    """Forward pre-hook (with kwargs) on a decoder layer's self-attention: while ``extra_keep``
    [N, K] is set, the last K of its L tokens are extra prompt tokens and those with False are
    removed from the keys (additive −inf), so they cannot reach the queries. The N_Q queries are
    always kept, so no row is fully masked. A callable object so that ``copy.deepcopy`` works."""

    def __init__(self, num_heads: int) -> None:
        self.num_heads = num_heads
        self.extra_keep: torch.Tensor | None = None

    def __call__(self, _module: nn.Module, args: tuple, kwargs: dict):
        if self.extra_keep is None:
            return None
        if kwargs.get("attention_mask") is not None:
            raise RuntimeError("decoder self-attention already has a mask: unsupported transformers version")
        hidden = kwargs["hidden_states"]  # (L, N, d): sequence first
        length, n = hidden.shape[:2]
        keep = torch.cat(
            [self.extra_keep.new_ones(n, length - self.extra_keep.shape[1]), self.extra_keep], dim=1
        )
        bias = torch.zeros(n, length, dtype=hidden.dtype, device=hidden.device)
        bias = bias.masked_fill(~keep, float("-inf"))
        # Mask2FormerAttention adds a (N·H, L_q, L_k) mask to its logits.
        mask = bias[:, None, None, :].expand(n, self.num_heads, length, length)
        return args, dict(kwargs, attention_mask=mask.reshape(n * self.num_heads, length, length))


class VisualFoundation(nn.Module):
    """HF Mask2Former + new class head + adapters, split into ``encode`` and ``decode``.

    Parameters live in ``m2f`` (HF names, e.g. ``m2f.class_predictor.weight``) and ``adapters``.
    """

    def __init__(self, m2f: nn.Module, num_classes: int, adapters: AdapterConfig) -> None:
        super().__init__()
        self.m2f = m2f
        self.num_classes = num_classes
        self.num_queries = m2f.config.num_queries
        hidden = m2f.config.hidden_dim
        # New head: N_C classes + "no object"; the checkpoint's (150 ADE classes) is discarded.
        m2f.class_predictor = nn.Linear(hidden, num_classes + 1)
        # The HF loss would carry a stale class count; TeSO computes its loss itself.
        if hasattr(m2f, "criterion"):
            del m2f.criterion
        self.adapters, self._adapter_handles = attach_adapters(m2f, adapters)
        self._prompt_hook = _PromptHook()
        decoder = m2f.model.transformer_module.decoder
        decoder.register_forward_pre_hook(self._prompt_hook, with_kwargs=True)
        self._layer_prompt_hooks = []
        for layer in decoder.layers:
            hook = _LayerPromptHook()
            layer.register_forward_pre_hook(hook, with_kwargs=True)
            self._layer_prompt_hooks.append(hook)
        self._key_mask_hooks = []
        for layer in decoder.layers:
            hook = _TokenKeyMaskHook(layer.self_attn.num_heads)
            layer.self_attn.register_forward_pre_hook(hook, with_kwargs=True)
            self._key_mask_hooks.append(hook)

    @classmethod
    def build(
        cls,
        visual: VisualConfig,
        adapters: AdapterConfig,
        num_classes: int,
        load_pretrained: bool = True,
    ) -> VisualFoundation:
        """Build from config; ``load_pretrained=False`` skips ``visual.pretrained`` (the weights come
        from a TeSO checkpoint instead)."""
        return cls(load_mask2former(visual, num_classes, load_pretrained), num_classes, adapters)

    @property
    def class_head(self) -> nn.Linear:
        return self.m2f.class_predictor

    def freeze(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the HF weights; the class head and the adapters always train."""
        for param in self.m2f.parameters():
            param.requires_grad_(not frozen)
        for param in self.class_head.parameters():
            param.requires_grad_(True)
        for param in self.adapters.parameters():
            param.requires_grad_(True)

    def encode(self, pixel_values: torch.Tensor, batch_shape: tuple[int, int]) -> VisualFeatures:
        """Swin + pixel decoder. ``pixel_values`` [N, 3, S, S] normalised -> VisualFeatures."""
        out = self.m2f.model.pixel_level_module(pixel_values=pixel_values)
        return VisualFeatures(
            mask_features=out.decoder_last_hidden_state,
            multi_scale=tuple(out.decoder_hidden_states),
            batch_shape=batch_shape,
        )

    def decode(
        self,
        features: VisualFeatures,
        prompt: QueryPromptFn | None = None,
        extra_keep: torch.Tensor | None = None,
        prompt_at: int = 0,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Masked-attention decoder + class head, optionally prompting the queries.

        Returns per decoder prediction (first = learnable queries, last = final) the class logits
        [N, N_Q, N_C+1] and the mask logits [N, N_Q, S/4, S/4]. Extra prompt tokens added by
        ``prompt`` take part in the decoder's self- and masked attention; their own predictions are
        dropped, so every output keeps N_Q queries. ``extra_keep`` [N, K] bool (K = the tokens
        ``prompt`` appends): the False ones are removed from every self-attention's keys, so their
        content cannot reach the queries. ``prompt_at`` k >= 1 prompts the queries entering the k-th
        decoder layer instead of the learnable ones (the first k + 1 predictions are then unprompted);
        only a prompt that keeps the query count (PMQS) can be applied there.
        """
        layers = len(self._layer_prompt_hooks)
        if prompt_at and not 0 < prompt_at < layers:
            raise TesoError(
                f"model.pmqs.after_layer={prompt_at}: expected 0 to {layers - 1} (decoder layers)"
            )
        if prompt_at and extra_keep is not None:
            raise TesoError(
                "model.pmqs.after_layer >= 1 needs PMQS: appended prompt tokens start the decoder"
            )
        if prompt_at:
            self._layer_prompt_hooks[prompt_at].prompt = prompt
        else:
            self._prompt_hook.prompt = prompt
        for hook in self._key_mask_hooks:
            hook.extra_keep = extra_keep
        try:
            out = self.m2f.model.transformer_module(
                multi_scale_features=list(features.multi_scale),
                mask_features=features.mask_features,
                output_hidden_states=False,
            )
        finally:
            self._prompt_hook.prompt = None
            for hook in self._layer_prompt_hooks:
                hook.prompt = None
            for hook in self._key_mask_hooks:
                hook.extra_keep = None
        q = self.num_queries
        class_logits = [self.class_head(h.transpose(0, 1))[:, :q] for h in out.intermediate_hidden_states]
        mask_logits = [m[:, :q] for m in out.masks_queries_logits]
        return class_logits, mask_logits
