"""The wiring of the eight rows of the paper's Table 5 (teso.model.wiring) against a hand-written
table, and the built model against its wiring."""

from __future__ import annotations

import pytest

from teso.model import build_teso, get_variant, resolve_wiring

# row: (switches off, audio, text, tokens, prompt, dynamic mask, soft mask, latents, infoNCE in loss)
ROWS = {
    "TeSO": ((), True, True, "fused", "pmqs", True, True, True, True),
    "(−) infoNCE": (("infonce",), True, True, "fused", "pmqs", True, True, True, False),
    "(−) dynamic mask": (("dynamic_mask",), True, True, "fused", "pmqs", False, False, True, True),
    "(−) PMQS": (("pmqs",), True, True, "fused", "append", True, False, True, True),
    "(−) SeDAM": (("sedam",), True, True, "projected", "pmqs", False, False, False, False),
    "(−) text": (("text",), True, False, "latents", "pmqs", False, False, True, True),
    "(−) audio": (("audio",), False, True, "cues", "pmqs", False, False, False, False),
    "(−) text & audio": (("text", "audio"), False, False, "none", "none", False, False, False, False),
}
FIELDS = ("audio", "text", "tokens", "prompt", "dynamic_mask", "soft_mask", "latents", "infonce_in_loss")


def _config(off):
    config = get_variant("tiny", image_size=64)
    for switch in off:
        setattr(config.ablation, switch, False)
    return config


@pytest.mark.parametrize("row", list(ROWS))
def test_table5_row_wiring(row):
    off, *expected = ROWS[row]
    wiring = resolve_wiring(_config(off))
    print(wiring.describe())
    assert wiring.row == row
    assert tuple(getattr(wiring, f) for f in FIELDS) == tuple(expected)


@pytest.mark.parametrize("row", list(ROWS))
def test_the_built_model_has_exactly_the_parts_its_wiring_names(row):
    off = ROWS[row][0]
    config = _config(off)
    model = build_teso(config)
    w = model.wiring
    assert w == resolve_wiring(config)
    assert (model.audio_encoder is not None, model.audio_proj is not None) == (w.audio, w.audio)
    assert (model.text_proj is not None) == w.text
    assert (model.sedam is not None) == w.sedam == (w.tokens in ("fused", "latents", "cues"))
    assert (model.pmqs is not None) == (w.prompt == "pmqs")
    if model.pmqs is not None:
        assert model.pmqs.null_key == w.soft_mask
    if model.sedam is not None:
        assert model.sedam.soft_mask == w.soft_mask
    assert model.criterion.use_infonce == w.infonce_in_loss


def test_the_soft_mask_follows_sedam_mask_train_and_other_combinations_are_named():
    config = _config(())
    config.sedam.mask_train = "hard"
    assert not resolve_wiring(config).soft_mask and resolve_wiring(config).dynamic_mask
    both = resolve_wiring(_config(("pmqs", "sedam")))
    assert both.row == "(−) pmqs & sedam" and (both.tokens, both.prompt) == ("projected", "append")
