"""The assembled TeSO model (tiny variant, CPU): shapes, gradients, freezing, equivalence with plain
Mask2Former, adapters, ablation switches, the caching predictor and the paper variant's shapes."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import Mask2FormerForUniversalSegmentation

from teso.errors import TesoError
from teso.model import (
    TeSOPredictor,
    TeSOTargets,
    build_teso,
    get_variant,
    mask2former_config,
)

SIZE = 64  # smaller than the tiny variant's 128 px: every test here is about wiring, not accuracy


def _config(**ablation):
    config = get_variant("tiny", image_size=SIZE)
    for key, value in ablation.items():
        setattr(config.ablation, key, value)
    return config


def _inputs(b: int = 1, t: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(b, t, 3, SIZE, SIZE, generator=g)
    audio = torch.randn(b, t, 1, 96, 64, generator=g)
    text = torch.randn(b, t, 4, 384, generator=g)
    count = torch.tensor([[3, 1, 0, 4, 2][:t]] * b)
    return frames, audio, text, count


def _wake(model, std: float = 0.2) -> None:
    """Replace the zero inits (adapter up-projections, PMQS output layers) so every part has an effect."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for name, param in model.named_parameters():
            zero_init = ".up." in name or (
                name.startswith("pmqs.") and ("out_proj" in name or "ffn.2" in name)
            )
            if zero_init:
                param.copy_(torch.randn(param.shape, generator=g) * std)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_teso(_config())
    _wake(model)
    return model.eval()


def test_forward_backward_two_clips_of_five_frames():
    torch.manual_seed(0)
    model = build_teso(_config())
    _wake(model)  # with the zero-init PMQS output, the cues could not yet move the loss
    model.train()
    frames, audio, text, count = _inputs(b=2, t=5)
    masks = torch.zeros(2, 5, 32, 48, dtype=torch.long)
    masks[:, :, 4:20, 8:30] = 1
    masks[1, 3] = 0  # an annotated frame without sounding object
    out = model(frames, audio, text, count, TeSOTargets(masks))
    assert out.class_logits.shape == (2, 5, 12, 2)
    assert out.mask_logits.shape == (2, 5, 12, SIZE // 4, SIZE // 4)
    assert out.probs.shape == (2, 5, 1, SIZE // 4, SIZE // 4)
    assert out.probs_at((32, 48)).shape == (2, 5, 1, 32, 48)
    # a sum over queries of class prob × mask prob: >= 0, bounded by N_Q, not by 1
    assert ((out.probs >= 0) & (out.probs <= 12)).all()
    assert out.cue_keep.shape == (2, 5, 4) and out.cue_keep.dtype == torch.bool
    assert out.xi.shape == (2, 5, 4) and out.infonce.dim() == 0 and out.infonce > 0
    assert len(out.aux) == 2 and out.aux[0][1].shape == out.mask_logits.shape  # HF decoder_layers = 3
    # padding cues are never kept: frame counts 3, 1, 0, 4, 2
    for i, c in enumerate([3, 1, 0, 4, 2]):
        assert not out.cue_keep[:, i, c:].any()
    losses = out.losses
    assert set(losses) == {
        "loss_mask",
        "loss_dice",
        "loss_class",
        "loss_aux",
        "loss_seg",
        "loss_infonce",
        "loss",
    }
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_aux"] > 0 and losses["loss_mask"] > 0
    expected = losses["loss_mask"] + losses["loss_dice"] + losses["loss_class"] + losses["loss_aux"]
    assert torch.allclose(losses["loss_seg"], expected)
    assert torch.allclose(losses["loss"], losses["loss_seg"] + losses["loss_infonce"])
    losses["loss"].backward()
    for prefix in (
        "pmqs.",
        "sedam.",
        "audio_encoder.",
        "text_proj.",
        "foundation.m2f.model.pixel_level_module",
    ):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix) and p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), prefix


def test_unannotated_frames_do_not_count(tiny):
    frames, audio, text, count = _inputs(t=2)
    masks = torch.zeros(1, 2, 16, 16, dtype=torch.long)
    masks[0, 0, 2:9, 2:9] = 1
    annotated = torch.tensor([[True, False]])
    other = masks.clone()
    other[0, 1] = 1  # ground truth of the unannotated frame changes
    with torch.no_grad():
        visual = tiny.encode_visual(frames)
        torch.manual_seed(5)
        a = tiny.decode(visual, audio, text, count, TeSOTargets(masks, annotated)).losses
        torch.manual_seed(5)
        b = tiny.decode(visual, audio, text, count, TeSOTargets(other, annotated)).losses
        torch.manual_seed(5)
        c = tiny.decode(visual, audio, text, count, TeSOTargets(other)).losses
        none = tiny.decode(
            visual, audio, text, count, TeSOTargets(masks, torch.zeros(1, 2, dtype=torch.bool))
        )
    assert torch.equal(a["loss_seg"], b["loss_seg"])
    assert not torch.equal(a["loss_seg"], c["loss_seg"])
    assert none.losses["loss_seg"] == 0


