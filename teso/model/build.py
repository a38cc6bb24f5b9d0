"""``build_teso(config)``: assemble TeSO from its parts, building only what the wiring uses."""

from __future__ import annotations

from teso.errors import TesoError
from teso.model.audio_encoder import AudioEncoder
from teso.model.config import TeSOConfig
from teso.model.foundation import VisualFoundation
from teso.model.losses import TeSOLoss
from teso.model.pmqs import PMQS
from teso.model.sedam import Projection, SeDAM
from teso.model.teso import TeSO
from teso.model.variants import get_variant
from teso.model.wiring import resolve_wiring


def check_frozen_weights(config: TeSOConfig) -> None:
    """Refuse a frozen part that would keep random weights (TesoError naming the key to set).

    Frozen parts: the Mask2Former foundation when ``freeze_foundation`` is set, VGGish when
    ``audio.freeze`` is set (and the audio path is built). ``allow_random_frozen`` lifts the check
    (benchmarks and tests)."""
    if config.allow_random_frozen:
        return
    hint = "(model.allow_random_frozen=true builds it anyway, for benchmarks and tests only)"
    if config.freeze_foundation and config.visual.pretrained is None:
        raise TesoError(
            "model.visual.pretrained: not set, but model.freeze_foundation=true would freeze a random "
            "Mask2Former and train the adapters on it; set model.visual.pretrained to a save_pretrained "
            "directory or a hub id (e.g. facebook/mask2former-swin-base-ade-semantic), or "
            f"model.freeze_foundation=false to train the foundation from scratch {hint}"
        )
    audio = config.audio
    if config.ablation.audio and audio.encoder == "vggish" and audio.freeze and audio.weights is None:
        raise TesoError(
            "model.audio.weights: not set, but the VGGish audio encoder is frozen (model.audio.freeze="
            "true) and would stay random; set model.audio.weights to the VGGish weights file (e.g. "
            f"the torchvggish port's vggish-10086976.pth) {hint}"
        )


def build_teso(config: TeSOConfig | str, load_pretrained: bool = True) -> TeSO:
    """The TeSO model of ``config`` (or of the variant named ``config``).

    ``load_pretrained``: read ``visual.pretrained`` and ``audio.weights`` when they are set (a
    failure raises TesoError) and refuse frozen parts without weights (``check_frozen_weights``).
    ``load_checkpoint`` passes False: every weight comes from the checkpoint. Parts the wiring
    (``teso.model.wiring``) does not use are not built at all (None), so they neither hold
    parameters nor appear in checkpoints.
    """
    if isinstance(config, str):
        config = get_variant(config)
    config.validate()
    if load_pretrained:
        check_frozen_weights(config)
    w = resolve_wiring(config)
    d = config.visual.hidden_dim
    foundation = VisualFoundation.build(config.visual, config.adapters, config.num_classes, load_pretrained)
    audio_encoder = AudioEncoder(config.audio, load_weights=load_pretrained) if w.audio else None
    audio_proj = Projection(config.audio.dim, d) if w.audio else None
    text_proj = Projection(config.text.dim, d) if w.text else None
    sedam = (
        SeDAM(
            d, config.sedam, dynamic_mask=w.dynamic_mask, soft_mask=w.soft_mask, zero_padding=w.zero_padding
        )
        if w.sedam
        else None
    )
    # The null key exists for the soft dynamic mask only (pmqs.py): it lets a frame drop every cue.
    pmqs = (
        PMQS(d, config.pmqs, null_key=w.soft_mask, pixel_dim=config.visual.feature_size) if w.pmqs else None
    )
    criterion = TeSOLoss(config.loss, config.num_classes, infonce=w.infonce_in_loss)
    return TeSO(config, foundation, audio_encoder, audio_proj, text_proj, sedam, pmqs, criterion)
