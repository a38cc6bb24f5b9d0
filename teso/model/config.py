"""Typed configuration of the TeSO model: one dataclass a part, a reason beside every default.

The defaults are the paper's model (``swin-base-ade``, SPEC §3); ``teso.model.variants`` holds the
named variants. ``TeSOConfig.to_dict()`` / ``TeSOConfig.from_dict()`` round-trip through JSON and
refuse unknown keys, so a checkpoint's config can never be silently half-read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from teso.errors import TesoError


@dataclass
class VisualConfig:
    """The visual foundation: HF Mask2Former with a Swin backbone (SPEC §3, "visual foundation")."""

    # Local directory or hub id loaded with from_pretrained; None = RANDOM weights (tests, from-scratch runs).
    pretrained: str | None = None
    image_size: int = 384  # the paper's input side S; frames are resized to S×S (multiple of 32)
    embed_dim: int = 128  # Swin-B channel width of stage 1
    depths: list[int] = field(default_factory=lambda: [2, 2, 18, 2])  # Swin-B blocks per stage
    num_heads: list[int] = field(default_factory=lambda: [4, 8, 16, 32])  # Swin-B heads per stage
    window_size: int = 12  # Swin-B window at 384 px (stage sides 96/48/24/12 are multiples of 12)
    drop_path_rate: float = 0.3  # the ADE checkpoint's value; off while the foundation is frozen
    hidden_dim: int = 256  # Mask2Former query width d; SeDAM and PMQS work at this width too
    feature_size: int = 256  # pixel-decoder width (must be a multiple of 32: GroupNorm(32, ·))
    mask_feature_size: int = 256  # per-pixel embedding width of the mask features
    encoder_layers: int = 6  # pixel-decoder deformable-attention layers (ADE checkpoint)
    encoder_feedforward_dim: int = 1024  # pixel-decoder FFN width (ADE checkpoint)
    decoder_layers: int = 10  # HF counting: the learnable-query prediction + 9 masked-attention layers
    dim_feedforward: int = 2048  # transformer-decoder FFN width (ADE checkpoint)
    num_attention_heads: int = 8  # pixel-decoder and transformer-decoder heads (ADE checkpoint)
    num_queries: int = 100  # N_Q, the ADE checkpoint's learnable queries
    dropout: float = 0.0  # ADE checkpoint; HF also uses it as decoder layer-drop, so keep it 0

    def stage_sizes(self) -> list[int]:
        """Side of the Swin feature map at each stage for ``image_size`` (patch 4, then ×1/2)."""
        return [self.image_size // (4 * 2**i) for i in range(len(self.depths))]


@dataclass
class AdapterConfig:
    """Residual bottleneck adapters ``x + up(act(down(x)))`` on the foundation's attention (SPEC §3)."""

    swin: bool = True  # (a) after every Swin window attention's output projection
    pixel_decoder: bool = True  # (b) after every pixel-decoder deformable attention's output_proj
    transformer_decoder: bool = True  # (c) after every masked (cross) attention of the decoder
    reduction: int = 4  # bottleneck width = d / reduction (SPEC: d/4)
    activation: str = "gelu"  # "gelu" or "relu"; the paper says only "MLP"


@dataclass
class AudioConfig:
    """Audio encoder over one 0.96 s log-mel example [1, 96, 64] per second (SPEC §3, "audio")."""

    encoder: str = "vggish"  # "vggish" (paper, frozen) or "cnn" (small CNN, from scratch or pre-trained)
    # VGGish .pt/.safetensors file, or for "cnn" a TinyAudioCNN .safetensors (`teso pretrain`'s
    # audio.safetensors); None = RANDOM weights (VGGish: tests only; cnn: trained from scratch).
    weights: str | None = None
    # VGGish stays frozen as in the paper; a "cnn" is frozen only when it has `weights` (a pre-trained
    # foundation, like VGGish); a "cnn" without weights always trains (frozen it would be random).
    freeze: bool = True
    dim: int = 128  # d_A: VGGish embedding width (no PCA); also the CNN's output width
    cnn_channels: list[int] = field(default_factory=lambda: [16, 32, 64])  # "cnn": conv widths per block