def test_frozen_foundation_trains_exactly_the_new_parts_by_name():
    config = _config()
    config.freeze_foundation = True
    config.audio.encoder = "vggish"  # frozen VGGish must not train either
    config.allow_random_frozen = True  # wiring test: random frozen weights train the same parameters
    torch.manual_seed(0)
    model = build_teso(config)
    _wake(model)
    model.train()
    frames, audio, text, count = _inputs(t=2)
    masks = torch.zeros(1, 2, 16, 16, dtype=torch.long)
    masks[..., 3:10, 3:10] = 1
    model(frames, audio, text, count, TeSOTargets(masks)).losses["loss"].backward()
    allowed = (
        "foundation.adapters.",
        "foundation.m2f.class_predictor.",
        "audio_proj.",
        "text_proj.",
        "sedam.",
        "pmqs.",
    )
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable
    assert all(n.startswith(allowed) for n in with_grad), sorted(
        n for n in with_grad if not n.startswith(allowed)
    )
    for prefix in allowed:
        assert any(n.startswith(prefix) for n in with_grad), prefix
    assert not any(n.startswith(("audio_encoder.", "foundation.m2f.model.")) for n in with_grad)
    assert model.foundation.m2f.training is False  # frozen foundation runs as at inference
    # The switch unfreezes everything (but the frozen VGGish).
    config.freeze_foundation = False
    free = build_teso(config)
    assert all(p.requires_grad for n, p in free.named_parameters() if not n.startswith("audio_encoder."))


def test_visual_only_with_fresh_adapters_equals_plain_mask2former():
    torch.manual_seed(0)
    model = build_teso(_config(text=False, audio=False)).eval()
    assert (
        model.sedam is None and model.pmqs is None and model.audio_encoder is None and model.text_proj is None
    )
    plain = Mask2FormerForUniversalSegmentation(mask2former_config(model.config.visual, 1)).eval()
    result = plain.load_state_dict(model.foundation.m2f.state_dict(), strict=False)
    assert result.missing_keys == ["criterion.empty_weight"] and not result.unexpected_keys
    frames = _inputs(t=2)[0]
    with torch.no_grad():
        ours = model(frames, None, None, None)
        ref = plain(pixel_values=frames.flatten(0, 1))
    assert torch.equal(ours.mask_logits.flatten(0, 1), ref.masks_queries_logits)
    assert torch.equal(ours.class_logits.flatten(0, 1), ref.class_queries_logits)
    # Full TeSO, freshly built: adapters and PMQS start at zero, so the pre-trained behaviour is kept.
    full = build_teso(_config()).eval()
    full.foundation.m2f.load_state_dict(model.foundation.m2f.state_dict())
    frames, audio, text, count = _inputs(t=2)
    with torch.no_grad():
        assert torch.allclose(
            full(frames, audio, text, count).mask_logits.flatten(0, 1), ref.masks_queries_logits
        )


@pytest.mark.parametrize("site", ["swin", "pixel_decoder", "transformer_decoder"])
def test_each_adapter_site_changes_the_output_once_up_is_nonzero(site):
    torch.manual_seed(0)
    model = build_teso(_config(text=False, audio=False)).eval()
    names = [k for k in model.foundation.adapters if k.startswith(site + "_")]
    expected = {"swin": 5, "pixel_decoder": 2, "transformer_decoder": 2}[
        site
    ]  # depths 1+1+2+1, 2 enc, 3-1 dec
    assert len(names) == expected
    frames = _inputs(t=1)[0]
    with torch.no_grad():
        before = model(frames, None, None, None).mask_logits
        for name in names:
            torch.nn.init.normal_(model.foundation.adapters[name].up.weight, std=0.5)
        after = model(frames, None, None, None).mask_logits
    assert not torch.allclose(before, after)
    # switching the site off builds no adapters there
    config = _config(text=False, audio=False)
    setattr(config.adapters, site, False)
    assert not any(k.startswith(site + "_") for k in build_teso(config).foundation.adapters)


