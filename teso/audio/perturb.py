"""Audio-control perturbations (SPEC section 7, paper Table 4): silence and white Gaussian noise.

dB convention (the paper does not state one): for a clip with power
``P_signal = mean(x ** 2)`` over the whole waveform passed, the noise has power
``P_noise = P_signal / 10 ** (snr_db / 10)``. The realised noise is rescaled so that its mean square
equals ``P_noise`` exactly, so the stated SNR is the measured one. A silent clip (``P_signal == 0``)
uses the reference power of a -20 dBFS full-scale sine, ``0.5 * 10 ** (-20 / 10) = 0.005``, in place
of ``P_signal`` (never NaN, never a silent "noise").
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from teso.errors import TesoError

SILENT_REFERENCE_POWER = 0.5 * 10.0 ** (-20.0 / 10.0)  # -20 dBFS sine: 0.005
NOISE_MODES = ("only", "additive")

Wave = TypeVar("Wave", np.ndarray, Tensor)


def _check_wave(waveform: object) -> None:
    if isinstance(waveform, np.ndarray):
        if not np.issubdtype(waveform.dtype, np.floating):
            raise TesoError(f"waveform must be floating point, got numpy dtype {waveform.dtype}")
    elif isinstance(waveform, Tensor):
        if not waveform.is_floating_point():
            raise TesoError(f"waveform must be floating point, got {waveform.dtype}")
    else:
        raise TesoError(f"waveform must be a numpy array or torch tensor, got {type(waveform).__name__}")
    numel = waveform.size if isinstance(waveform, np.ndarray) else waveform.numel()
    if numel == 0:
        raise TesoError("waveform has no samples; expected a clip of audio to perturb")


def mute(waveform: Wave) -> Wave:
    """Silence: an all-zero waveform of the same shape, dtype, type (numpy / torch) and device."""
    _check_wave(waveform)
    if isinstance(waveform, Tensor):
        return torch.zeros_like(waveform)
    return np.zeros_like(waveform)


def noise_power(signal_power: float, snr_db: float) -> float:
    """``P_noise = P_ref / 10 ** (snr_db / 10)`` with ``P_ref = signal_power``, or the -20 dBFS
    reference power when ``signal_power`` is 0."""
    reference = signal_power if signal_power > 0.0 else SILENT_REFERENCE_POWER
    return reference / 10.0 ** (snr_db / 10.0)


def white_noise(waveform: Wave, snr_db: float, *, mode: str = "only", seed: int = 0) -> Wave:
    """White Gaussian noise at ``snr_db`` relative to the clip, seeded.

    Args:
        waveform: one clip, any shape (``[N]``, ``[S, sample_rate]`` ...); its power is the mean
            square over the whole array, so per-second rows of a clip share one noise level.
        snr_db: signal-to-noise ratio in dB (see the module docstring for the convention).
        mode: ``"only"`` returns the noise alone, replacing the audio (paper Table 4 "WGN-only");
            ``"additive"`` returns ``waveform + noise``.
        seed: noise from ``numpy.random.Generator(PCG64(seed))``: the same seed gives the same
            samples on every platform and device.

    Returns:
        Same shape, dtype, type and device as ``waveform``.
    """
    _check_wave(waveform)
    if mode not in NOISE_MODES:
        raise TesoError(f"mode must be one of {NOISE_MODES}, got {mode!r}")
    snr_db = float(snr_db)
    if not np.isfinite(snr_db):
        raise TesoError(f"snr_db must be a finite number of dB, got {snr_db!r}")
    if isinstance(waveform, Tensor):
        x = waveform.detach().to("cpu", torch.float64).numpy()
    else:
        x = waveform.astype(np.float64)
    if not np.isfinite(x).all():
        raise TesoError("waveform contains NaN or infinite samples")
    target = noise_power(float(np.mean(x**2)), snr_db)
    noise = np.random.Generator(np.random.PCG64(seed)).standard_normal(x.shape)
    realised = float(np.mean(noise**2))
    if realised == 0.0:  # only possible for a one-sample clip drawing exactly 0.0
        raise TesoError("cannot scale white noise for a one-sample clip drawing zero; use a longer clip")
    noise *= np.sqrt(target / realised)
    out = noise if mode == "only" else x + noise
    if isinstance(waveform, Tensor):
        return torch.from_numpy(out).to(device=waveform.device, dtype=waveform.dtype)
    return out.astype(waveform.dtype, copy=False)
