"""Audio controls: silence and seeded white Gaussian noise at a stated SNR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teso.audio import mute, noise_power, white_noise
from teso.audio.perturb import SILENT_REFERENCE_POWER
from teso.errors import TesoError

SR = 16000


def clip(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


def power(x) -> float:
    return float(np.mean(np.asarray(x, dtype=np.float64) ** 2))


def test_mute_numpy_and_torch():
    x = clip()
    out = mute(x)
    assert isinstance(out, np.ndarray) and out.shape == x.shape and out.dtype == x.dtype
    assert not out.any()
    assert power(x) > 0.05  # the input was left untouched
    xt = torch.from_numpy(clip()).reshape(2, SR).double()
    outt = mute(xt)
    assert isinstance(outt, torch.Tensor) and outt.shape == (2, SR) and outt.dtype == torch.float64
    assert torch.count_nonzero(outt) == 0


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 40.0])
def test_noise_only_has_the_stated_snr(snr_db):
    x = clip()
    noise = white_noise(x, snr_db, mode="only", seed=3)
    assert noise.shape == x.shape and noise.dtype == np.float32
    measured = 10 * np.log10(power(x) / power(noise))
    assert measured == pytest.approx(snr_db, abs=1e-4)
    # the noise replaces the audio: nothing of the 440 Hz tone is left in it
    assert abs(np.corrcoef(noise, x)[0, 1]) < 0.05


@pytest.mark.parametrize("snr_db", [10.0, 40.0])
def test_additive_keeps_the_signal(snr_db):
    x = clip(seed=1)
    y = white_noise(x, snr_db, mode="additive", seed=4)
    added = y.astype(np.float64) - x
    assert 10 * np.log10(power(x) / power(added)) == pytest.approx(snr_db, abs=1e-3)
    # the same seed draws the same noise in both modes (up to float32 rounding of the sum)
    assert np.abs(added - white_noise(x, snr_db, mode="only", seed=4)).max() < 1e-6


def test_noise_is_white_and_gaussian():
    x = clip(seconds=4.0)
    n = white_noise(x, 0.0, seed=11).astype(np.float64)
    assert abs(n.mean()) < 0.01 * n.std()
    kurtosis = np.mean((n - n.mean()) ** 4) / n.var() ** 2
    assert kurtosis == pytest.approx(3.0, abs=0.15)
    lag1 = np.corrcoef(n[:-1], n[1:])[0, 1]
    assert abs(lag1) < 0.02
    spectrum = np.abs(np.fft.rfft(n)) ** 2
    low, high = spectrum[1 : len(spectrum) // 2].mean(), spectrum[len(spectrum) // 2 :].mean()
    assert low / high == pytest.approx(1.0, abs=0.1)


def test_seeded_and_deterministic():
    x = clip()
    a = white_noise(x, 10.0, seed=5)
    np.testing.assert_array_equal(a, white_noise(x, 10.0, seed=5))
    assert not np.allclose(a, white_noise(x, 10.0, seed=6))
    # torch input gives the same numbers, on the input's dtype
    t = white_noise(torch.from_numpy(x), 10.0, seed=5)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), a)


def test_power_is_per_clip_not_per_row():
    x = clip().reshape(2, SR)
    x[1] *= 0.1  # second row 20 dB quieter
    n = white_noise(x, 10.0, seed=0)
    # one noise level for the whole clip: both rows carry about the same noise power
    assert power(n[0]) / power(n[1]) == pytest.approx(1.0, abs=0.1)
    assert 10 * np.log10(power(x) / power(n)) == pytest.approx(10.0, abs=1e-4)


@pytest.mark.parametrize("snr_db", [10.0, 40.0])
def test_silent_clip_uses_the_reference_power(snr_db):
    x = np.zeros(SR, dtype=np.float32)
    for mode in ("only", "additive"):
        n = white_noise(x, snr_db, mode=mode, seed=2)
        assert np.isfinite(n).all()
        assert power(n) == pytest.approx(SILENT_REFERENCE_POWER / 10 ** (snr_db / 10), rel=1e-4)
    assert pytest.approx(0.005) == SILENT_REFERENCE_POWER
    assert noise_power(0.0, 0.0) == pytest.approx(0.005)
    assert noise_power(0.2, 10.0) == pytest.approx(0.02)


def test_bad_arguments():
    x = clip()
    with pytest.raises(TesoError, match="mode"):
        white_noise(x, 10.0, mode="replace")
    with pytest.raises(TesoError, match="snr_db"):
        white_noise(x, float("nan"))
    with pytest.raises(TesoError, match="no samples"):
        white_noise(np.zeros(0, dtype=np.float32), 10.0)
    with pytest.raises(TesoError, match="floating point"):
        mute(np.zeros(10, dtype=np.int16))
    bad = x.copy()
    bad[3] = np.inf
    with pytest.raises(TesoError, match="NaN or infinite"):
        white_noise(bad, 10.0)
