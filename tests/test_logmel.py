"""The VGGish log-mel front end against an independent numpy implementation, and the per-second split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teso.audio import (
    log_mel_examples,
    log_mel_spectrogram,
    mel_matrix,
    per_second_examples,
    per_second_waveforms,
    resample,
)
from teso.errors import TesoError

SR = 16000


def assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=atol)


def reference_log_mel(x: np.ndarray) -> np.ndarray:
    """VGGish's front end in plain float64 numpy: [N] at 16 kHz -> [T, 64]."""
    x = np.asarray(x, dtype=np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::160]  # [T, 400]
    n = np.arange(400)
    periodic_hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / 400)
    magnitude = np.abs(np.fft.rfft(frames * periodic_hann, 512))  # [T, 257]

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
    return np.log(magnitude @ weights + 0.01)


def reference_examples(x: np.ndarray) -> np.ndarray:
    frames = reference_log_mel(x)
    e = frames.shape[0] // 96
    return frames[: e * 96].reshape(e, 1, 96, 64)


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
    want = reference_examples(x)
    assert got.dtype == torch.float32
    assert got.shape == (5, 1, 96, 64)
    assert np.abs(got.numpy() - want).max() < 1e-4
    # the values are not trivially flat: real spectral structure was compared
    assert want.std() > 1.0


def test_matches_numpy_reference_float64_exactly():
    x = make_signal(2.0, seed=3).astype(np.float64)
    got = log_mel_examples(x, SR)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), reference_examples(x), atol=1e-10, rtol=0)


def test_spectrogram_frames_match_reference():
    x = make_signal(1.37, seed=1)
    got = log_mel_spectrogram(x, SR)
    want = reference_log_mel(x)
    assert got.shape == want.shape == (1 + (len(x) - 400) // 160, 64)
    assert np.abs(got.numpy() - want).max() < 1e-4


@pytest.mark.parametrize(
    "num_samples, examples",
    [(16000, 1), (5 * 16000, 5), (10 * 16000, 10), (15600, 1), (15599, 0), (399, 0), (0, 0)],
)
def test_example_counts(num_samples, examples):
    out = log_mel_examples(np.zeros(num_samples, dtype=np.float32), SR)
    assert out.shape == (examples, 1, 96, 64)


def test_silence_is_log_offset():
    out = log_mel_examples(np.zeros(SR, dtype=np.float32), SR)
    assert torch.allclose(out, torch.full_like(out, float(np.log(0.01))))


def test_batch_and_tensor_inputs_agree():
    a, b = make_signal(2.1, seed=4), make_signal(2.1, seed=5)
    batch = log_mel_examples(np.stack([a, b]), SR)
    assert batch.shape == (2, 2, 1, 96, 64)
    assert_close(batch[0], log_mel_examples(a, SR))
    assert_close(batch[1], log_mel_examples(torch.from_numpy(b), SR))


def test_other_rates_are_resampled_first():
    sr = 44100
    t = np.arange(3 * sr) / sr
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    got = log_mel_examples(x, sr)
    assert got.shape == (3, 1, 96, 64)
    assert_close(got, log_mel_examples(resample(x, sr, SR), SR))
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
        want = reference_log_mel(x[t * SR : (t + 1) * SR])[:96]
        assert np.abs(out[t, 0].numpy() - want).max() < 1e-4


def test_per_second_examples_zero_pad_the_end():
    x = make_signal(2.5, seed=8)  # 2.5 s for a 4 s clip
    out = per_second_examples(x, SR, 4)
    assert out.shape == (4, 1, 96, 64)
    padded = np.concatenate([x, np.zeros(4 * SR - len(x), dtype=np.float32)])
    third = reference_log_mel(padded[2 * SR : 3 * SR])[:96]
    assert np.abs(out[2, 0].numpy() - third).max() < 1e-4
    assert torch.allclose(out[3], torch.full_like(out[3], float(np.log(0.01))))
    # same input, same output: the padding is deterministic
    assert torch.equal(out, per_second_examples(x, SR, 4))


def test_per_second_examples_cut_longer_audio_and_resample():
    x = make_signal(6.0, seed=9)
    assert_close(per_second_examples(x, SR, 5), per_second_examples(x[: 5 * SR], SR, 5))
    sr = 22050
    x22 = resample(x, SR, sr)
    assert_close(per_second_examples(x22, sr, 5), per_second_examples(resample(x22, sr, SR), SR, 5))
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
