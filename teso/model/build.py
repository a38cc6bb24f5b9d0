"""``build_teso(config)``: assemble TeSO from its parts, building only what the ablations use."""

from __future__ import annotations

from teso.model.audio_encoder import AudioEncoder
from teso.model.config import TeSOConfig
from teso.model.foundation import VisualFoundation
from teso.model.losses import TeSOLoss
from teso.model.pmqs import PMQS
from teso.model.sedam import Projection, SeDAM
from teso.model.teso import TeSO
from teso.model.variants import get_variant


def build_teso(config: TeSOConfig | str, load_pretrained: bool = True) -> TeSO:
    """The TeSO model of ``config`` (or of the variant named ``config``).

    ``load_pretrained``: read ``visual.pretrained`` and ``audio.weights`` when they are set (a
    failure raises TesoError). ``load_checkpoint`` passes False: every weight comes from the
    checkpoint. Parts an ablation switches off are not built at all (None), so they neither hold
    parameters nor appear in checkpoints.
    """
    if isinstance(config, str):
        config = get_variant(config)
    config.validate()
    ab = config.ablation
    d = config.visual.hidden_dim
    foundation = VisualFoundation.build(config.visual, config.adapters, config.num_classes, load_pretrained)
    audio_encoder = AudioEncoder(config.audio, load_weights=load_pretrained) if ab.audio else None
    audio_proj = Projection(config.audio.dim, d) if ab.audio else None
    text_proj = Projection(config.text.dim, d) if ab.text else None
    sedam = (
        SeDAM(d, config.sedam, dynamic_mask=ab.dynamic_mask) if ab.sedam and (ab.audio or ab.text) else None
    )
    # The null key exists for the soft dynamic mask only (pmqs.py): it lets a frame drop every cue.
    soft_mask = sedam is not None and sedam.soft_mask and ab.audio and ab.text
    pmqs = PMQS(d, config.pmqs, null_key=soft_mask) if ab.pmqs and (ab.audio or ab.text) else None
    criterion = TeSOLoss(config.loss, config.num_classes, infonce=ab.infonce)
    return TeSO(config, foundation, audio_encoder, audio_proj, text_proj, sedam, pmqs, criterion)
