"""Real spoken introductions for the synthetic recordings, rendered by espeak-ng (Debian package).

A recordist's intro ("Recording 4521. Screaming piha. Near Medellín, March 3rd, 6 am.") in
English or Spanish, a random espeak-ng voice variant, speed and pitch, all drawn from the
recording's seed, so the audio is the same on every run. Where espeak-ng is missing the
dataset falls back to the formant toy (`calls.render_voice`) and its folder says so
(`synth.voice` is part of the dataset's key).
"""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from birdclef.core.errors import ConfigError

ESPEAK = "espeak-ng"
VOICES = {"en": ("en", "en-us", "en-gb-scotland"), "es": ("es", "es-419")}
VARIANTS = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4")
WORDS = {
    "en": {
        "open": ("Recording", "Cut", "Track", "File"),
        "species": ("Screaming piha", "Rufous motmot", "Tropical kingbird", "Great kiskadee",
                    "Cane toad", "Howler monkey", "Unknown cicada", "Blue-gray tanager"),
        "place": ("near Medellín", "at the river station", "on the forest trail", "in the valley"),
        "when": ("March third, six a.m.", "June twelfth, dawn", "early morning", "late afternoon"),
        "extra": ("Singing from the canopy.", "Calling in response to playback.", "Two birds.",
                  "Distance about twenty meters.", "Microphone pointed up."),
    },
    "es": {
        "open": ("Grabación", "Corte", "Pista"),
        "species": ("Piha gritona", "Momoto rufo", "Bienteveo grande", "Sapo común", "Mono aullador"),
        "place": ("cerca de Medellín", "en la estación del río", "en el sendero del bosque"),
        "when": ("tres de marzo, seis de la mañana", "doce de junio, al amanecer", "por la tarde"),
        "extra": ("Canta desde el dosel.", "Dos individuos.", "A unos veinte metros."),
    },
}  # fmt: skip
PAUSE_SECONDS = (0.1, 0.4)  # s of silence between spoken sentences
FADE_SECONDS = 0.03  # s, fade-out where the intro is cut


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def intro_text(language: str, rng: np.random.Generator) -> str:
    w = WORDS[language]
    number = int(rng.integers(1, 9999))
    return (
        f"{_pick(rng, w['open'])} {number}. {_pick(rng, w['species'])}, {_pick(rng, w['place'])}, "
        f"{_pick(rng, w['when'])}. {_pick(rng, w['extra'])}"
    )


def speak(text: str, voice: str, speed: int, pitch: int, sample_rate: int) -> np.ndarray:
    """espeak-ng's rendering of `text` as float32 mono at `sample_rate`."""
    command = [ESPEAK, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text]
    done = subprocess.run(command, capture_output=True)
    if done.returncode != 0 or not done.stdout:
        raise ConfigError(
            f"espeak-ng failed for synth voice {voice!r} ({' '.join(command[:7])} ...): "
            f"{done.stderr.decode(errors='replace').strip() or 'no audio'}; check the voice "
            "(espeak-ng --voices lists them) or use synth=default."
        )
    wav = done.stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return AF.resample(torch.from_numpy(audio), rate, sample_rate).numpy()


def render_speech(seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """`seconds` of spoken intro (sentences until it is full, then cut), peak amplitude 1."""
    n = int(seconds * sample_rate)
    language = _pick(rng, tuple(VOICES))
    voice = f"{_pick(rng, VOICES[language])}+{_pick(rng, VARIANTS)}"
    speed, pitch = int(rng.integers(140, 200)), int(rng.integers(25, 75))
    parts, total = [], 0
    while total < n:
        speech = speak(intro_text(language, rng), voice, speed, pitch, sample_rate)
        pause = np.zeros(int(rng.uniform(*PAUSE_SECONDS) * sample_rate), np.float32)
        parts += [speech, pause]
        total += len(speech) + len(pause)
    out = np.concatenate(parts)[:n]
    fade = min(n, int(FADE_SECONDS * sample_rate))
    out[n - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return (out / (np.abs(out).max() + 1e-9)).astype(np.float32)
