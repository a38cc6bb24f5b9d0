"""Unit tests of the TeSO model parts: config, variants, adapters, SeDAM, PMQS, infoNCE, inputs, targets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from teso.errors import TesoError
from teso.model import (
    Adapter,
    AudioConfig,
    AudioEncoder,
    PMQSConfig,
    SeDAMConfig,
    TeSOConfig,
    build_targets,
    dynamic_keep,
    get_variant,
    latent_infonce,
    list_variants,
    pack_cues,
    prepare_text,
    preprocess_frames,
)
from teso.model.pmqs import PMQS
from teso.model.sedam import SeDAM


# ----- config and variants -------------------------------------------------------------------------
def test_config_round_trips_through_json_and_rejects_unknown_keys():
    config = get_variant("tiny", num_classes=71, text_dim=1024)
    config.ablation.pmqs = False
    data = json.loads(json.dumps(config.to_dict()))
    again = TeSOConfig.from_dict(data)
    assert again == config
    assert again.visual.depths == [1, 1, 2, 1] and again.text.dim == 1024 and not again.ablation.pmqs

    data["sedam"]["num_latent"] = 4  # typo of num_latents
    with pytest.raises(TesoError, match=r"config\.sedam.*num_latent"):
        TeSOConfig.from_dict(data)
    bad = config.to_dict()
    bad["visual"]["hidden_dim"] = "64"
    with pytest.raises(TesoError, match=r"config\.visual\.hidden_dim"):
        TeSOConfig.from_dict(bad)


def test_variants_registry_and_overrides():
    assert list_variants() == ["swin-base-ade", "tiny"]
    with pytest.raises(TesoError, match="unknown"):
        get_variant("huge")
    paper = get_variant("swin-base-ade")
    assert paper.visual.pretrained is None  # random unless the user names the weights
    assert (paper.visual.embed_dim, paper.visual.depths, paper.visual.num_heads) == (
        128,
        [2, 2, 18, 2],
        [4, 8, 16, 32],
    )
    assert (paper.visual.window_size, paper.visual.image_size, paper.visual.num_queries) == (12, 384, 100)
    assert (paper.text.dim, paper.text.num_cues, paper.audio.dim, paper.sedam.num_latents) == (
        1024,
        4,
        128,
        4,
    )
    assert paper.freeze_foundation and paper.audio.encoder == "vggish" and paper.audio.freeze
    # Every Swin stage of both variants tiles exactly into windows at the variant's own size.
    for name in list_variants():
        v = get_variant(name).visual
        assert all(side % v.window_size == 0 for side in v.stage_sizes()), name
    tiny = get_variant("tiny", image_size=64)
    assert tiny.visual.image_size == 64 and not tiny.freeze_foundation and tiny.text.dim == 384
    with pytest.raises(TesoError, match="image_size"):
        get_variant("tiny", image_size=100)
    with pytest.raises(TesoError, match="num_classes"):
        get_variant("tiny", num_classes=0)


# ----- adapters ------------------------------------------------------------------------------------
def test_adapter_starts_as_identity_and_learns_a_residual():
    torch.manual_seed(0)
    adapter = Adapter(32, reduction=4)
    assert adapter.down.out_features == 8
    x = torch.randn(3, 5, 32)
    assert torch.equal(adapter(x), x)
    torch.nn.init.normal_(adapter.up.weight)
    assert not torch.allclose(adapter(x), x)


# ----- SeDAM and the dynamic mask ------------------------------------------------------------------
def _hand_made_sedam(dynamic: bool = True, zero_padding: bool = False) -> SeDAM:
    """d = 4, one head, one layer, q/k projections = identity: ξ_i = F_T,i · F_AL,j / 2 averaged over j."""
    sedam = SeDAM(
        4,
        SeDAMConfig(num_latents=2, num_layers=1, num_heads=1, ffn_dim=8),
        dynamic_mask=dynamic,
        zero_padding=zero_padding,
    )
    layer = sedam.layers[0]
    with torch.no_grad():
        for lin in (layer.q_proj, layer.k_proj):
            lin.weight.copy_(torch.eye(4))
            lin.bias.zero_()
        sedam.latent_proj.weight.copy_(torch.cat([torch.eye(4), torch.eye(4)]))  # both latents = audio
        sedam.latent_proj.bias.zero_()
    return sedam


def test_dynamic_mask_on_hand_made_inputs():
    sedam = _hand_made_sedam()
    e1 = torch.tensor([1.0, 0.0, 0.0, 0.0])
    audio = torch.stack([e1, e1])  # two frames
    # frame 0: cue 0 agrees with the audio (ξ > 0), cue 1 opposes it (ξ < 0), cue 2 agrees but is
    # padding, cue 3 padding; frame 1: every real cue opposes the audio -> nothing kept.
    text = torch.stack([torch.stack([e1, -e1, e1, torch.zeros(4)]), torch.stack([-e1, -2 * e1, e1, e1])])
    valid = torch.tensor([[True, True, False, False], [True, True, False, False]])
    out = sedam(audio, text, valid)
    assert torch.allclose(out.xi[0, :3], torch.tensor([0.5, -0.5, 0.5]))
    assert out.cue_keep.tolist() == [[True, False, False, False], [False, False, False, False]]
    assert torch.equal(out.keep, out.cue_keep)
    assert out.tokens.shape == (2, 4, 4) and out.latents.shape == (2, 2, 4)
    # The rule itself: kept iff real and ξ > 0 (ξ = 0 is not kept).
    xi = torch.tensor([[0.3, -0.1, 0.0, 2.0]])
    assert dynamic_keep(xi, torch.tensor([[True, True, True, False]])).tolist() == [
        [True, False, False, False]
    ]
    # "(−) dynamic mask": only the padding is masked.
    no_dyn = _hand_made_sedam(dynamic=False)
    assert torch.equal(no_dyn(audio, text, valid).cue_keep, valid)


def test_zero_padding_slots_are_zero_rows_that_face_the_mask_and_never_count_as_cues():
    """``text.padding="zero"`` (paper §3.3, "pad with a zero matrix"): an empty slot is a zero F_T
    row whatever its embedding held, it queries the audio, and Eq. 4 decides on it like on a cue;
    REC#2 (``cue_keep``) still counts real cues only."""
    e1 = torch.tensor([1.0, 0.0, 0.0, 0.0])
    audio = torch.stack([e1])
    text = torch.stack([torch.stack([e1, -e1, 5 * e1, -e1])])  # slots 2, 3 are padding
    valid = torch.tensor([[True, True, False, False]])
    sedam = _hand_made_sedam(zero_padding=True)
    with torch.no_grad():
        for lin in (sedam.layers[0].q_proj, sedam.layers[0].k_proj):
            lin.bias.fill_(0.5)  # a zero row's query is then the bias: ξ = (0.5·1)·(1 + 0.5·4) / 2 > 0
    out = sedam(audio, text, valid)
    # Padding content is ignored: slots 2 and 3 give one and the same ξ and token.
    assert out.xi[0, 2] == out.xi[0, 3] and torch.equal(out.tokens[0, 2], out.tokens[0, 3])
    assert out.xi[0, 2] > 0 and out.keep.tolist() == [[True, False, True, True]]
    assert out.cue_keep.tolist() == [[True, False, False, False]]
    masked = _hand_made_sedam(zero_padding=False)
    masked.load_state_dict(sedam.state_dict())
    assert masked(audio, text, valid).keep.tolist() == [[True, False, False, False]]
    # Without the dynamic mask every slot takes part.
    no_dyn = _hand_made_sedam(dynamic=False, zero_padding=True)
    out = no_dyn(audio, text, valid)
    assert out.keep.all() and torch.equal(out.cue_keep, valid)


