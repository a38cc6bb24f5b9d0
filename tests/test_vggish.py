"""VGGish: the port's state-dict layout, strict loading, the channels-last flatten, safetensors."""

from __future__ import annotations

from collections.abc import Callable

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


# Integer weights (about TAPS of -1 / +1 per output, the rest 0), integer biases and integer inputs make
# the forward exact in float32: see exact_reference. With TAPS = 8 and the seeds below the largest
# partial-sum bound is about 2e5 (the last linear layer), far below 2**24; half the units are active
# and a channels-first flatten would change 200 of the 256 outputs.
TAPS = 8
FLOAT32_EXACT_INTEGERS = 2**24  # every integer of magnitude <= 2**24 is a float32


def sparse_signs(n: int, taps: int, fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` weights, each -1 or +1 with probability ``taps / (2 fan_in)``, else 0: ~``taps`` per row."""
    draw = torch.randint(0, fan_in, (n,), generator=generator)
    w = torch.zeros(n)
    w[draw < taps] = 1.0
    w[draw < taps // 2] = -1.0
    return w


def shifted_rows(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """A random-looking [rows, cols] matrix whose row i is a 7-element shift of row i - 1.

    Every row differs and the flatten order still matters, but the storage (and the saved file) is
    cols + 7 * rows elements instead of rows * cols: the test saves and loads in a fraction of a second.
    """
    base = sparse_signs(cols + 7 * (rows - 1), TAPS, cols, generator)
    return base.as_strided((rows, cols), (7, 1))


@pytest.fixture(scope="module")
def port_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, shape in PORT_SHAPES.items():
        if k.endswith("bias"):
            state[k] = torch.randint(0, 2, shape, generator=g).to(torch.float32)
        elif k.startswith("embeddings"):
            state[k] = shifted_rows(shape[0], shape[1], g)
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            state[k] = sparse_signs(shape[0] * fan_in, TAPS, fan_in, g).reshape(shape)
    return state


@pytest.fixture(scope="module")
def port_file(port_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("vggish") / "vggish-10086976.pth"
    torch.save(port_state, path)
    return path


@pytest.fixture(scope="module")
def loaded(port_file) -> VGGish:
    return VGGish.from_pretrained(port_file)


def partial_sum_bound(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    """A bound on every partial sum, in any order, of every dot product of a layer ``w x + b``.

    ``|any partial sum of w_i x_i (+ b)| <= nnz * max|w| * max|x| + max|b|``, where ``nnz`` is the most
    non-zero weights one output reads (a conv filter or a linear row). Computed on the elements the
    rows span (their storage, small for the shifted rows), not on a 50 M-element copy.
    """
    rows = w.reshape(w.shape[0], -1)  # a view: conv weights are contiguous, linear ones unit-stride rows
    cols, step = rows.shape[1], rows.stride(0)
    assert rows.stride(1) == 1
    spanned = rows.as_strided((step * (rows.shape[0] - 1) + cols,), (1,))
    counts = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(spanned != 0, 0)])
    starts = torch.arange(rows.shape[0]) * step
    nnz = (counts[starts + cols] - counts[starts]).max().item()
    w_min, w_max = torch.aminmax(spanned)
    return nnz * max(-w_min.item(), w_max.item()) * x.abs().max().item() + b.abs().max().item()


def functional_vggish(
    x: torch.Tensor,
    s: dict[str, torch.Tensor],
    before_layer: Callable[[str, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """The port's forward written out by hand, flattening with its transpose sequence.

    ``before_layer(name, x)``, when given, sees the input ``x`` of every conv / linear layer ``name``.
    """
    for i, pool_after in ((0, True), (3, True), (6, False), (8, True), (11, False), (13, True)):
        if before_layer is not None:
            before_layer(f"features.{i}", x)
        x = F.relu(F.conv2d(x, s[f"features.{i}.weight"], s[f"features.{i}.bias"], padding=1))
        if pool_after:
            x = F.max_pool2d(x, 2, 2)
    x = torch.transpose(x, 1, 3)
    x = torch.transpose(x, 1, 2).contiguous().view(x.size(0), -1)
    for i in (0, 2, 4):
        if before_layer is not None:
            before_layer(f"embeddings.{i}", x)
        x = F.relu(F.linear(x, s[f"embeddings.{i}.weight"], s[f"embeddings.{i}.bias"]))
    return x


def exact_reference(x: torch.Tensor, s: dict[str, torch.Tensor]) -> torch.Tensor:
    """The exact forward of integer weights and inputs, computed in float64; asserts the float32 one is exact.

    Why there is no tolerance: for integer weights, biases and inputs every partial sum of every dot
    product is an integer bounded by :func:`partial_sum_bound`. While that bound is below 2**24 each
    of those integers is a float32, so every float32 multiply, add or fused multiply-add is exact, in
    whatever order or blocking the kernel (MKL, oneDNN, any CPU, any thread count) sums; ReLU,
    max-pool and the flatten are exact anyway. The float32 forward then equals the exact result bit
    for bit, and so does this float64 one (its bound is 2**53). Real-valued weights would instead
    leave kernel-dependent rounding (measured 1.1e-4 between two layouts of the same first linear layer).
    """
    bounds: dict[str, float] = {}

    def record(name: str, layer_input: torch.Tensor) -> None:
        bounds[name] = partial_sum_bound(layer_input, s[f"{name}.weight"], s[f"{name}.bias"])

    with torch.no_grad():
        out = functional_vggish(x.to(torch.float64), {k: v.to(torch.float64) for k, v in s.items()}, record)
    assert len(bounds) == 9 and max(bounds.values()) < FLOAT32_EXACT_INTEGERS, bounds  # the premise
    return out


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
    x = torch.randint(-4, 5, (2, 1, 96, 64), generator=torch.Generator().manual_seed(1)).to(torch.float32)
    with torch.no_grad():
        got = model(x)
    want = exact_reference(x, port_state)
    assert got.shape == (2, 128) and got.dtype == torch.float32
    assert torch.all(got >= 0)  # ReLU after the last layer, no PCA
    # not a dead network: many distinct, large values, so the comparison means something
    assert torch.count_nonzero(got) > 64 and got.unique().numel() > 50 and got.max() > 1000
    assert not torch.equal(got[0], got[1])  # and the two examples are not mixed up
    # Exact by construction (see exact_reference): equal bit for bit, no tolerance.
    torch.testing.assert_close(got.to(torch.float64), want, rtol=0, atol=0)


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
    assert out[0, 0].item() == 3.0  # exact: small integers throughout (see exact_reference)
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
