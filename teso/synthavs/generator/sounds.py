"""Procedural sounds of the SynthAVS categories, one second at a time (16 kHz, float32).

Each audible category has its own generator with a distinct time-frequency signature, so that a
small CNN on VGGish log-mel examples can tell them apart (see ``Category.sound`` for the recipe of
each). An object keeps its voice (pitch, timbre) for the whole clip: :func:`object_voice` draws it
once, :func:`sounding_second` draws what happens within one second. A second of clip audio is the
sum of its sounding objects plus a quiet, seeded noise floor (:func:`mix_second`).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

SR = 16000
TARGET_RMS = 0.08  # each sounding object, before its random gain
NOISE_RMS = 0.004  # the background noise floor (about -48 dBFS)
OFFSCREEN_GAIN = 0.35  # v2: an off-screen source sounds about 9 dB under an on-screen one


def object_voice(category: str, rng: np.random.Generator) -> dict:
    """Per-object constants: pitch, timbre, rate. Drawn once per object and clip."""
    return {
        "f0": float(rng.uniform(0, 1)),  # position in the category's pitch range
        "gain": float(rng.uniform(0.7, 1.3)),
        "rate": float(rng.uniform(0, 1)),  # position in the category's event-rate range
    }


def family_voice(category: str, rng: np.random.Generator) -> dict:
    """SynthAVS v2: an object's voice drawn from its *family's* pool. The recipe (``as``) is that of a
    family member chosen uniformly, whatever the object's own category, so that the members of a
    family sound alike by construction: from the audio alone they are told apart at chance."""
    from teso.synthavs.generator.categories import FAMILIES, FAMILY_OF

    voice = object_voice(category, rng)
    members = FAMILIES[FAMILY_OF[category]]
    voice["as"] = members[int(rng.integers(len(members)))]
    return voice


def _t(n: int = SR) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / SR


def _place(out: np.ndarray, sig: np.ndarray, start: int) -> None:
    end = min(len(out), start + len(sig))
    if start < end:
        out[start:end] += sig[: end - start]


def _onsets(rng: np.random.Generator, k: int, span: float = 0.85) -> np.ndarray:
    return np.sort(rng.uniform(0.0, span, size=k) * SR).astype(int)


def _guitar(v: dict, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(SR)
    for start in _onsets(rng, int(rng.integers(2, 5))):
        f = 110 * 3 ** ((v["f0"] + rng.uniform(0, 0.4)) / 1.4)  # 110-330 Hz
        period = max(2, int(round(SR / f)))
        n = SR - start
        # Karplus-Strong, one period per step: each period is the decayed average of the last one.
        buf = rng.uniform(-1, 1, period)
        blocks = []
        for _ in range(n // period + 1):
            blocks.append(buf)
            buf = 0.996 * 0.5 * (buf + np.roll(buf, 1))
        _place(out, np.concatenate(blocks)[:n], start)
    return out


def _piano(v: dict, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(SR)
    for start in _onsets(rng, int(rng.integers(1, 3)), span=0.6):
        f = 196 * 2 ** (v["f0"] * 1.5 + rng.integers(0, 5) / 12)  # ~200-650 Hz
        n = SR - start
        t = _t(n)
        note = np.zeros(n)
        for k in range(1, 9):
            fk = k * f * np.sqrt(1 + 0.0004 * k * k)  # stiff-string inharmonicity
            if fk > 7000:
                break
            note += np.sin(2 * np.pi * fk * t) * np.exp(-t * (1.5 + 0.8 * k)) / k
        _place(out, note * np.minimum(1, t / 0.004), start)
    return out


def _dog(v: dict, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(SR)
    for start in _onsets(rng, int(rng.integers(1, 4)), span=0.75):
        n = int(rng.uniform(0.12, 0.22) * SR)
        t = _t(n)
        f_hi = 450 + 200 * v["f0"]
        f = f_hi * (1 - 0.45 * t / t[-1])  # falling pitch
        phase = 2 * np.pi * np.cumsum(f) / SR
        bark = sum(np.sin(k * phase) / k**0.7 for k in range(1, 7))
        bark = bark + 0.6 * rng.normal(size=n) * np.abs(np.sin(phase))  # rough, breathy
        _place(out, bark * np.clip(np.sin(np.pi * t / t[-1]), 0, None) ** 0.5, start)
    return out


def _bird(v: dict, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(SR)
    for start in _onsets(rng, int(rng.integers(3, 7)), span=0.9):
        n = int(rng.uniform(0.04, 0.09) * SR)
        t = _t(n)
        f_lo = 2000 + 1500 * v["f0"]
        f_hi = f_lo + rng.uniform(1000, 2500)
        f = f_lo + (f_hi - f_lo) * (t / t[-1]) ** rng.uniform(0.5, 2)
        if rng.random() < 0.5:
            f = f[::-1]
        _place(out, np.sin(2 * np.pi * np.cumsum(f) / SR) * np.sin(np.pi * t / t[-1]), start)
    return out


def _car(v: dict, rng: np.random.Generator) -> np.ndarray:
    t = _t()
    f0 = 30 + 30 * v["f0"]
    hum = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.28)) / k for k in range(1, 11))
    am = 1 + 0.5 * np.sin(2 * np.pi * (f0 / 2) * t)  # firing-rate modulation
    rumble = lfilter([0.02], [1, -0.98], rng.normal(size=SR))  # low-passed noise
    return hum * am + 3 * rumble


def _siren(v: dict, rng: np.random.Generator) -> np.ndarray:
    t = _t()
    if v["rate"] < 0.5:  # wail: a slow sinusoidal sweep
        f = 600 + 900 * (0.5 + 0.5 * np.sin(2 * np.pi * (0.7 + v["rate"]) * t + rng.uniform(0, 6.28)))
    else:  # hi-lo: two alternating tones
        f = np.where((t * (1.5 + v["rate"]) + rng.uniform()) % 1 < 0.5, 900, 1400).astype(float)
    phase = 2 * np.pi * np.cumsum(f) / SR
    return np.sin(phase) + 0.4 * np.sin(2 * phase) + 0.2 * np.sin(3 * phase)


def _voice(v: dict, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    out = np.zeros(SR)
    f0 = lo + (hi - lo) * v["f0"]
    vowels = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410)]
    for start in _onsets(rng, int(rng.integers(2, 5)), span=0.8):
        n = int(rng.uniform(0.12, 0.25) * SR)
        t = _t(n)
        pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)) * (1 + 0.01 * rng.normal(size=n))
        phase = np.cumsum(pitch) / SR
        pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal period
        syl = np.zeros(n)
        for fc, bw in zip(vowels[int(rng.integers(len(vowels)))], (80, 100, 120)):
            r = np.exp(-np.pi * bw / SR)
            syl += lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * fc / SR), r * r], pulses)
        _place(out, syl * np.sin(np.pi * t / t[-1]), start)
    return out


def _drum(v: dict, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(SR)
    for start in _onsets(rng, int(rng.integers(2, 5)), span=0.85):
        n = int(0.3 * SR)
        t = _t(n)
        f = (60 + 60 * v["f0"]) * (1 + 1.5 * np.exp(-t / 0.03))  # pitch falls after the strike
        tone = np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t / 0.12)
        noise = rng.normal(size=n) * np.exp(-t / 0.015) * 0.7
        _place(out, tone + noise, start)
    return out


def _clock(v: dict, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(SR)
    k = 1 + int(v["rate"] >= 0.5)
    for i, start in enumerate((np.arange(k) / k * SR + rng.uniform(0, 0.1) * SR).astype(int)):
        n = int(0.012 * SR)
        fc = (2500 if i % 2 == 0 else 3400) + 400 * v["f0"]
        r = np.exp(-np.pi * 300 / SR)
        click = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * fc / SR), r * r], rng.normal(size=n))
        _place(out, click * np.exp(-_t(n) / 0.003) * 8, start)
    return out


GENERATORS = {
    "guitar": _guitar,
    "piano": _piano,
    "dog": _dog,
    "bird": _bird,
    "car": _car,
    "emergency-car": _siren,
    "man": lambda v, rng: _voice(v, rng, 90, 140),
    "woman": lambda v, rng: _voice(v, rng, 170, 260),
    "drum": _drum,
    "clock": _clock,
}


def sounding_second(category: str, voice: dict, rng: np.random.Generator) -> np.ndarray:
    """One second [16000] of ``category`` sounding, at RMS ``TARGET_RMS * voice['gain']`` unless
    that would put its peak above 0.45 (sparse sounds such as ticks are limited by their peak)."""
    sig = GENERATORS[voice.get("as", category)](voice, rng)
    rms = float(np.sqrt(np.mean(sig**2)))
    peak = float(np.abs(sig).max())
    scale = min(TARGET_RMS * voice["gain"] / max(rms, 1e-9), 0.45 / max(peak, 1e-9))
    return (sig * scale).astype(np.float32)


def noise_floor(rng: np.random.Generator, n: int = SR) -> np.ndarray:
    """Quiet, slightly low-passed noise: the room, so a silent second is never digital silence."""
    noise = lfilter([1.0], [1, -0.6], rng.normal(size=n))
    return (noise / np.sqrt(np.mean(noise**2)) * NOISE_RMS).astype(np.float32)


def mix_second(parts: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The audio of one second: its sounding objects plus the noise floor, scaled down only if the
    sum would clip."""
    out = noise_floor(rng)
    for p in parts:
        out = out + p
    peak = float(np.abs(out).max())
    return out * (0.99 / peak) if peak > 0.99 else out