def test_mask_slots_cues_exempts_the_zero_rows_from_the_dynamic_mask():
    """``sedam.mask_slots="cues"``: Eq. 4 judges the real cues only; a zero row (audio alone) is kept
    even where its ξ is negative, and the soft mask leaves its logit untouched (bias 0)."""
    e1 = torch.tensor([1.0, 0.0, 0.0, 0.0])
    audio = torch.stack([e1])
    text = torch.stack([torch.stack([e1, -e1, e1, e1])])
    valid = torch.tensor([[True, True, False, False]])
    sedam = _hand_made_sedam(zero_padding=True)
    sedam.mask_slots = "cues"
    with torch.no_grad():
        sedam.layers[0].q_proj.bias.fill_(-0.5)  # a zero row's ξ is then negative
    sedam.eval()
    out = sedam(audio, text, valid)
    assert (out.xi[0, 2:] < 0).all()
    assert out.keep.tolist() == [[True, False, True, True]]
    assert out.cue_keep.tolist() == [[True, False, False, False]]
    sedam.soft_mask = True
    sedam.train()
    bias = sedam(audio, text, valid).key_bias
    assert bias[0, 2:].tolist() == [0.0, 0.0] and bias[0, 0] < 0 and bias[0, 1] < bias[0, 0]
    sedam.mask_slots = "all"
    assert sedam(audio, text, valid).key_bias[0, 2] < 0