def _run(model, audio, text, count, frames):
    with torch.no_grad():
        return model(frames, audio, text, count)


@pytest.mark.parametrize(
    "switch", ["full", "infonce", "dynamic_mask", "pmqs", "sedam", "text", "audio", "text_and_audio"]
)
def test_ablation_switch(switch):
    ablation = {
        "full": {},
        "infonce": {"infonce": False},
        "dynamic_mask": {"dynamic_mask": False},
        "pmqs": {"pmqs": False},
        "sedam": {"sedam": False},
        "text": {"text": False},
        "audio": {"audio": False},
        "text_and_audio": {"text": False, "audio": False},
    }[switch]
    torch.manual_seed(0)
    model = build_teso(_config(**ablation))
    _wake(model)
    model.eval()
    frames, audio, text, count = _inputs(t=2)
    valid = torch.arange(4) < count[..., None]
    a_in = None if switch in ("audio", "text_and_audio") else audio
    t_in = None if switch in ("text", "text_and_audio") else text
    c_in = None if t_in is None else count
    out = _run(model, a_in, t_in, c_in, frames)
    assert out.mask_logits.shape == (1, 2, 12, SIZE // 4, SIZE // 4) and torch.isfinite(out.mask_logits).all()
    other_audio = torch.randn_like(audio) * 3
    other_text = torch.randn_like(text)
    listens = not torch.allclose(_run(model, other_audio, t_in, c_in, frames).mask_logits, out.mask_logits)
    reads = not torch.allclose(_run(model, a_in, other_text, c_in, frames).mask_logits, out.mask_logits)
    if switch == "infonce":
        masks = torch.zeros(1, 2, 16, 16, dtype=torch.long)
        masks[..., 2:8, 2:8] = 1
        with torch.no_grad():
            losses = model(frames, audio, text, count, TeSOTargets(masks)).losses
        assert losses["loss_infonce"] > 0 and torch.equal(losses["loss"], losses["loss_seg"])
    if switch == "dynamic_mask":
        assert torch.equal(out.cue_keep, valid)  # only padding masked, whatever ξ says
    if switch == "full":
        assert torch.equal(out.cue_keep, valid & (out.xi > 0))
        assert listens and reads
    if switch == "pmqs":
        assert model.pmqs is None and model.sedam is not None
        assert listens and reads  # the appended tokens steer the queries through the decoder
    if switch == "sedam":
        assert model.sedam is None and model.pmqs is not None and out.infonce == 0
        assert torch.equal(out.cue_keep, valid) and listens and reads
    if switch == "text":
        assert model.text_proj is None and not out.cue_keep.any() and out.infonce > 0
        assert listens and not reads
    if switch == "audio":
        assert model.audio_encoder is None and model.audio_proj is None and out.infonce == 0
        assert torch.equal(out.cue_keep, valid) and reads and not listens
    if switch == "text_and_audio":
        assert not listens and not reads and model.sedam is None and model.pmqs is None
    if switch not in ("audio", "text_and_audio"):
        with pytest.raises(TesoError, match="audio"):
            model(frames, None, t_in, c_in)


def test_bad_inputs_raise_clear_errors(tiny):
    frames, audio, text, count = _inputs(t=2)
    with pytest.raises(TesoError, match="frames"):
        tiny(frames[0], audio, text, count)
    with pytest.raises(TesoError, match="audio"):
        tiny(frames, audio[:, :1], text, count)
    with pytest.raises(TesoError, match="d_T=384"):
        tiny(frames, audio, text[..., :100], count)
    with pytest.raises(TesoError, match="text_count"):
        tiny(frames, audio, text, count + 5)


def test_predictor_reuses_the_visual_encoding(tiny):
    frames, audio, text, count = _inputs(t=3)
    calls = []
    handle = tiny.foundation.m2f.model.pixel_level_module.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            full = tiny(frames, audio, text, count)
            muted = tiny(frames, torch.zeros_like(audio), text, count)
        calls.clear()
        predictor = TeSOPredictor(tiny)
        predictor.set_clip(frames[0])
        probs = predictor.predict(audio[0], text[0], count[0])
        probs_muted = predictor.predict(torch.zeros_like(audio[0]), text[0], count[0])
        probs_big = predictor.predict(audio[0], text[0], count[0], size=(40, 30))
    finally:
        handle.remove()
    assert len(calls) == 1  # one visual encoding for three predictions
    assert torch.allclose(probs, full.probs[0], atol=1e-6)
    assert torch.allclose(probs_muted, muted.probs[0], atol=1e-6)
    assert not torch.allclose(probs, probs_muted)
    assert probs_big.shape == (3, 1, 40, 30)
    with pytest.raises(TesoError, match="3 frames"):
        predictor.predict(audio[0, :2], text[0, :2], count[0, :2])
    uint8 = torch.randint(0, 256, (2, 50, 70, 3), dtype=torch.uint8)
    predictor.set_clip(uint8)
    assert predictor.num_frames == 2


def test_paper_variant_has_the_papers_shapes():
    torch.manual_seed(0)
    config = get_variant("swin-base-ade")
    config.allow_random_frozen = True
    model = build_teso(config).eval()  # random weights: no download
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    # Swin parameter paths differ between transformers 5.0 (``encoder.encoder.layers``,
    # ``attention.self.``) and later 5.x (``encoder.swin.encoder.layers``), so match by pattern.
    backbone = {
        n[len("foundation.m2f.model.pixel_level_module.encoder.") :]: s
        for n, s in shapes.items()
        if n.startswith("foundation.m2f.model.pixel_level_module.encoder.")
    }
    (patch,) = [s for n, s in backbone.items() if n.endswith("patch_embeddings.projection.weight")]
    assert patch == (128, 3, 4, 4)
    for stage, (depth, heads) in enumerate(zip([2, 2, 18, 2], [4, 8, 16, 32])):
        found = [re.search(rf"encoder\.layers\.{stage}\.blocks\.(\d+)\.", n) for n in backbone]
        assert len({m.group(1) for m in found if m}) == depth
        (table,) = [
            s
            for n, s in backbone.items()
            if re.search(rf"encoder\.layers\.{stage}\.blocks\.0\.", n)
            and n.endswith("relative_position_bias_table")
        ]
        assert table == ((2 * 12 - 1) ** 2, heads)
    tm = "foundation.m2f.model.transformer_module."
    assert shapes[tm + "queries_features.weight"] == (100, 256)
    assert shapes["foundation.m2f.class_predictor.weight"] == (2, 256)
    assert len(model.foundation.m2f.model.transformer_module.decoder.layers) == 9
    assert len(model.foundation.m2f.model.pixel_level_module.decoder.encoder.layers) == 6
    assert len([k for k in model.foundation.adapters if k.startswith("swin_")]) == 24
    assert shapes["foundation.adapters.swin_23.down.weight"] == (256, 1024)
    assert shapes["text_proj.net.0.weight"] == (256, 1024) and shapes["audio_proj.net.0.weight"] == (256, 128)
    assert shapes["sedam.latent_proj.weight"] == (4 * 256, 256) and len(model.sedam.layers) == 4
    assert len(model.pmqs.layers) == 4 and model.pmqs.layers[0].attn.num_heads == 8
    assert shapes["audio_encoder.net.embeddings.4.weight"] == (128, 4096)  # VGGish
    frames = torch.randn(1, 1, 3, 384, 384)
    with torch.no_grad():
        out = model(frames, torch.randn(1, 1, 1, 96, 64), torch.randn(1, 1, 4, 1024), torch.tensor([[2]]))
    assert out.mask_logits.shape == (1, 1, 100, 96, 96) and out.class_logits.shape == (1, 1, 100, 2)


def test_pretrained_foundation_from_a_local_directory(tmp_path):
    config = _config()
    torch.manual_seed(3)
    source = Mask2FormerForUniversalSegmentation(mask2former_config(config.visual, num_classes=7))
    source.save_pretrained(tmp_path / "m2f")
    config.visual.pretrained = str(tmp_path / "m2f")
    config.num_classes = 1
    model = build_teso(config)
    ours = model.foundation.m2f.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith(("class_predictor", "criterion")):
            assert torch.equal(ours[key], value), key
    assert model.foundation.class_head.weight.shape == (2, 64)  # new head: 1 class + no object
    # Without load_pretrained (what load_checkpoint does) the weights are not read.
    key = "model.transformer_module.queries_features.weight"
    assert not torch.equal(
        build_teso(config, load_pretrained=False).foundation.m2f.state_dict()[key], ours[key]
    )

    config.visual.pretrained = str(tmp_path / "missing")
    with pytest.raises(TesoError, match="missing: no such directory"):
        build_teso(config)
    config.visual.pretrained = str(tmp_path / "m2f")
    config.visual.num_queries = 20
    with pytest.raises(TesoError, match="num_queries"):
        build_teso(config)


def test_soft_dynamic_mask_trains_xi_and_eval_uses_the_hard_mask():
    """Training with ``sedam.mask_train="soft"``: ξ's inputs (the first SeDAM layer's q/k) receive a
    gradient through the PMQS attention logits; eval applies Eq. 4 exactly (keep iff ξ > 0)."""
    torch.manual_seed(0)
    model = build_teso(_config())
    _wake(model)
    assert model.pmqs.null_key and model.sedam.soft_mask
    frames, audio, text, count = _inputs(t=2)
    masks = torch.zeros(1, 2, 16, 16, dtype=torch.long)
    masks[..., 3:10, 3:10] = 1
    model.train()
    model(frames, audio, text, count, TeSOTargets(masks)).losses["loss_seg"].backward()
    # The first layer's k projection feeds only ξ and the attention of that layer; with the soft
    # mask off (hard), ξ is a step function, so only the attention path would reach it. Compare.
    soft_grad = model.sedam.layers[0].k_proj.weight.grad.clone()
    hard = build_teso(_config())
    hard.load_state_dict(model.state_dict())
    hard.sedam.soft_mask = False
    hard.train()
    hard(frames, audio, text, count, TeSOTargets(masks)).losses["loss_seg"].backward()
    assert not torch.allclose(soft_grad, hard.sedam.layers[0].k_proj.weight.grad)
    model.eval()
    with torch.no_grad():
        out = model(frames, audio, text, count)
    valid = torch.arange(4)[None, None] < count[..., None]
    assert torch.equal(out.cue_keep, valid & (out.xi > 0))


def test_null_key_lets_a_frame_drop_every_cue():
    """With the null key, cues whose soft mask is ~0 (log σ → −∞) leave the queries where a frame
    without cues leaves them; without it the softmax would renormalise over the distrusted cues."""
    from teso.model.config import PMQSConfig
    from teso.model.pmqs import PMQS

    torch.manual_seed(0)
    pmqs = PMQS(16, PMQSConfig(num_layers=2, num_heads=2, ffn_dim=32), null_key=True)
    with torch.no_grad():
        for layer in pmqs.layers:  # wake the zero-initialised outputs
            layer.attn.out_proj.weight.normal_(0, 0.5)
            layer.ffn[-1].weight.normal_(0, 0.5)
    queries, tokens = torch.randn(1, 5, 16), torch.randn(1, 3, 16)
    keep = torch.ones(1, 3, dtype=torch.bool)
    trusted = pmqs(queries, tokens, keep, key_bias=torch.zeros(1, 3))
    distrusted = pmqs(queries, tokens, keep, key_bias=torch.full((1, 3), -60.0))
    nothing = pmqs(queries, tokens * 0 + 7.0, keep, key_bias=torch.full((1, 3), -60.0))
    # exp(-60) ≈ 1e-26 of weight per cue: the tokens' values cannot show in float32.
    assert torch.equal(distrusted, nothing)
    assert not torch.allclose(trusted, distrusted)
    # The hard mask at eval: every cue masked -> queries unchanged exactly (Eq. 4's rule).
    assert torch.equal(pmqs(queries, tokens, torch.zeros(1, 3, dtype=torch.bool)), queries)


@pytest.mark.parametrize("padding", ["zero", "mask"])
def test_a_frame_without_cues_hears_the_audio_only_with_zero_padding(padding):
    """``text.padding="zero"``: a frame with no cue still has N_T zero slots that gather the audio, so
    its masks change with the audio; ``"mask"``: such a frame is never prompted, so the audio cannot
    reach it (the reason the masked reading stopped TeSO from listening on SynthAVS, docs/synthavs.md).
    The padding's embedding content is ignored either way."""
    config = _config()
    config.text.padding = padding
    config.ablation.dynamic_mask = False  # the zero slots are then surely kept: the test is the wiring
    torch.manual_seed(0)
    model = build_teso(config)
    _wake(model)
    model.eval()
    frames, audio, text, _ = _inputs(t=2)
    count = torch.tensor([[0, 2]])
    muted = audio.clone()
    muted[:, 0] = 0.0  # frame 0 only
    other_pad = text.clone()
    other_pad[:, 0] = 3.0  # frame 0 has no cue: all four slots are padding
    with torch.no_grad():
        ref = model(frames, audio, text, count)
        heard = model(frames, muted, text, count).class_logits[0]
        pad = model(frames, audio, other_pad, count).class_logits[0]
    assert torch.equal(pad, ref.class_logits[0])
    assert ref.cue_keep[0, 0].tolist() == [False] * 4 and ref.cue_keep[0, 1].tolist() == [
        True,
        True,
        False,
        False,
    ]
    assert torch.equal(heard[1], ref.class_logits[0, 1])  # frames are prompted independently
    change = (heard[0] - ref.class_logits[0, 0]).abs().max().item()
    slots = ref.prompt_keep[0].tolist()
    assert slots[1] == ([True] * 4 if padding == "zero" else [True, True, False, False])
    if padding == "mask":  # nothing prompts frame 0: it decodes as the visual-only foundation
        assert slots[0] == [False] * 4
        with torch.no_grad():
            plain = model.foundation.decode(model.encode_visual(frames))[0][-1]
        assert torch.equal(ref.class_logits[0, 0], plain[0])
    else:
        assert slots[0] == [True] * 4
    if padding == "zero":
        # Measured 8e-3 with this seed; float32 rounding of the same arithmetic is ~1e-6.
        assert change > 1e-3
    else:
        assert change == 0.0


@pytest.mark.parametrize("output", ["attention", "residual"])
def test_sedam_output_reading(output):
    """``attention``: F_AT = FC(LN(F_T + F~_AL)) with F~_AL the last attention output, a mix of the
    audio latents only — so with one latent (softmax weight 1) F_AT does not depend on the cue's
    route through the layers beyond F_T itself; ``residual`` carries F_T through every layer."""
    from teso.model.config import SeDAMConfig
    from teso.model.sedam import SeDAM

    torch.manual_seed(0)
    sedam = SeDAM(16, SeDAMConfig(num_latents=1, num_layers=2, num_heads=2, ffn_dim=32, output=output))
    sedam.eval()
    audio = torch.randn(2, 16)
    text = torch.randn(2, 3, 16)
    valid = torch.ones(2, 3, dtype=torch.bool)
    out = sedam(audio, text, valid)
    last = sedam.layers[-1]
    lat = sedam.latents(audio)
    # One latent: attention weight 1, so the last attention output is out_proj(v_proj(latent)).
    audio_only = last.out_proj(last.v_proj(lat)).expand(2, 3, 16)
    expected = sedam.out_fc(sedam.out_norm(text + audio_only))
    if output == "attention":
        assert torch.allclose(out.tokens, expected, atol=1e-6)  # float32, a few ops: rounding only
    else:
        assert not torch.allclose(out.tokens, expected, atol=1e-3)


def test_a_config_saved_before_the_sedam_switches_keeps_its_architecture():
    from teso.model.config import TeSOConfig

    old = _config().to_dict()
    del old["sedam"]["output"], old["sedam"]["mask_train"], old["sedam"]["mask_temperature"]
    again = TeSOConfig.from_dict(old)
    assert (again.sedam.output, again.sedam.mask_train) == ("residual", "hard")
    # The residual reading builds the last layer's FFN, which old checkpoints hold weights for.
    assert any(".layers.3.ffn." in n for n, _ in build_teso(again).named_parameters())
    assert TeSOConfig.from_dict(_config().to_dict()).sedam.output == "attention"


def test_a_frozen_part_with_random_weights_is_refused():
    with pytest.raises(TesoError, match=r"model\.visual\.pretrained.*model\.allow_random_frozen"):
        build_teso(get_variant("swin-base-ade"))  # refused before anything is built
    paper = get_variant("swin-base-ade")
    paper.visual.pretrained = "never/read"  # the check runs before any weight is looked for
    with pytest.raises(TesoError, match=r"model\.audio\.weights.*VGGish"):
        build_teso(paper)
    frozen_tiny = _config()
    frozen_tiny.freeze_foundation = True
    with pytest.raises(TesoError, match=r"model\.visual\.pretrained"):
        build_teso(frozen_tiny)
    build_teso(frozen_tiny, load_pretrained=False)  # load_checkpoint: the weights come from the file
    frozen_tiny.allow_random_frozen = True
    assert not any(p.requires_grad for p in build_teso(frozen_tiny).foundation.m2f.model.parameters())
    vggish = _config()  # foundation trained from scratch, but a frozen random VGGish
    vggish.audio.encoder = "vggish"
    with pytest.raises(TesoError, match=r"model\.audio\.weights"):
        build_teso(vggish)
    vggish.ablation.audio = False  # no audio path, no VGGish
    assert build_teso(vggish).audio_encoder is None


def test_pmqs_ablation_masked_tokens_are_out_of_the_decoders_attention():
    """(−) PMQS appends the prompt tokens to the decoder's queries: a masked token must act as an
    absent one — the zeroed tokens of before still took part in self-attention."""
    config = _config(pmqs=False, dynamic_mask=False)  # keep = the real cues: 2 of 4 masked below
    config.text.padding = "mask"  # (with "zero" the empty slots are audio tokens and take part)
    torch.manual_seed(0)
    model = build_teso(config).eval()
    _wake(model)
    short = _config(pmqs=False, dynamic_mask=False)
    short.text.padding = "mask"
    short.text.num_cues = 2  # the same weights (cue count is no parameter shape), no padding tokens
    narrow = build_teso(short).eval()
    narrow.load_state_dict(model.state_dict())
    frames, audio, text, _ = _inputs(t=2)
    count = torch.full((1, 2), 2)
    with torch.no_grad():
        padded = model(frames, audio, text, count)
        absent = narrow(frames, audio, text[:, :, :2], count)
        visual = model.encode_visual(frames)
        appended_zero = model.foundation.decode(visual, model._append_prompt(torch.zeros(2, 4, 64)))[1][-1]
        plain = model.foundation.decode(visual)[1][-1]
    # Same numbers, one reduction two keys longer (their weights exactly 0): float32 rounding only.
    assert torch.allclose(padded.mask_logits, absent.mask_logits, atol=1e-5, rtol=1e-5)
    assert torch.allclose(padded.class_logits, absent.class_logits, atol=1e-5, rtol=1e-5)
    # Zero tokens that do take part move the queries (measured ~5 % of the logits' scale under both
    # transformers releases, whose random inits differ in scale): the old zeroing was not "absent".
    assert (appended_zero - plain).abs().max() > 0.01 * plain.abs().max()

    # The content of a masked token cannot reach the output, bit for bit; a kept one's does.
    g = torch.Generator().manual_seed(7)
    tokens = torch.randn(2, 4, 64, generator=g)
    keep = torch.tensor([[True, False, True, False], [True, True, False, False]])
    with torch.no_grad():

        def decode(tok: torch.Tensor):
            c, m = model.foundation.decode(visual, model._append_prompt(tok), keep)
            return c[-1], m[-1]

        base = decode(tokens)
        masked_changed = tokens.clone()
        masked_changed[0, 1] = torch.randn(64, generator=g) * 10
        masked_changed[1, 3] = torch.randn(64, generator=g) * 10
        kept_changed = tokens.clone()
        kept_changed[0, 0] = torch.randn(64, generator=g) * 10
        after_masked, after_kept = decode(masked_changed), decode(kept_changed)
    assert torch.equal(after_masked[0], base[0]) and torch.equal(after_masked[1], base[1])
    assert not torch.allclose(after_kept[1][0], base[1][0])
    assert torch.equal(after_kept[1][1], base[1][1])  # frame 1's tokens did not change


def test_annotated_only_runs_the_visual_network_on_the_annotated_frames():
    """S4 train annotates frame 0 of 5: with ``annotated_only`` the Swin backbone sees those frames
    only, and the losses are those of running every frame and discarding the others."""
    torch.manual_seed(0)
    model = build_teso(_config())
    _wake(model)
    model.train()
    frames, audio, text, count = _inputs(b=2, t=3)
    masks = torch.zeros(2, 3, 16, 16, dtype=torch.long)
    masks[:, :, 3:10, 4:12] = 1
    annotated = torch.tensor([[True, False, False], [True, False, True]])
    targets = TeSOTargets(masks, annotated)
    seen: list[int] = []
    backbone = model.foundation.m2f.model.pixel_level_module.encoder
    handle = backbone.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    try:
        torch.manual_seed(5)  # the loss samples its points at random: the same draws for both runs
        full = model(frames, audio, text, count, targets)
        torch.manual_seed(5)
        only = model(frames, audio, text, count, targets, annotated_only=True)
    finally:
        handle.remove()
    assert seen == [6, 3]  # every frame, then the 3 annotated ones
    assert only.class_logits.shape == (1, 3, 12, 2) and only.mask_logits.shape == (1, 3, 12, 16, 16)
    assert only.cue_keep.shape == (1, 3, 4) and only.xi.shape == (1, 3, 4)
    assert torch.equal(only.decoded, annotated)
    flat = annotated.reshape(-1)
    # The decoded frames are the full run's annotated frames: the same logits up to the float32
    # kernels' rounding for another batch size (3 images instead of 6; measured 3e-7).
    assert torch.allclose(only.mask_logits[0], full.mask_logits.flatten(0, 1)[flat], atol=1e-5, rtol=1e-5)
    assert torch.equal(only.infonce, full.infonce)  # infoNCE reads every second in both runs
    for key in full.losses:
        assert torch.allclose(only.losses[key], full.losses[key], atol=1e-5, rtol=1e-5), key
    only.losses["loss"].backward()
    assert model.audio_encoder.net.features[0].weight.grad.abs().sum() > 0
    with pytest.raises(TesoError, match="no frame of the batch is annotated"):
        model(
            frames,
            audio,
            text,
            count,
            TeSOTargets(masks, torch.zeros(2, 3, dtype=torch.bool)),
            annotated_only=True,
        )


@pytest.mark.parametrize("after_layer", [0, 1])
def test_pmqs_after_layer_prompts_the_queries_entering_that_decoder_layer(after_layer):
    """``pmqs.after_layer`` k: the predictions made before decoder layer k are the same whatever
    the cues and audio; from layer k on they follow them (and PMQS gets gradients)."""
    config = _config()
    config.pmqs.after_layer = after_layer
    torch.manual_seed(0)
    model = build_teso(config)
    _wake(model)
    model.eval()
    frames, audio, text, count = _inputs(t=2)
    a = _run(model, audio, text, count, frames)
    b = _run(model, torch.randn_like(audio), torch.randn_like(text), count, frames)
    preds_a = [m for _, m in a.aux] + [a.mask_logits]
    preds_b = [m for _, m in b.aux] + [b.mask_logits]
    assert len(preds_a) == config.visual.decoder_layers  # HF counts the first prediction as a layer
    for i, (pa, pb) in enumerate(zip(preds_a, preds_b)):
        # Prediction i comes from the queries that passed i decoder layers: the prompt enters
        # layer k's input, so predictions 0..k are made before it (k = 0: before the decoder).
        unprompted = after_layer >= 1 and i <= after_layer
        assert torch.equal(pa, pb) == unprompted, (i, after_layer)
    model.train()
    out = model(frames, audio, text, count)
    out.mask_logits.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.pmqs.parameters())


