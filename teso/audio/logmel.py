"""The VGGish log-mel front end, batched in torch, and its per-second split for AVS clips.

Algorithm (identical to the reference ``mel_features.py`` / ``vggish_input.py`` of VGGish):

1. resample to 16 kHz (:func:`teso.audio.io.resample`) when the input is at another rate;
2. frames of 400 samples (25 ms) every 160 samples (10 ms), no centring and no padding, so a
   signal of ``N`` samples gives ``1 + (N - 400) // 160`` frames;
3. periodic Hann window of length 400, zero-padded FFT of 512 points, magnitude ``|X|`` (not power);
4. 64 triangular mel bands on the HTK mel scale ``1127 ln(1 + f / 700)``, edges evenly spaced in mel
   from 125 Hz to 7500 Hz, weights evaluated at the 257 FFT bin frequencies, the DC bin's row zeroed;
5. ``log(mel + 0.01)`` (natural log);
6. non-overlapping examples of 96 frames (0.96 s), the incomplete tail dropped.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from teso.audio.io import resample
from teso.errors import TesoError

SAMPLE_RATE = 16000
WINDOW_LENGTH = 400  # 25 ms at 16 kHz
HOP_LENGTH = 160  # 10 ms at 16 kHz
FFT_LENGTH = 512  # next power of two above the window
NUM_MEL_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s per VGGish example
NUM_FFT_BINS = FFT_LENGTH // 2 + 1


def hertz_to_mel(frequencies_hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, ``1127 * ln(1 + f / 700)``, as VGGish uses it."""
    return 1127.0 * np.log1p(np.asarray(frequencies_hz, dtype=np.float64) / 700.0)