def test_config_without_text_padding_means_masked_slots():
    """A checkpoint config saved before ``text.padding`` existed was trained with masked empty slots."""
    config = get_variant("tiny")
    assert config.text.padding == "zero"
    data = config.to_dict()
    del data["text"]["padding"]
    assert TeSOConfig.from_dict(data).text.padding == "mask"
    data["text"]["padding"] = "drop"
    with pytest.raises(TesoError, match=r"text\.padding.*'mask' or 'zero'"):
        TeSOConfig.from_dict(data)


def test_sedam_single_modality_paths():
    torch.manual_seed(0)
    sedam = SeDAM(8, SeDAMConfig(num_latents=3, num_layers=2, num_heads=2, ffn_dim=16))
    audio, text = torch.randn(2, 8), torch.randn(2, 4, 8)
    valid = torch.tensor([[True, True, False, False], [True, False, False, False]])
    audio_only = sedam(audio, None, valid)
    assert audio_only.tokens.shape == (2, 3, 8) and audio_only.keep.all() and not audio_only.cue_keep.any()
    text_only = sedam(None, text, valid)
    assert text_only.latents is None and torch.equal(text_only.keep, valid)


def test_infonce_lower_for_orthogonal_than_identical_latents():
    orthogonal = torch.eye(4)[None].repeat(3, 1, 1) * 2.5  # cosine is scale-free
    identical = torch.ones(3, 4, 4)
    low, high = latent_infonce(orthogonal, 0.1), latent_infonce(identical, 0.1)
    assert math.isclose(high.item(), math.log(4), rel_tol=1e-5)
    expected_low = -math.log(math.exp(10) / (math.exp(10) + 3))
    assert math.isclose(low.item(), expected_low, rel_tol=1e-3)
    assert low < high


# ----- PMQS ----------------------------------------------------------------------------------------
def _awake_pmqs(dim: int = 8) -> PMQS:
    torch.manual_seed(1)
    pmqs = PMQS(dim, PMQSConfig(num_layers=2, num_heads=2, ffn_dim=16))
    fresh_q = torch.randn(2, 5, dim)
    assert torch.equal(pmqs(fresh_q, torch.randn(2, 3, dim), torch.ones(2, 3, dtype=torch.bool)), fresh_q)
    for layer in pmqs.layers:  # leave the zero init so that prompts have an effect
        torch.nn.init.normal_(layer.attn.out_proj.weight, std=0.5)
        torch.nn.init.normal_(layer.ffn[-1].weight, std=0.5)
    return pmqs


def test_pmqs_all_masked_frame_keeps_queries_and_masked_tokens_have_no_effect():
    pmqs = _awake_pmqs()
    queries, tokens = torch.randn(2, 5, 8), torch.randn(2, 3, 8)
    keep = torch.tensor([[True, False, True], [False, False, False]])
    out = pmqs(queries, tokens, keep)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], queries[1])  # every cue masked: queries unchanged
    assert not torch.allclose(out[0], queries[0])
    tokens2 = tokens.clone()
    tokens2[0, 1] += 100.0  # a masked token
    tokens2[1] += 100.0
    assert torch.allclose(pmqs(queries, tokens2, keep), out, atol=1e-6)
    tokens3 = tokens.clone()
    tokens3[0, 0] += torch.linspace(-1, 1, 8)  # a kept token (not a constant: LayerNorm removes those)
    assert not torch.allclose(pmqs(queries, tokens3, keep)[0], out[0])


