"""Signal synthesis for the synthetic dataset: species calls, voices, noise.

Every class gets a fixed "voice print" (frequency band, note shape, harmonics,
rhythm) drawn by taxon: birds whistle and trill, frogs pulse, insects buzz,
mammals grunt and howl low with many harmonics. Each rendering adds small
individual variation, so a class is recognisable but never byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TAXA = ("Aves", "Amphibia", "Insecta", "Mammalia")
SHAPES = ("up", "down", "flat", "arch", "trill")


@dataclass(frozen=True)
class VoicePrint:
    """A class's call: `notes` notes of `note_s` seconds, `gap_s` apart, per phrase."""

    taxon: str
    f0: float  # Hz, start frequency of the fundamental
    sweep: float  # relative frequency change over a note (0.3 = +30 %)
    shape: str  # one of SHAPES
    harmonics: tuple[float, ...]  # amplitude of harmonic 2, 3, ...
    note_s: float  # s
    gap_s: float  # s
    notes: int
    pulse_hz: float  # amplitude pulsing (frogs, insects); 0 = none
    phrase_every_s: float  # s, mean spacing between phrases


def draw_voiceprint(taxon: str, band: float, rng: np.random.Generator) -> VoicePrint:
    """A random voice print for `taxon`; `band` in [0, 1) places it within the taxon's range."""
    jitter = rng.uniform(-0.04, 0.04)
    position = float(np.clip(band + jitter, 0.0, 0.999))
    if taxon == "Aves":
        f0 = 1500 * (7500 / 1500) ** position
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        return VoicePrint(taxon, f0, rng.uniform(0.15, 0.5) * rng.choice([-1, 1]), shape,
                          tuple(rng.uniform(0, 0.5, int(rng.integers(0, 3)))), rng.uniform(0.06, 0.4),
                          rng.uniform(0.03, 0.25), int(rng.integers(1, 7)), 0.0, rng.uniform(1.0, 3.5))  # fmt: skip
    if taxon == "Amphibia":
        f0 = 500 * (4000 / 500) ** position
        return VoicePrint(taxon, f0, rng.uniform(-0.1, 0.1), "flat", tuple(rng.uniform(0.2, 0.6, 2)),
                          rng.uniform(0.2, 1.2), rng.uniform(0.2, 0.8), int(rng.integers(1, 4)),
                          rng.uniform(8, 40), rng.uniform(1.0, 3.0))  # fmt: skip
    if taxon == "Insecta":
        f0 = 4000 * (12000 / 4000) ** position
        return VoicePrint(taxon, f0, rng.uniform(-0.03, 0.03), "flat", (), rng.uniform(0.8, 3.0),
                          rng.uniform(0.1, 0.5), int(rng.integers(1, 3)), rng.uniform(40, 250),
                          rng.uniform(0.5, 2.0))  # fmt: skip
    if taxon == "Mammalia":
        f0 = 150 * (900 / 150) ** position
        return VoicePrint(taxon, f0, rng.uniform(-0.4, 0.4), str(rng.choice(["arch", "down", "up"])),
                          tuple(0.8 ** np.arange(1, 8)), rng.uniform(0.4, 1.6), rng.uniform(0.2, 0.6),
                          int(rng.integers(1, 4)), 0.0, rng.uniform(2.0, 5.0))  # fmt: skip
    raise ValueError(f"unknown taxon {taxon!r}; expected one of {TAXA}")


def _contour(shape: str, n: int, sweep: float) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    if shape == "up":
        return 1 + abs(sweep) * t
    if shape == "down":
        return 1 + abs(sweep) * (1 - t)
    if shape == "arch":
        return 1 + sweep * np.sin(np.pi * t)
    if shape == "trill":
        return 1 + 0.5 * abs(sweep) * np.sin(2 * np.pi * 12 * t)
    return 1 + sweep * t


def render_note(vp: VoicePrint, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One note with individual variation (+-5 % pitch, +-15 % length), peak amplitude 1."""
    length = max(16, int(vp.note_s * rng.uniform(0.85, 1.15) * sample_rate))
    freq = vp.f0 * rng.uniform(0.95, 1.05) * _contour(vp.shape, length, vp.sweep)
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    wave = np.sin(phase)
    for k, amp in enumerate(vp.harmonics, start=2):
        if vp.f0 * k * 1.5 < sample_rate / 2:
            wave += amp * np.sin(k * phase)
    envelope = np.sin(np.pi * np.linspace(0, 1, length)) ** 0.5
    if vp.pulse_hz > 0:
        t = np.arange(length) / sample_rate
        envelope = envelope * (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * vp.pulse_hz * t))) ** 2
    wave *= envelope
    return (wave / (np.abs(wave).max() + 1e-9)).astype(np.float32)


def render_phrase(vp: VoicePrint, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    parts = []
    for _ in range(vp.notes):
        parts.append(render_note(vp, sample_rate, rng))
        parts.append(np.zeros(int(vp.gap_s * rng.uniform(0.8, 1.2) * sample_rate), np.float32))
    return np.concatenate(parts[:-1]) if len(parts) > 1 else parts[0]


def colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1] if n > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n)
    return (noise / (noise.std() + 1e-12)).astype(np.float32)


def render_voice(seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A speech-like segment: a low voiced pitch with harmonics, syllable envelope and formants."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = rng.uniform(90, 220) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    formants = rng.uniform([400, 1100, 2300], [800, 1800, 3000])
    wave = np.zeros(n)
    for k in range(1, 25):
        weight = sum(np.exp(-((((k * f0) - f) / 150.0) ** 2)) for f in formants) + 0.05
        wave += weight * np.sin(k * phase) / k**0.5
    syllables = (
        np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None) ** 0.7
    )
    wave = wave * syllables
    return (wave / (np.abs(wave).max() + 1e-9)).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))