def test_pmqs_after_layer_is_checked_against_the_decoder_and_the_pmqs_switch():
    config = _config()
    config.pmqs.after_layer = config.visual.decoder_layers - 1
    with pytest.raises(TesoError, match="pmqs.after_layer"):
        config.validate()
    config = _config(pmqs=False)
    config.pmqs.after_layer = 1
    with pytest.raises(TesoError, match="PMQS"):
        config.validate()


def test_grounded_tokens_start_as_the_paper_and_then_read_the_frame():
    """``pmqs.ground_tokens``: built fresh it changes nothing (zero output projection, the other
    weights drawn as without it); woken, the prompt tokens depend on the frame's S/8 pixels, and
    the grounding trains."""
    frames, audio, text, count = _inputs(t=2)
    outs = {}
    for ground in (False, True):
        config = _config()
        config.pmqs.ground_tokens = ground
        torch.manual_seed(0)
        outs[ground] = build_teso(config).eval()
    plain, grounded = outs[False], outs[True]
    assert grounded.pmqs.ground is not None and plain.pmqs.ground is None
    a = _run(plain, audio, text, count, frames)
    b = _run(grounded, audio, text, count, frames)
    assert torch.equal(a.mask_logits, b.mask_logits) and torch.equal(a.class_logits, b.class_logits)
    _wake(grounded)
    with torch.no_grad():
        torch.nn.init.normal_(grounded.pmqs.ground.attn.out_proj.weight, std=0.2)
    visual = grounded.encode_visual(frames)
    s8 = visual.multi_scale[-1]
    assert s8.shape[-1] == SIZE // 8  # the S/8 map is the one the tokens read
    tokens = torch.randn(2, 3, grounded.config.visual.hidden_dim)
    pixels = s8.flatten(2).transpose(1, 2)
    with torch.no_grad():
        here = grounded.pmqs.ground(tokens, pixels)
        other = grounded.pmqs.ground(tokens, pixels.flip(0))  # each frame's tokens read the other frame
    assert not torch.equal(here, other) and not torch.equal(here, tokens)
    grounded.train()
    out = grounded(frames, audio, text, count)
    out.mask_logits.sum().backward()
    assert grounded.pmqs.ground.pixel_proj.weight.grad.abs().sum() > 0
    with pytest.raises(TesoError, match="pixel features"):
        grounded.pmqs(torch.randn(2, 5, 32), tokens, torch.ones(2, 3, dtype=torch.bool))


def test_ground_tokens_needs_pmqs():
    config = _config(pmqs=False)
    config.pmqs.ground_tokens = True
    with pytest.raises(TesoError, match="ground_tokens"):
        config.validate()
