"""The TeSO model: config + variants, the HF Mask2Former foundation with adapters, audio encoder,
SeDAM, PMQS, losses, the ablation wiring, input preprocessing and output post-processing,
checkpoints and the caching predictor. See docs/model.md."""

from teso.model.adapters import Adapter, attach_adapters
from teso.model.audio_encoder import AudioEncoder, TinyAudioCNN
from teso.model.build import build_teso, check_frozen_weights
from teso.model.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    load_training_state,
    read_checkpoint_metadata,
    save_checkpoint,
    save_training_state,
    training_state_path,
)
from teso.model.config import (
    AblationConfig,
    AdapterConfig,
    AudioConfig,
    LossConfig,
    PMQSConfig,
    SeDAMConfig,
    TeSOConfig,
    TextConfig,
    VisualConfig,
)
from teso.model.foundation import VisualFeatures, VisualFoundation, mask2former_config
from teso.model.losses import TeSOLoss, build_targets
from teso.model.pmqs import PMQS
from teso.model.postprocess import TeSOOutput, sounding_maps
from teso.model.predictor import TeSOPredictor
from teso.model.preprocess import TeSOTargets, pack_cues, prepare_text, preprocess_frames
from teso.model.sedam import SeDAM, SeDAMOutput, dynamic_keep, latent_infonce
from teso.model.teso import TeSO
from teso.model.variants import PAPER_HUB_ID, get_variant, list_variants
from teso.model.wiring import Wiring, resolve_wiring

__all__ = [
    "FORMAT_VERSION",
    "PAPER_HUB_ID",
    "PMQS",
    "AblationConfig",
    "Adapter",
    "AdapterConfig",
    "AudioConfig",
    "AudioEncoder",
    "LossConfig",
    "PMQSConfig",
    "SeDAM",
    "SeDAMConfig",
    "SeDAMOutput",
    "TeSO",
    "TeSOConfig",
    "TeSOLoss",
    "TeSOOutput",
    "TeSOPredictor",
    "TeSOTargets",
    "TextConfig",
    "TinyAudioCNN",
    "VisualConfig",
    "VisualFeatures",
    "VisualFoundation",
    "Wiring",
    "attach_adapters",
    "build_targets",
    "build_teso",
    "check_frozen_weights",
    "dynamic_keep",
    "get_variant",
    "latent_infonce",
    "list_variants",
    "load_checkpoint",
    "load_training_state",
    "mask2former_config",
    "pack_cues",
    "prepare_text",
    "preprocess_frames",
    "sounding_maps",
    "read_checkpoint_metadata",
    "resolve_wiring",
    "save_checkpoint",
    "save_training_state",
    "training_state_path",
]
