"""The VGGish log-mel front end against an independent numpy implementation, and the per-second split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from teso.audio import (
    log_mel_examples,
    log_mel_spectrogram,
    mel_matrix,
    per_second_examples,
    per_second_waveforms,
)
from teso.errors import TesoError

SR = 16000
U32 = 2.0**-24  # unit roundoff of float32 (half its machine epsilon)
U64 = 2.0**-53  # unit roundoff of float64


def reference_mel_weights() -> np.ndarray:
    """VGGish's [257, 64] triangles on the HTK mel scale, built directly in float64 numpy."""

    def to_mel(hz):
        return 1127.0 * np.log(1.0 + np.asarray(hz) / 700.0)

    fft_mel = to_mel(np.linspace(0.0, 8000.0, 257))
    band_edges = np.linspace(to_mel(125.0), to_mel(7500.0), 64 + 2)
    weights = np.zeros((257, 64))
    for band in range(64):
        lo, mid, hi = band_edges[band], band_edges[band + 1], band_edges[band + 2]
        up = (fft_mel - lo) / (mid - lo)
        down = (hi - fft_mel) / (hi - mid)
        weights[:, band] = np.clip(np.minimum(up, down), 0.0, None)
    weights[0] = 0.0
    return weights


def reference_frames(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(frames [T, 400], periodically Hann-windowed frames [T, 400])`` of ``[N]`` at 16 kHz, float64."""
    frames = np.lib.stride_tricks.sliding_window_view(np.asarray(x, dtype=np.float64), 400)[::160]
    periodic_hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(400) / 400)
    return frames, frames * periodic_hann


def reference_log_mel(x: np.ndarray) -> np.ndarray:
    """VGGish's front end in plain float64 numpy: [N] at 16 kHz -> [T, 64]."""
    magnitude = np.abs(np.fft.rfft(reference_frames(x)[1], 512))  # [T, 257]
    return np.log(magnitude @ reference_mel_weights() + 0.01)


def log_mel_error_bound(x: np.ndarray, u: float) -> np.ndarray:
    """``[T, 64]``: how far a log-mel computed in precision ``u`` may be from :func:`reference_log_mel`.

    A worst-case rounding-error bound (first order in ``u``), for frame ``t`` and band ``b``, with
    ``s`` the windowed frame, ``X`` its 512-point DFT, ``m = |X| W`` the mel energies and ``W_b`` a
    band's weights. It holds whatever summation order or butterfly arrangement a kernel uses, so it
    holds for MKL's FFT and matmul on any CPU and thread count (the kernel changes the error, not
    the bound). A fixed tolerance cannot do this: the error scales with the frame's energy and is
    divided by ``m + 0.01``, from ~2e-5 in loud bands to ~1e-2 in faint ones of loud frames.

    1. window: the float Hann window ``0.5 - 0.5 cos(2 pi n / 400)`` is off by an *absolute*
       ``0.5 (4 pi + 1) u + u < 8 u`` (argument off by ``2u * 2 pi``, cos by an ulp); with the product
       and an input already rounded to ``u``: ``|s^ - s|_2 <= 10 u |frame|_2`` (unwindowed frame).
    2. FFT: Higham, *Accuracy and Stability of Numerical Algorithms* (2nd ed.), Thm 24.2: a radix-2
       FFT of length 2^k with twiddles correct to ``u`` has ``|X^ - X|_2 <= k eta |X|_2``,
       ``eta = u + gamma_4 (sqrt(2) + u) <= 7 u``; k = 10 (9 stages for 512 points, one more for
       the real-input packing), and Parseval: ``|X|_2 = sqrt(512) |s|_2``.
    3. band sum: ``sum_k W_kb |X^_k - X_k| <= |W_b|_2 |X^ - X|_2`` (Cauchy-Schwarz); the float
       product ``|X^| @ W`` adds terms that are all >= 0, so its relative error is at most
       ``gamma_257`` plus ``u`` for each rounded weight and ``2u`` for ``|.|``: <= 261 u of ``m``.
    4. ``log(m + 0.01)``: an absolute error ``d`` of ``m`` moves the log by ``d / (m + 0.01)``; the
       ``+ 0.01`` (its rounding and that of the constant) and the log (correct to an ulp) add
       ``2 u`` and ``2 u |log|``.

    The reference's own float64 error (the same bound at ``U64``) and the ~1e-14 by which two
    float64 constructions of ``W`` may differ (ratios of mel values <= 2840 over band widths >= 40
    mel; 1e-13 is used) are added, so the bound also serves float64 against float64. Measured on
    the signals of this file: float32 and float64 errors reach 2% of the bound (up to ~1.2e-5 and
    ~3e-14), while a symmetric instead of periodic Hann window exceeds it 800-fold and a Kaiser
    beta 6 instead of 5 resampler 40-fold.
    """
    frames, windowed = reference_frames(x)
    weights = reference_mel_weights()
    magnitude = np.abs(np.fft.rfft(windowed, 512))
    mel = magnitude @ weights
    log_mel = np.log(mel + 0.01)
    band_norm = np.linalg.norm(weights, axis=0)  # [64]
    frame_norm = np.linalg.norm(frames, axis=1)[:, None]  # [T, 1]
    windowed_norm = np.linalg.norm(windowed, axis=1)[:, None]

    def bound(v: float) -> np.ndarray:
        spectrum_error = np.sqrt(512) * (10 * 7 * v * windowed_norm + 10 * v * frame_norm)  # 1. and 2.
        mel_error = band_norm * spectrum_error + 261 * v * mel  # 3.
        return mel_error / (mel + 0.01) + 2 * v + 2 * v * np.abs(log_mel)  # 4.

    weight_error = 1e-13 * (magnitude @ (weights > 0)) / (mel + 0.01)
    return bound(u) + bound(U64) + weight_error


def assert_within(got: torch.Tensor, want: np.ndarray, tol: np.ndarray) -> None:
    """Elementwise ``|got - want| <= tol``; on failure says how many values and by how much."""
    got_np = got.numpy()
    assert got_np.shape == want.shape, (got_np.shape, want.shape)
    excess = np.abs(got_np.astype(np.float64) - want) - tol
    assert excess.max() <= 0, (
        f"{int((excess > 0).sum())} of {excess.size} values beyond the bound, by up to {excess.max():.3g}"
    )


def assert_log_mel_matches(got: torch.Tensor, x16: np.ndarray, u: float) -> None:
    """``got`` (frames ``[T, 64]`` or examples ``[E, 1, 96, 64]``, computed in precision ``u``) against
    :func:`reference_log_mel` of the 16 kHz signal ``x16``, within :func:`log_mel_error_bound`."""
    t = got.reshape(-1, 64).shape[0]
    want = reference_log_mel(x16)[:t].reshape(got.shape)
    assert_within(got, want, log_mel_error_bound(x16, u)[:t].reshape(got.shape))


def per_second_bound(x16: np.ndarray, seconds: int) -> np.ndarray:
    """:func:`log_mel_error_bound` (float32) laid out as per_second_examples: ``[S, 1, 96, 64]``, second
    ``s`` framed on its own samples ``[16000 s, 16000 (s + 1))``."""
    return np.stack([log_mel_error_bound(x16[s * SR : (s + 1) * SR], U32)[None, :96] for s in range(seconds)])


def assert_same_log_mel(a: torch.Tensor, b: torch.Tensor, bound: np.ndarray) -> None:
    """Two float32 computations of the same log-mel, ``bound`` the error bound of either against the
    exact value: they are within twice that of each other. Not required to be bit-equal: a batched
    and a single FFT or matmul (or two runs) may take different MKL kernels or thread splits."""
    assert a.shape == b.shape == bound.shape and a.dtype == b.dtype == torch.float32
    assert_within(a, b.numpy().astype(np.float64), 2 * bound)


def reference_examples(x: np.ndarray) -> np.ndarray:
    frames = reference_log_mel(x)
    e = frames.shape[0] // 96
    return frames[: e * 96].reshape(e, 1, 96, 64)


def kaiser_polyphase_resample(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """The documented resampler (teso.audio.resample), written out directly in float64 numpy.

    Output sample ``m`` is ``sum_j x[j] h(m down - j up)``: the zero-stuffed input (rate x up) is
    low-passed by ``h`` and every ``down``-th sample kept. ``h`` is a windowed sinc with its cutoff at
    the lower Nyquist rate, ``1 / max(up, down)`` of the upsampled one, ``10 max(up, down)`` taps
    either side, a Kaiser window of beta 5, unit DC gain times ``up``. Computed per output sample
    from the taps that reach it (no filtering of the zero-stuffed signal): another route to the same
    numbers as scipy's upfirdn, equal to ~1e-15.
    """
    x = np.asarray(x, dtype=np.float64)
    r = max(up, down)
    half = 10 * r
    h = np.sinc(np.arange(-half, half + 1) / r) * np.kaiser(2 * half + 1, 5.0)
    h *= up / h.sum()
    m = np.arange(-(-len(x) * up // down))  # ceil(N up / down) output samples
    first = -((half - m * down) // up)  # the smallest j with m down - j up <= half
    j = first[:, None] + np.arange(2 * half // up + 1)[None, :]
    k = m[:, None] * down - j * up
    valid = (j >= 0) & (j < len(x)) & (np.abs(k) <= half)
    taps = np.where(valid, h[np.clip(k + half, 0, 2 * half)], 0.0)
    return (taps * x[np.clip(j, 0, len(x) - 1)]).sum(axis=1)


def make_signal(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    x = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 3100.0 * t + 1.0)
    x += 0.05 * rng.standard_normal(t.shape)
    x[: SR // 4] *= 0.001  # a very quiet stretch exercises the log(mel + 0.01) floor
    return x.astype(np.float32)


def test_matches_numpy_reference_float32():
    x = make_signal(5.3)
    got = log_mel_examples(x, SR)
    assert got.dtype == torch.float32
    assert got.shape == (5, 1, 96, 64)
    assert_log_mel_matches(got, x, U32)
    # the values are not trivially flat: real spectral structure was compared
    assert reference_examples(x).std() > 1.0


def test_matches_numpy_reference_float64_exactly():
    x = make_signal(2.0, seed=3).astype(np.float64)
    got = log_mel_examples(x, SR)
    assert got.dtype == torch.float64
    assert_log_mel_matches(got, x, U64)  # the float64 bound: 1e-13 to 5e-11 here
    assert log_mel_error_bound(x, U64).max() < 1e-8


def test_spectrogram_frames_match_reference():
    x = make_signal(1.37, seed=1)
    got = log_mel_spectrogram(x, SR)
    assert got.shape == (1 + (len(x) - 400) // 160, 64)
    assert_log_mel_matches(got, x, U32)


@pytest.mark.parametrize(
    "num_samples, examples",
    [(16000, 1), (5 * 16000, 5), (10 * 16000, 10), (15600, 1), (15599, 0), (399, 0), (0, 0)],
)
def test_example_counts(num_samples, examples):
    out = log_mel_examples(np.zeros(num_samples, dtype=np.float32), SR)
    assert out.shape == (examples, 1, 96, 64)


def assert_silent(out: torch.Tensor) -> None:
    """Silence: the FFT and the mel product of zeros are exactly 0, so every value is the float32
    ``log(0.01)``; only the log's rounding (an ulp, 4.8e-7 at 4.6) and 0.01 -> float32 (a 2.2e-8 shift
    of the log) remain, hence 4 ulps."""
    assert out.dtype == torch.float32
    want = np.full(out.shape, np.log(0.01))
    assert_within(out, want, np.full(out.shape, 4 * np.spacing(np.float32(-np.log(0.01)))))


def test_silence_is_log_offset():
    assert_silent(log_mel_examples(np.zeros(SR, dtype=np.float32), SR))


def test_batch_and_tensor_inputs_agree():
    a, b = make_signal(2.1, seed=4), make_signal(2.1, seed=5)
    batch = log_mel_examples(np.stack([a, b]), SR)
    assert batch.shape == (2, 2, 1, 96, 64)
    bound_a = log_mel_error_bound(a, U32)[: 2 * 96].reshape(2, 1, 96, 64)
    bound_b = log_mel_error_bound(b, U32)[: 2 * 96].reshape(2, 1, 96, 64)
    assert_same_log_mel(batch[0], log_mel_examples(a, SR), bound_a)
    assert_same_log_mel(batch[1], log_mel_examples(torch.from_numpy(b), SR), bound_b)
    assert_log_mel_matches(batch[1], b, U32)


@pytest.mark.parametrize("sr", [44100, 48000])
def test_other_rates_are_resampled_first(sr):
    """Against the documented resampler written out in the test (not teso.audio.resample).

    A 1 kHz tone plus white noise over the whole band up to sr / 2: without the anti-alias low-pass
    the noise above 8 kHz would fold into the bands, and any other filter would change the values.
    The two resamplers agree to ~1e-15, nothing next to the float32 rounding of the resampled signal
    (one of the 10 u |frame| of the bound).
    """
    t = np.arange(3 * sr) / sr
    noise = 0.02 * np.random.default_rng(sr).standard_normal(t.shape)
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * t) + noise).astype(np.float32)
    got = log_mel_examples(x, sr)
    assert got.shape == (3, 1, 96, 64)
    g = math.gcd(sr, SR)
    assert_log_mel_matches(got, kaiser_polyphase_resample(x, SR // g, sr // g), U32)
    # energy sits in the band whose centre is nearest 1 kHz
    centres_hz = 700.0 * (
        np.exp(np.linspace(1127 * np.log1p(125 / 700), 1127 * np.log1p(7500 / 700), 66)[1:-1] / 1127) - 1
    )
    loudest = got.mean(dim=(0, 1, 2)).argmax().item()
    assert loudest == int(np.abs(centres_hz - 1000.0).argmin())


def test_mel_matrix_construction():
    m = mel_matrix(torch.float64)
    assert m.shape == (257, 64)
    assert torch.all(m[0] == 0)  # DC zeroed
    assert torch.all(m >= 0) and torch.all(m <= 1)
    # bins above 7500 Hz (bin 240 = 7500 Hz) carry no weight; every band has some
    assert torch.all(m[241:] == 0)
    assert torch.all(m.sum(dim=0) > 0)


def test_bad_inputs_raise():
    with pytest.raises(TesoError, match="floating-point"):
        log_mel_examples(np.zeros(SR, dtype=np.int16), SR)
    with pytest.raises(TesoError, match=r"\[N\] or \[B, N\]"):
        log_mel_examples(np.zeros((1, 2, SR), dtype=np.float32), SR)
    with pytest.raises(TesoError, match="sample_rate"):
        log_mel_examples(np.zeros(SR, dtype=np.float32), 0)


def test_per_second_examples_take_each_second_alone():
    x = make_signal(3.0, seed=7)
    out = per_second_examples(x, SR, 3)
    assert out.shape == (3, 1, 96, 64)
    for t in range(3):
        assert_log_mel_matches(out[t, 0], x[t * SR : (t + 1) * SR], U32)


def test_per_second_examples_zero_pad_the_end():
    x = make_signal(2.5, seed=8)  # 2.5 s for a 4 s clip
    out = per_second_examples(x, SR, 4)
    assert out.shape == (4, 1, 96, 64)
    padded = np.concatenate([x, np.zeros(4 * SR - len(x), dtype=np.float32)])
    assert_log_mel_matches(out[2, 0], padded[2 * SR : 3 * SR], U32)
    assert_silent(out[3])
    # same input, same output: the padding is deterministic (garbage in it would be far off the
    # reference above; bit-equality of two runs is not asked of MKL)
    assert_same_log_mel(out, per_second_examples(x, SR, 4), per_second_bound(padded, 4))


def test_per_second_examples_cut_longer_audio_and_resample():
    x = make_signal(6.0, seed=9)
    five = per_second_examples(x, SR, 5)
    assert_same_log_mel(five, per_second_examples(x[: 5 * SR], SR, 5), per_second_bound(x, 5))
    for s in range(5):
        assert_log_mel_matches(five[s, 0], x[s * SR : (s + 1) * SR], U32)
    # made at 22.05 kHz: tones plus white noise up to 11 kHz (above 8 kHz for the low-pass to remove);
    # resampled, then cut to 5 s
    sr = 22050
    t = np.arange(6 * sr) / sr
    x22 = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 3100.0 * t + 1.0)
    x22 = (x22 + 0.05 * np.random.default_rng(10).standard_normal(t.shape)).astype(np.float32)
    got = per_second_examples(x22, sr, 5)
    assert got.shape == (5, 1, 96, 64)
    x16 = kaiser_polyphase_resample(x22, 320, 441)  # 22050 / 16000 = 441 / 320
    for s in range(5):
        assert_log_mel_matches(got[s, 0], x16[s * SR : (s + 1) * SR], U32)
    batch = per_second_examples(np.stack([x, x]), SR, 5)
    assert batch.shape == (2, 5, 1, 96, 64)


def test_per_second_errors():
    with pytest.raises(TesoError, match="no samples"):
        per_second_examples(np.zeros(0, dtype=np.float32), SR, 5)
    with pytest.raises(TesoError, match="seconds"):
        per_second_examples(np.zeros(SR, dtype=np.float32), SR, 0)
    with pytest.raises(TesoError, match="no samples"):
        per_second_waveforms(np.zeros(0, dtype=np.float32), SR, 5)
    with pytest.raises(TesoError, match="seconds"):
        per_second_waveforms(np.zeros(SR, dtype=np.float32), SR, -1)


def test_per_second_waveforms_split_and_pad():
    sr = 8000
    x = np.arange(int(2.5 * sr), dtype=np.float32) / 1e5
    out = per_second_waveforms(x, sr, 3)
    assert out.shape == (3, sr) and out.dtype == torch.float32
    np.testing.assert_array_equal(out[1].numpy(), x[sr : 2 * sr])
    np.testing.assert_array_equal(out[2, : sr // 2].numpy(), x[2 * sr :])
    assert torch.all(out[2, sr // 2 :] == 0)
    cut = per_second_waveforms(x, sr, 1)
    np.testing.assert_array_equal(cut[0].numpy(), x[:sr])
