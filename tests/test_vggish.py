"""VGGish: the port's state-dict layout, strict loading, the channels-last flatten, safetensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from teso.audio import VGGish
from teso.errors import TesoError

# harritaylor/torchvggish, vggish-10086976.pth: names and shapes
PORT_SHAPES = {
    "features.0.weight": (64, 1, 3, 3),
    "features.0.bias": (64,),
    "features.3.weight": (128, 64, 3, 3),
    "features.3.bias": (128,),
    "features.6.weight": (256, 128, 3, 3),
    "features.6.bias": (256,),
    "features.8.weight": (256, 256, 3, 3),
    "features.8.bias": (256,),
    "features.11.weight": (512, 256, 3, 3),
    "features.11.bias": (512,),
    "features.13.weight": (512, 512, 3, 3),
    "features.13.bias": (512,),
    "embeddings.0.weight": (4096, 12288),
    "embeddings.0.bias": (4096,),
    "embeddings.2.weight": (4096, 4096),
    "embeddings.2.bias": (4096,),
    "embeddings.4.weight": (128, 4096),
    "embeddings.4.bias": (128,),
}


def cheap_state(
    shapes: dict[str, tuple[int, ...]] = PORT_SHAPES, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Full-size tensors backed by one element each (stride 0), so saved files stay tiny."""
    return {k: torch.zeros((), dtype=dtype).expand(shape) for k, shape in shapes.items()}


def blank_vggish() -> VGGish:
    """An all-zero VGGish without paying for the random initialisation of 72 M weights."""
    with torch.device("meta"):
        model = VGGish()
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model.eval()


def shifted_rows(rows: int, cols: int, scale: float, generator: torch.Generator) -> torch.Tensor:
    """A random-looking [rows, cols] matrix whose row i is a 7-element shift of row i - 1.

    Every row differs and the flatten order still matters, but the storage (and the saved file) is
    cols + 7 * rows elements instead of rows * cols: the test saves and loads in a fraction of a second.
    """
    base = torch.randn(cols + 7 * (rows - 1), generator=generator) * scale
    return base.as_strided((rows, cols), (7, 1))


@pytest.fixture(scope="module")
def port_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, shape in PORT_SHAPES.items():
        if k.endswith("bias"):
            state[k] = torch.randn(shape, generator=g) * 0.01 + 0.02
            continue
        fan_in = 1
        for d in shape[1:]:
            fan_in *= d
        scale = (2.0 / fan_in) ** 0.5
        if k.startswith("embeddings"):
            state[k] = shifted_rows(shape[0], shape[1], scale, g)
        else:
            state[k] = torch.randn(shape, generator=g) * scale
    return state


@pytest.fixture(scope="module")
def port_file(port_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("vggish") / "vggish-10086976.pth"
    torch.save(port_state, path)
    return path


@pytest.fixture(scope="module")
def loaded(port_file) -> VGGish:
    return VGGish.from_pretrained(port_file)


def functional_vggish(x: torch.Tensor, s: dict[str, torch.Tensor]) -> torch.Tensor:
    """The port's forward written out by hand, flattening with its transpose sequence."""
    for i, pool_after in ((0, True), (3, True), (6, False), (8, True), (11, False), (13, True)):
        x = F.relu(F.conv2d(x, s[f"features.{i}.weight"], s[f"features.{i}.bias"], padding=1))
        if pool_after:
            x = F.max_pool2d(x, 2, 2)
    x = torch.transpose(x, 1, 3)
    x = torch.transpose(x, 1, 2).contiguous().view(x.size(0), -1)
    for i in (0, 2, 4):
        x = F.relu(F.linear(x, s[f"embeddings.{i}.weight"], s[f"embeddings.{i}.bias"]))
    return x


def test_state_dict_layout_is_the_ports():
    with torch.device("meta"):
        model = VGGish()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == PORT_SHAPES


def test_strict_load_and_forward_match_the_port(port_state, loaded):
    model = loaded
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, port_state[k])
    x = torch.randn(2, 1, 96, 64, generator=torch.Generator().manual_seed(1)) * 2.0 - 4.0
    with torch.no_grad():
        got = model(x)
        want = functional_vggish(x, port_state)
    assert got.shape == (2, 128)
    assert torch.all(got >= 0)  # ReLU after the last layer, no PCA
    assert got.abs().sum() > 0  # not a dead network: the comparison means something
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


