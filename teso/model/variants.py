"""Named model variants: ``get_variant(name)`` gives a fresh ``TeSOConfig``.

- ``swin-base-ade``: the paper's model (SPEC §3). Set ``visual.pretrained`` to a local directory or
  to the hub id ``facebook/mask2former-swin-base-ade-semantic`` and ``audio.weights`` to the VGGish
  weights; left at None both are random (the config says so; nothing is loaded behind your back).
- ``tiny``: random init, small enough to train on 2 CPU cores (tests, SynthAVS).
"""

from __future__ import annotations

from collections.abc import Callable

from teso.errors import TesoError
from teso.model.config import (
    AudioConfig,
    LossConfig,
    PMQSConfig,
    SeDAMConfig,
    TeSOConfig,
    TextConfig,
    VisualConfig,
)

PAPER_HUB_ID = "facebook/mask2former-swin-base-ade-semantic"


def _swin_base_ade() -> TeSOConfig:
    # All defaults of TeSOConfig are the paper's model; weights stay unset until the user names them.
    return TeSOConfig(name="swin-base-ade")


def _tiny() -> TeSOConfig:
    # FIELD-NOTES: this foundation trains from scratch on CPU in minutes (1.76 M parameters).
    return TeSOConfig(
        name="tiny",
        freeze_foundation=False,  # nothing is pre-trained, so everything trains
        visual=VisualConfig(
            pretrained=None,
            image_size=128,  # stage sides 32/16/8/4: all multiples of window 4
            embed_dim=32,
            depths=[1, 1, 2, 1],
            num_heads=[2, 4, 8, 8],
            window_size=4,
            drop_path_rate=0.0,
            hidden_dim=64,
            feature_size=64,
            mask_feature_size=64,
            encoder_layers=2,
            encoder_feedforward_dim=256,
            decoder_layers=3,
            dim_feedforward=256,
            num_attention_heads=4,
            num_queries=12,
        ),
        audio=AudioConfig(encoder="cnn", weights=None, dim=128, cnn_channels=[16, 32, 64]),
        text=TextConfig(dim=384, num_cues=4),  # all-MiniLM-L6-v2 sentence embeddings
        sedam=SeDAMConfig(num_latents=4, num_layers=4, num_heads=8, ffn_dim=256),
        pmqs=PMQSConfig(num_layers=4, num_heads=8, ffn_dim=256),
        loss=LossConfig(train_num_points=1024),
    )


_REGISTRY: dict[str, Callable[[], TeSOConfig]] = {"swin-base-ade": _swin_base_ade, "tiny": _tiny}


def list_variants() -> list[str]:
    """Names accepted by ``get_variant``."""
    return sorted(_REGISTRY)


def get_variant(
    name: str,
    *,
    image_size: int | None = None,
    text_dim: int | None = None,
    num_classes: int | None = None,
) -> TeSOConfig:
    """A fresh config of variant ``name`` with the common overrides applied and validated."""
    if name not in _REGISTRY:
        raise TesoError(f"model variant {name!r}: unknown; expected one of {list_variants()}")
    config = _REGISTRY[name]()
    if image_size is not None:
        config.visual.image_size = int(image_size)
    if text_dim is not None:
        config.text.dim = int(text_dim)
    if num_classes is not None:
        config.num_classes = int(num_classes)
    config.validate()
    return config