@dataclass
class TextConfig:
    """Cue embeddings [B, T, N_T, d_T] made by a text encoder outside the model (SPEC §2)."""

    dim: int = 1024  # d_T: ImageBind text tower width; 384 for all-MiniLM-L6-v2
    num_cues: int = 4  # N_T: cues per frame; fewer are zero-padded, more truncated
    # How an empty cue slot enters SeDAM's fusion: "mask" = removed from every attention (a frame
    # with no cue is then never prompted by its audio); "zero" = a zero row of F_T (paper §3.3, "pad
    # with a zero matrix") that queries the audio latents like a cue and faces the dynamic mask.
    padding: str = "zero"


@dataclass
class SeDAMConfig:
    """Semantic-driven audio modelling: latent audio features fused with the cues (SPEC §2–3)."""

    num_latents: int = 4  # N_L latent audio features per audio second
    num_layers: int = 4  # N cross-modal layers, text as query, latents as key/value
    num_heads: int = 8  # attention heads of the cross-modal layers (d must divide by it)
    ffn_dim: int = 1024  # FFN width of each cross-modal layer (4·d at d = 256)
    mask_layer: str = "first"  # whose scores give ξ: "first" (F_T vs F_AL as in Eq. 3) or "last" layer
    # F~_AL of Eq. 2: "attention" = the last layer's attention output (a mix of audio latents only, so
    # F_T + F~_AL puts text and audio on an equal footing); "residual" = the layers' residual stream,
    # which already carries F_T (measured to drown the audio: docs/synthavs.md).
    output: str = "attention"
    # How Eq. 4's hard 0/−∞ mask trains: "soft" = PMQS's attention logits get log σ(ξ/τ) during
    # training (ξ then receives a gradient, so which cues are kept is learnt) with a null key that
    # lets a frame drop every cue; eval uses the hard mask. "hard" = Eq. 4 in training too (ξ gets
    # no gradient: the mask is set by initialisation and drift, docs/synthavs.md).
    mask_train: str = "soft"
    mask_temperature: float = 1.0  # τ of the soft mask (ξ units); the hard mask is its τ → 0 limit
    # Which slots Eq. 4 may drop when empty slots are zero rows (text.padding="zero"): "all" = every
    # slot, zero rows included; "cues" = the real cues only, the zero rows (audio alone) always kept.
    mask_slots: str = "all"
    infonce_temperature: float = 0.1  # τ of the latent infoNCE (SPEC §3)


@dataclass
class PMQSConfig:
    """Prompting mask queries with semantics: queries attend to F_AT under the cue mask (SPEC §2)."""

    num_layers: int = 4  # N layers (SPEC §3)
    num_heads: int = 8  # attention heads (d must divide by it)
    ffn_dim: int = 1024  # FFN width (4·d at d = 256)
    # 0 = the paper: prompt the learnable queries before the decoder; k >= 1: after the k-th
    # masked-attention layer, once each query has attended to the pixels (issue 17's binding lever).
    after_layer: int = 0
    # True: the prompt tokens first attend to the frame's S/8 pixel features, so a cue carries what
    # its object looks like in this frame before it prompts (issue 17's grounding lever); False = the paper.
    ground_tokens: bool = False


@dataclass
class LossConfig:
    """Mask2Former set-prediction loss + λ·infoNCE (SPEC §3, "losses")."""

    class_weight: float = 2.0  # cross-entropy weight (paper / Mask2Former)
    mask_weight: float = 5.0  # point-sampled BCE weight (paper / Mask2Former)
    dice_weight: float = 5.0  # point-sampled Dice weight (paper / Mask2Former)
    no_object_weight: float = 0.1  # class weight of "no object" (Mask2Former)
    train_num_points: int = 12544  # points sampled per mask (Mask2Former: 112²)
    oversample_ratio: float = 3.0  # point sampling oversampling (Mask2Former)
    importance_sample_ratio: float = 0.75  # share of uncertain points (Mask2Former)
    deep_supervision: bool = True  # also supervise every intermediate decoder prediction (Mask2Former)
    infonce_weight: float = 1.0  # λ_infoNCE (SPEC §3)