def test_flatten_is_channels_last():
    n, c, t, f = 2, 512, 6, 4
    maps = torch.zeros(n, c, t, f)
    for ci, ti, fi in ((0, 0, 0), (1, 0, 0), (0, 0, 1), (0, 1, 0), (511, 5, 3), (7, 2, 3)):
        maps[1, ci, ti, fi] = 1000 * ci + 10 * ti + fi + 1
    flat = VGGish.flatten_features(maps)
    assert flat.shape == (n, c * t * f)
    for ci, ti, fi in ((0, 0, 0), (1, 0, 0), (0, 0, 1), (0, 1, 0), (511, 5, 3), (7, 2, 3)):
        assert flat[1, (ti * f + fi) * c + ci] == 1000 * ci + 10 * ti + fi + 1
    assert torch.count_nonzero(flat[0]) == 0
    # channels-first flattening would differ: the order is what makes real weights give real embeddings
    assert not torch.equal(flat, maps.reshape(n, -1))


def test_flatten_order_reaches_the_first_linear():
    """Through the real forward: channel 5 of the conv output is read at channels-last positions.

    Zero conv weights make every map spatially constant, so this pins the channel stride (512), not
    the time/frequency order; test_flatten_is_channels_last and the functional comparison pin those.
    """
    model = blank_vggish()
    with torch.no_grad():
        model.features[0].bias.fill_(1.0)  # after ReLU/pool every map is 1 from block 1 on...
        # ...then only channel 5 of the last conv passes a constant 1 (bias), everything else 0
        for i in (3, 6, 8, 11):
            model.features[i].bias.fill_(1.0)
        model.features[13].bias[5] = 1.0
        c, t, f = 5, 2, 1
        model.embeddings[0].weight[0, (t * 4 + f) * 512 + c] = 3.0
        model.embeddings[2].weight[0, 0] = 1.0
        model.embeddings[4].weight[0, 0] = 1.0
        out = model(torch.zeros(1, 1, 96, 64))
    assert out[0, 0].item() == pytest.approx(3.0)
    assert torch.count_nonzero(out[0, 1:]) == 0
    with torch.no_grad():
        model.embeddings[0].weight.zero_()
        model.embeddings[0].weight[0, c * 24 + t * 4 + f] = 3.0  # where channels-first would put it
        assert model(torch.zeros(1, 1, 96, 64))[0, 0].item() == 0.0


def test_safetensors_round_trip(loaded, tmp_path):
    model = loaded
    path = model.save_safetensors(tmp_path / "sub" / "vggish.safetensors")
    assert path.is_file()
    again = VGGish.from_pretrained(path)
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert not list((tmp_path / "sub").glob(".*.tmp"))  # the atomic write left nothing behind


def test_missing_key_is_named(tmp_path):
    state = cheap_state()
    del state["embeddings.4.bias"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    with pytest.raises(
        TesoError, match=r"missing\.pth.*missing keys \['embeddings\.4\.bias'\].*unexpected keys none"
    ):
        VGGish.from_pretrained(path)


def test_unexpected_key_is_named(tmp_path):
    state = cheap_state()
    state["pproc.pca_matrix"] = torch.zeros(128, 128)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(
        TesoError, match=r"extra\.pth.*missing keys none.*unexpected keys \['pproc\.pca_matrix'\]"
    ):
        VGGish.from_pretrained(path)


def test_wrong_shape_is_named(tmp_path):
    shapes = dict(PORT_SHAPES)
    shapes["embeddings.0.weight"] = (4096, 512 * 6 * 4 * 2)
    path = tmp_path / "shape.pth"
    torch.save(cheap_state(shapes), path)
    with pytest.raises(
        TesoError, match=r"shape\.pth: VGGish weights have wrong shapes: embeddings\.0\.weight"
    ):
        VGGish.from_pretrained(path)


def test_half_precision_strided_file_loads_as_float32(tmp_path):
    path = tmp_path / "zeros.pth"
    torch.save(cheap_state(dtype=torch.float16), path)
    assert path.stat().st_size < 100_000
    model = VGGish.from_pretrained(path)
    for v in model.state_dict().values():
        assert v.dtype == torch.float32 and v.is_contiguous() and torch.count_nonzero(v) == 0
    assert all(p.requires_grad for p in model.parameters())  # freezing is the caller's decision


def test_bad_files(tmp_path):
    with pytest.raises(TesoError, match=r"absent\.pth: VGGish weights not found"):
        VGGish.from_pretrained(tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(TesoError, match=r"junk\.pth: not a readable PyTorch weights file"):
        VGGish.from_pretrained(junk)
    junk_st = tmp_path / "junk.safetensors"
    junk_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(TesoError, match=r"junk\.safetensors: not a readable safetensors file"):
        VGGish.from_pretrained(junk_st)
    nested = tmp_path / "nested.pth"
    torch.save({"model": cheap_state()}, nested)
    with pytest.raises(TesoError, match=r"nested\.pth: expected a state dict"):
        VGGish.from_pretrained(nested)


def test_wrong_input_shape():
    with pytest.raises(TesoError, match=r"\[N, 1, 96, 64\]"):
        with torch.device("meta"):
            model = VGGish()
        model(torch.zeros(2, 96, 64, device="meta"))