# ----- inputs --------------------------------------------------------------------------------------
def test_prepare_text_pads_truncates_and_validates():
    text = torch.randn(1, 3, 6, 5)
    count = torch.tensor([[0, 2, 6]])
    padded, valid = prepare_text(text, count, 4)
    assert padded.shape == (1, 3, 4, 5)
    assert valid.tolist() == [[[False] * 4, [True, True, False, False], [True] * 4]]
    assert torch.equal(padded[0, 1, :2], text[0, 1, :2]) and padded[0, 1, 2:].abs().sum() == 0
    assert padded[0, 0].abs().sum() == 0
    assert torch.equal(padded[0, 2], text[0, 2, :4])  # truncation keeps the first N_T cues
    short, short_valid = prepare_text(torch.randn(1, 1, 2, 5), torch.tensor([[2]]), 4)
    assert short.shape == (1, 1, 4, 5) and short_valid.tolist() == [[[True, True, False, False]]]
    with pytest.raises(TesoError, match="text_count"):
        prepare_text(text, torch.tensor([[0, 2, 7]]), 4)
    with pytest.raises(TesoError, match="text_count"):
        prepare_text(text, torch.tensor([0, 2, 3]), 4)
    with pytest.raises(TesoError, match="text:"):
        prepare_text(torch.randn(3, 6, 5), count, 4)


def test_pack_cues():
    cues = [[torch.ones(1, 3), torch.zeros(0, 3)], [torch.full((6, 3), 2.0), torch.ones(2, 3)]]
    text, count = pack_cues(cues, num_cues=4, dim=3)
    assert text.shape == (2, 2, 4, 3) and count.tolist() == [[1, 0], [4, 2]]
    assert text[1, 0].sum() == 2.0 * 12 and text[0, 1].abs().sum() == 0
    with pytest.raises(TesoError, match=r"cues\[1\]\[0\]"):
        pack_cues([[torch.ones(1, 3)], [torch.ones(1, 4)]], 4, 3)


def test_preprocess_frames_resizes_and_normalises_like_mask2former():
    frames = np.zeros((2, 3, 40, 60, 3), dtype=np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 255, 128, 0
    x = preprocess_frames(frames, 64)
    assert x.shape == (2, 3, 3, 64, 64) and x.dtype == torch.float32
    expected = [(1.0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0.0 - 0.406) / 0.225]
    for c in range(3):
        assert torch.allclose(x[:, :, c], torch.full_like(x[:, :, c], expected[c]), atol=1e-5)
    with pytest.raises(TesoError, match="uint8"):
        preprocess_frames(frames.astype(np.float32), 64)
    with pytest.raises(TesoError, match="shape"):
        preprocess_frames(np.zeros((4, 4, 4), dtype=np.uint8), 64)


# ----- targets and audio ---------------------------------------------------------------------------
def test_build_targets_binary_and_semantic():
    binary = torch.zeros(2, 4, 4, dtype=torch.long)
    binary[0, :2, :2] = 255
    masks, classes = build_targets(binary, num_classes=1)
    assert masks[0].shape == (1, 4, 4) and masks[0].sum() == 4 and classes[0].tolist() == [0]
    assert masks[1].shape == (0, 4, 4) and classes[1].numel() == 0
    semantic = torch.zeros(1, 4, 4, dtype=torch.long)
    semantic[0, 0] = 5
    semantic[0, 1] = 70
    semantic[0, 3, 3] = 255
    masks, classes = build_targets(semantic, num_classes=71)
    assert classes[0].tolist() == [5, 70] and masks[0].sum(dim=(1, 2)).tolist() == [4.0, 4.0]
    with pytest.raises(TesoError, match="class ids"):
        build_targets(torch.full((1, 2, 2), 80), num_classes=71)


def test_audio_encoders():
    torch.manual_seed(0)
    examples = torch.randn(3, 1, 96, 64)
    cnn = AudioEncoder(AudioConfig(encoder="cnn", dim=32, cnn_channels=[4, 8]))
    out = cnn(examples)
    assert out.shape == (3, 32) and out.requires_grad and not cnn.frozen
    vggish = AudioEncoder(AudioConfig(encoder="vggish"))
    emb = vggish(examples[:1])
    assert emb.shape == (1, 128) and not emb.requires_grad
    assert not any(p.requires_grad for p in vggish.parameters())
    with pytest.raises(TesoError, match="96, 64"):
        cnn(torch.randn(3, 96, 64))
    with pytest.raises(TesoError, match="not found"):
        AudioEncoder(AudioConfig(encoder="vggish", weights="/nonexistent/vggish.pth"))