@dataclass
class AblationConfig:
    """Switches for the rows of SPEC §8, all on the same code; everything on = full TeSO."""

    infonce: bool = True  # False = "(−) infoNCE": the latent infoNCE term is not added to the loss
    dynamic_mask: bool = True  # False = "(−) dynamic mask": ξ drops nothing (removed padding stays out)
    pmqs: bool = True  # False = "(−) PMQS": the prompt tokens are appended to the queries instead
    sedam: bool = True  # False = "(−) SeDAM": projected audio + cue tokens go straight to PMQS
    text: bool = True  # False = "(−) text": audio-only prompting (the audio-visual baseline)
    audio: bool = True  # False = "(−) audio": cue-only prompting; text=audio=False = visual only


@dataclass
class TeSOConfig:
    """The whole model. ``num_classes`` is N_C: 1 = binary sounding object, 71 = AVSS semantic."""

    name: str = "swin-base-ade"  # the variant the config was made from (informative only)
    num_classes: int = 1  # N_C: 1 for S4/MS3/AVSS-binary, 71 (incl. background id 0) for AVSS
    freeze_foundation: bool = True  # paper: Mask2Former frozen, adapters + new heads train
    # Benchmarks and tests only: build a frozen foundation (Mask2Former, VGGish) without its weights.
    # Otherwise refused: adapters trained on a random frozen network learn nothing transferable.
    allow_random_frozen: bool = False
    visual: VisualConfig = field(default_factory=VisualConfig)
    adapters: AdapterConfig = field(default_factory=AdapterConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)
    sedam: SeDAMConfig = field(default_factory=SeDAMConfig)
    pmqs: PMQSConfig = field(default_factory=PMQSConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready nested dict (lists, not tuples)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeSOConfig:
        """Build from ``to_dict()`` output; unknown or ill-typed keys raise TesoError naming the key.

        A config saved before ``sedam.output`` / ``sedam.mask_train`` existed was trained with the
        residual-stream output and the hard mask, one saved before ``text.padding`` with masked empty
        slots: those are what its missing keys mean, not today's defaults (which would rebuild another
        model than its weights were trained as)."""
        sedam = data.get("sedam") if isinstance(data, dict) else None
        if isinstance(sedam, dict) and "output" not in sedam:
            data = dict(data, sedam={"output": "residual", "mask_train": "hard", **sedam})
        text = data.get("text") if isinstance(data, dict) else None
        if isinstance(text, dict) and "padding" not in text:
            # Saved before text.padding existed: its empty slots were masked.
            data = dict(data, text={**text, "padding": "mask"})
        config = _from_dict(cls, data, "config")
        config.validate()
        return config

    def validate(self) -> None:
        """Raise TesoError on values the model cannot be built with."""
        v = self.visual
        if v.image_size <= 0 or v.image_size % 32:
            raise TesoError(
                f"config visual.image_size: expected a positive multiple of 32, got {v.image_size}"
            )
        if len(v.depths) != 4 or len(v.num_heads) != 4:
            raise TesoError("config visual.depths / visual.num_heads: expected 4 Swin stages each")
        for i, heads in enumerate(v.num_heads):
            if (v.embed_dim * 2**i) % heads:
                raise TesoError(
                    f"config visual.num_heads[{i}]={heads}: must divide the stage width {v.embed_dim * 2**i}"
                )
        if v.feature_size % 32 or v.mask_feature_size <= 0:
            raise TesoError(f"config visual.feature_size: expected a multiple of 32, got {v.feature_size}")
        if v.hidden_dim % v.num_attention_heads:
            raise TesoError("config visual.hidden_dim: must be divisible by visual.num_attention_heads")
        if v.decoder_layers < 1 or v.num_queries < 1:
            raise TesoError("config visual.decoder_layers / visual.num_queries: expected >= 1")
        if self.num_classes < 1:
            raise TesoError(f"config num_classes: expected >= 1, got {self.num_classes}")
        if self.adapters.reduction < 1 or self.adapters.activation not in ("gelu", "relu"):
            raise TesoError("config adapters: reduction >= 1 and activation 'gelu' or 'relu' expected")
        if self.audio.encoder not in ("vggish", "cnn"):
            raise TesoError(f"config audio.encoder: expected 'vggish' or 'cnn', got {self.audio.encoder!r}")
        if self.audio.encoder == "vggish" and self.audio.dim != 128:
            raise TesoError(f"config audio.dim: VGGish gives 128-d embeddings, got {self.audio.dim}")
        if self.text.dim < 1 or self.text.num_cues < 1:
            raise TesoError("config text.dim / text.num_cues: expected >= 1")
        if self.text.padding not in ("mask", "zero"):
            raise TesoError(f"config text.padding: expected 'mask' or 'zero', got {self.text.padding!r}")
        s = self.sedam
        if s.num_latents < 1 or s.num_layers < 1 or v.hidden_dim % s.num_heads:
            raise TesoError("config sedam: num_latents, num_layers >= 1 and hidden_dim % num_heads == 0")
        if s.mask_layer not in ("first", "last"):
            raise TesoError(f"config sedam.mask_layer: expected 'first' or 'last', got {s.mask_layer!r}")
        if s.output not in ("attention", "residual"):
            raise TesoError(f"config sedam.output: expected 'attention' or 'residual', got {s.output!r}")
        if s.mask_train not in ("soft", "hard"):
            raise TesoError(f"config sedam.mask_train: expected 'soft' or 'hard', got {s.mask_train!r}")
        if s.mask_slots not in ("all", "cues"):
            raise TesoError(f"config sedam.mask_slots: expected 'all' or 'cues', got {s.mask_slots!r}")
        if s.mask_temperature <= 0:
            raise TesoError("config sedam.mask_temperature: expected > 0")
        if s.infonce_temperature <= 0:
            raise TesoError("config sedam.infonce_temperature: expected > 0")
        if self.pmqs.num_layers < 1 or v.hidden_dim % self.pmqs.num_heads:
            raise TesoError("config pmqs: num_layers >= 1 and hidden_dim % num_heads == 0")
        # Mask2Former's decoder_layers counts the first prediction (from the learnable queries) as a
        # layer: it runs decoder_layers - 1 masked-attention layers.
        if not 0 <= self.pmqs.after_layer < max(1, v.decoder_layers - 1):
            raise TesoError(
                f"config pmqs.after_layer: expected 0 (the learnable queries) to {v.decoder_layers - 2} "
                f"(visual.decoder_layers - 2), got {self.pmqs.after_layer}"
            )
        if self.pmqs.after_layer and v.dropout > 0:
            # HF uses visual.dropout as the decoder's layer drop: layer k would be skipped, and the
            # prompt with it, in a random share of the training steps.
            raise TesoError("config pmqs.after_layer >= 1 needs visual.dropout = 0 (HF's decoder layer drop)")
        if self.pmqs.ground_tokens and not self.ablation.pmqs:
            raise TesoError("config pmqs.ground_tokens grounds PMQS's tokens; (−) PMQS appends them instead")
        if self.pmqs.after_layer and not self.ablation.pmqs:
            raise TesoError("config pmqs.after_layer >= 1 prompts with PMQS; (−) PMQS appends tokens instead")

    @property
    def prompting(self) -> bool:
        """Whether any audio or text prompt reaches the queries (False = visual-only ablation)."""
        return self.ablation.text or self.ablation.audio


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise TesoError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise TesoError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value, f"{where}.{key}")
        else:
            kwargs[key] = _check_value(value, hint, f"{where}.{key}")
    return cls(**kwargs)


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """Light type check of a JSON value against a field's annotation (int/float/str/bool/list/None)."""
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise TesoError(f"{where}: null is not allowed")
    if "list" in text:
        if not isinstance(value, (list, tuple)):
            raise TesoError(f"{where}: expected a list, got {type(value).__name__}")
        return list(value)
    if hint is bool or text == "bool":
        if not isinstance(value, bool):
            raise TesoError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int or text == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TesoError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float or text == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TesoError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if "str" in text and not isinstance(value, str):
        raise TesoError(f"{where}: expected a string, got {value!r}")
    return value
