"""Bottleneck adapters on the frozen foundation's attention outputs (SPEC §3, "adapters").

An adapter is ``x + up(act(down(x)))`` with ``up`` zero-initialised, so a freshly adapted model
computes exactly what the pre-trained one does. Adapters are attached with forward hooks on the
modules whose output they adapt, so the HF module tree and its state-dict keys stay untouched (the
pre-trained weights load as they are) and no library code is copied or patched.

Sites (each switchable in ``AdapterConfig``):
(a) ``swin``: the output projection of every Swin window attention (``SwinAttention.o_proj``;
    ``attention.output.dense`` in older transformers);
(b) ``pixel_decoder``: ``output_proj`` of every pixel-decoder multi-scale deformable attention;
(c) ``transformer_decoder``: every masked-attention (``cross_attn``) layer of the transformer
    decoder. That is an ``nn.MultiheadAttention`` whose ``out_proj`` is consumed functionally (its
    forward is never called), so the adapter wraps the attention module's output instead, which is
    the output of that projection.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from teso.model.config import AdapterConfig


class Adapter(nn.Module):
    """Residual bottleneck MLP ``x + up(act(down(x)))`` on the last dimension; [..., d] -> [..., d]."""

    def __init__(self, dim: int, reduction: int = 4, activation: str = "gelu") -> None:
        super().__init__()
        hidden = max(1, dim // reduction)
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.up = nn.Linear(hidden, dim)
        # Zero up-projection: the adapted model starts as the pre-trained model exactly.
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


class _AdapterHook:
    """Forward hook applying an adapter to a module's output.

    A callable object rather than a closure, so ``copy.deepcopy`` of the model re-points the hook at
    the copied adapter instead of the original one.
    """

    def __init__(self, adapter: Adapter, tuple_output: bool) -> None:
        self.adapter = adapter
        # nn.MultiheadAttention returns (attn_output [L, N, d], weights); only the first is adapted.
        self.tuple_output = tuple_output

    def __call__(self, _module: nn.Module, _args: tuple, output):
        if self.tuple_output:
            return (self.adapter(output[0]), *output[1:])
        return self.adapter(output)


def _swin_sites(backbone: nn.Module) -> Iterator[nn.Linear]:
    for module in backbone.modules():
        if type(module).__name__ != "SwinAttention":
            continue
        if isinstance(getattr(module, "o_proj", None), nn.Linear):
            yield module.o_proj
        elif isinstance(getattr(getattr(module, "output", None), "dense", None), nn.Linear):
            yield module.output.dense
        else:
            raise RuntimeError(
                "SwinAttention without o_proj or output.dense: unsupported transformers version"
            )


def _pixel_decoder_sites(pixel_decoder: nn.Module) -> Iterator[nn.Linear]:
    for module in pixel_decoder.modules():
        if type(module).__name__.endswith("MultiscaleDeformableAttention"):
            yield module.output_proj


def _decoder_sites(decoder: nn.Module) -> Iterator[nn.MultiheadAttention]:
    for layer in decoder.layers:
        yield layer.cross_attn


def attach_adapters(m2f: nn.Module, config: AdapterConfig) -> tuple[nn.ModuleDict, list]:
    """Create the adapters of the enabled sites of an HF Mask2Former and hook them in.

    Returns ``(adapters, handles)``: a ModuleDict named ``swin_{i}``, ``pixel_decoder_{i}``,
    ``transformer_decoder_{i}`` (in module order) and the hook handles.
    """
    adapters = nn.ModuleDict()
    handles = []
    pixel_level = m2f.model.pixel_level_module
    if config.swin:
        for i, linear in enumerate(_swin_sites(pixel_level.encoder)):
            adapter = Adapter(linear.out_features, config.reduction, config.activation)
            adapters[f"swin_{i}"] = adapter
            handles.append(linear.register_forward_hook(_AdapterHook(adapter, False)))
    if config.pixel_decoder:
        for i, linear in enumerate(_pixel_decoder_sites(pixel_level.decoder)):
            adapter = Adapter(linear.out_features, config.reduction, config.activation)
            adapters[f"pixel_decoder_{i}"] = adapter
            handles.append(linear.register_forward_hook(_AdapterHook(adapter, False)))
    if config.transformer_decoder:
        for i, mha in enumerate(_decoder_sites(m2f.model.transformer_module.decoder)):
            adapter = Adapter(mha.embed_dim, config.reduction, config.activation)
            adapters[f"transformer_decoder_{i}"] = adapter
            handles.append(mha.register_forward_hook(_AdapterHook(adapter, True)))
    return adapters, handles