@functools.lru_cache(maxsize=1)
def _mel_matrix_f64() -> np.ndarray:
    bin_mel = hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2.0, NUM_FFT_BINS))
    edges = np.linspace(hertz_to_mel(MEL_MIN_HZ), hertz_to_mel(MEL_MAX_HZ), NUM_MEL_BANDS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    # Triangles evaluated at the bin frequencies in mel (not in Hz): that is VGGish's construction.
    rising = (bin_mel[:, None] - lower[None, :]) / (center - lower)[None, :]
    falling = (upper[None, :] - bin_mel[:, None]) / (upper - center)[None, :]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # VGGish zeroes the DC bin whatever the lower edge
    weights.setflags(write=False)
    return weights


def mel_matrix(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """The VGGish mel weight matrix ``[257, 64]`` (FFT bins x mel bands)."""
    return torch.tensor(_mel_matrix_f64(), dtype=dtype, device=device)


@functools.lru_cache(maxsize=8)
def _cached_constants(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    window = torch.hann_window(WINDOW_LENGTH, periodic=True, dtype=dtype, device=device)
    return window, mel_matrix(dtype, device)


def _as_waveform(waveform: np.ndarray | Tensor, name: str = "waveform") -> Tensor:
    """Float tensor ``[N]`` or ``[B, N]``; float64 stays float64, anything else becomes float32."""
    if isinstance(waveform, np.ndarray):
        if not np.issubdtype(waveform.dtype, np.floating):
            raise TesoError(
                f"{name} must be a floating-point waveform in [-1, 1], got numpy dtype {waveform.dtype}"
            )
        x = torch.from_numpy(np.ascontiguousarray(waveform))
    elif isinstance(waveform, Tensor):
        if not waveform.is_floating_point():
            raise TesoError(f"{name} must be a floating-point waveform in [-1, 1], got {waveform.dtype}")
        x = waveform
    else:
        raise TesoError(f"{name} must be a numpy array or torch tensor, got {type(waveform).__name__}")
    if x.dim() not in (1, 2):
        raise TesoError(f"{name} must have shape [N] or [B, N], got {tuple(x.shape)}")
    if x.dtype != torch.float64:
        x = x.to(torch.float32)
    return x


def _check_sample_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise TesoError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    return int(sample_rate)


def _to_16k(x: Tensor, sample_rate: int) -> Tensor:
    if sample_rate == SAMPLE_RATE:
        return x
    # Resampling runs in numpy (scipy polyphase, same as load_audio), so it is not differentiable.
    y = resample(x.detach().cpu().numpy(), sample_rate, SAMPLE_RATE)
    return torch.from_numpy(y).to(device=x.device, dtype=x.dtype)


def log_mel_spectrogram(waveform: np.ndarray | Tensor, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """VGGish log-mel frames: ``[N] -> [T, 64]`` or ``[B, N] -> [B, T, 64]``.

    ``T = 1 + (N16 - 400) // 160`` where ``N16`` is the length at 16 kHz (0 when ``N16 < 400``).
    """
    sample_rate = _check_sample_rate(sample_rate)
    x = _to_16k(_as_waveform(waveform), sample_rate)
    return _log_mel_frames(x)


def _log_mel_frames(x: Tensor, max_frames: int | None = None) -> Tensor:
    """``[..., N]`` at 16 kHz -> ``[..., T, 64]``; ``max_frames`` limits the work to the frames used."""
    n = x.shape[-1]
    num_frames = 1 + (n - WINDOW_LENGTH) // HOP_LENGTH if n >= WINDOW_LENGTH else 0
    if max_frames is not None:
        num_frames = min(num_frames, max_frames)
    if num_frames == 0:
        return x.new_zeros((*x.shape[:-1], 0, NUM_MEL_BANDS))
    x = x[..., : (num_frames - 1) * HOP_LENGTH + WINDOW_LENGTH]
    window, mel = _cached_constants(x.dtype, x.device)
    frames = x.unfold(-1, WINDOW_LENGTH, HOP_LENGTH)  # [..., T, 400], a strided view
    spectrum = torch.fft.rfft(frames * window, n=FFT_LENGTH, dim=-1).abs()  # [..., T, 257]
    return torch.log(spectrum @ mel + LOG_OFFSET)


def log_mel_examples(waveform: np.ndarray | Tensor, sample_rate: int) -> Tensor:
    """VGGish input examples from a waveform.

    Args:
        waveform: float samples in [-1, 1], ``[N]`` or a batch ``[B, N]`` (numpy or torch).
        sample_rate: rate of ``waveform`` in Hz; anything but 16000 is resampled first.

    Returns:
        ``[E, 1, 96, 64]`` for ``[N]`` input, ``[B, E, 1, 96, 64]`` for ``[B, N]`` input, where
        ``E = T // 96`` and ``T`` is the number of 25 ms / 10 ms frames (see
        :func:`log_mel_spectrogram`); the incomplete tail is dropped, so ``E`` can be 0.
        float32 (float64 input gives float64).
    """
    sample_rate = _check_sample_rate(sample_rate)
    x = _to_16k(_as_waveform(waveform), sample_rate)
    n = x.shape[-1]
    total_frames = 1 + (n - WINDOW_LENGTH) // HOP_LENGTH if n >= WINDOW_LENGTH else 0
    num_examples = total_frames // EXAMPLE_FRAMES
    frames = _log_mel_frames(x, max_frames=num_examples * EXAMPLE_FRAMES)  # [..., E*96, 64]
    return frames.reshape(*x.shape[:-1], num_examples, 1, EXAMPLE_FRAMES, NUM_MEL_BANDS)


def _check_seconds(seconds: int) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, np.integer)) or seconds < 1:
        raise TesoError(f"seconds must be an integer >= 1 (the clip length in seconds), got {seconds!r}")
    return int(seconds)


def _fit_to_seconds(x: Tensor, sample_rate: int, seconds: int) -> Tensor:
    """Zero-pad the end (or cut the end) of ``[..., N]`` to exactly ``seconds * sample_rate`` samples."""
    if x.shape[-1] == 0:
        raise TesoError("waveform has no samples: a clip needs audio (use teso.audio.mute for silence)")
    want = seconds * sample_rate
    n = x.shape[-1]
    if n < want:
        x = torch.nn.functional.pad(x, (0, want - n))
    return x[..., :want]


def per_second_examples(waveform: np.ndarray | Tensor, sample_rate: int, seconds: int) -> Tensor:
    """One VGGish example per second of a clip: ``[N] -> [S, 1, 96, 64]`` (``[B, N] -> [B, S, 1, 96, 64]``).

    AVSBench pairs second ``t`` of the audio with frame ``t``, so example ``t`` is computed from
    the 16 kHz samples ``[16000 t, 16000 (t + 1))`` alone: the first 96 of its 98 frames (it
    reads samples ``16000 t`` to ``16000 t + 15599``). Padding rule: after resampling to 16 kHz
    the waveform is zero-padded at the end to ``S`` seconds when shorter (the missing seconds are
    silence, ``log(0.01)`` everywhere) and cut at ``S`` seconds when longer.

    Raises:
        TesoError: ``seconds < 1`` or a waveform with 0 samples.
    """
    seconds = _check_seconds(seconds)
    sample_rate = _check_sample_rate(sample_rate)
    x = _as_waveform(waveform)
    if x.shape[-1] == 0:
        raise TesoError("waveform has no samples: a clip needs audio (use teso.audio.mute for silence)")
    x = _fit_to_seconds(_to_16k(x, sample_rate), SAMPLE_RATE, seconds)
    per_second = x.reshape(*x.shape[:-1], seconds, SAMPLE_RATE)  # [..., S, 16000]
    frames = _log_mel_frames(per_second, max_frames=EXAMPLE_FRAMES)  # [..., S, 96, 64]
    return frames.unsqueeze(-3)


def per_second_waveforms(waveform: np.ndarray | Tensor, sample_rate: int, seconds: int) -> Tensor:
    """The raw-waveform counterpart of :func:`per_second_examples`: ``[N] -> [S, sample_rate]``.

    No resampling: row ``t`` holds samples ``[sample_rate t, sample_rate (t + 1))``. Same padding
    rule (zero-pad the end to ``S`` seconds, cut beyond). ``[B, N]`` gives ``[B, S, sample_rate]``.

    Raises:
        TesoError: ``seconds < 1`` or a waveform with 0 samples.
    """
    seconds = _check_seconds(seconds)
    sample_rate = _check_sample_rate(sample_rate)
    x = _fit_to_seconds(_as_waveform(waveform), sample_rate, seconds)
    return x.reshape(*x.shape[:-1], seconds, sample_rate)
