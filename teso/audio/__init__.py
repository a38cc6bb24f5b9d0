"""Audio: decoding to 16 kHz mono, the VGGish log-mel front end, VGGish, audio-control perturbations.

See docs/audio.md for the resampler, the per-second padding rule and the noise dB convention.
"""

from teso.audio.io import load_audio, resample
from teso.audio.logmel import (
    log_mel_examples,
    log_mel_spectrogram,
    mel_matrix,
    per_second_examples,
    per_second_waveforms,
)
from teso.audio.perturb import mute, noise_power, white_noise
from teso.audio.vggish import VGGish

__all__ = [
    "VGGish",
    "load_audio",
    "log_mel_examples",
    "log_mel_spectrogram",
    "mel_matrix",
    "mute",
    "noise_power",
    "per_second_examples",
    "per_second_waveforms",
    "resample",
    "white_noise",
]
