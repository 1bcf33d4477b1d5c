"""Render one synthetic recording or soundscape and the events placed in it."""

from __future__ import annotations

import numpy as np

from birdclef.data.synthetic.calls import colored_noise, render_phrase, render_voice, rms
from birdclef.data.synthetic.speech import render_speech

SILENCE_GAIN = 0.1  # noise kept in a silent stretch (-20 dB)
EDGE = 0.1  # s kept free at window edges in soundscapes


def _add(signal: np.ndarray, piece: np.ndarray, start: int, gain: float) -> int:
    """Mix `piece` into `signal` at `start`; returns the samples actually written."""
    end = min(len(signal), start + len(piece))
    if end <= start:
        return 0
    signal[start:end] += gain * piece[: end - start]
    return end - start


def render_recording(job: dict, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """A train_audio recording: calls of the primary (and secondary) species over noise,
    with an optional spoken introduction and silent stretch."""
    sr, seconds, name = job["sample_rate"], job["seconds"], job["filename"]
    n = max(1, int(seconds * sr))
    signal = np.zeros(n, np.float32)
    events: list[dict] = []
    intro, (quiet_start, quiet_len) = job["intro_s"], job["silence"]
    quiet_end = quiet_start + quiet_len

    def place(label: str, start_s: float, gain: float, kind: str) -> float:
        phrase = render_phrase(job["voiceprints"][label], sr, rng)
        written = _add(signal, phrase, int(start_s * sr), gain)
        if written:
            events.append(
                {
                    "filename": name,
                    "start": round(start_s, 3),
                    "end": round(start_s + written / sr, 3),
                    "kind": kind,
                    "label": label,
                }
            )
        return len(phrase) / sr

    primary = job["voiceprints"][job["primary_label"]]
    t = intro + rng.uniform(0.0, min(0.5, seconds / 4))
    while t < seconds:
        if quiet_len and quiet_start - 0.5 < t < quiet_end:
            t = quiet_end + rng.uniform(0.0, 0.5)
            continue
        t += place(
            job["primary_label"], t, rng.uniform(0.6, 1.0), "call"
        ) + primary.phrase_every_s * rng.uniform(0.5, 1.5)
    if not any(e["kind"] == "call" for e in events):
        place(job["primary_label"], 0.0, 1.0, "call")
    for label in job["audible_secondary"]:
        for _ in range(int(rng.integers(1, 4))):
            start = rng.uniform(intro, max(intro, seconds - 0.5))
            if not (quiet_len and quiet_start <= start < quiet_end):
                place(label, start, rng.uniform(0.25, 0.5), "secondary")

    level = rms(signal[np.abs(signal) > 1e-4]) if np.any(np.abs(signal) > 1e-4) else 0.1
    noise = colored_noise(n, rng.uniform(0.5, 1.8), rng) * level / 10 ** (job["snr_db"] / 20)
    if quiet_len:
        noise[int(quiet_start * sr) : int(quiet_end * sr)] *= SILENCE_GAIN
        signal[int(quiet_start * sr) : int(quiet_end * sr)] = 0.0
        events.append(
            {
                "filename": name,
                "start": round(quiet_start, 3),
                "end": round(quiet_end, 3),
                "kind": "silence",
                "label": "",
            }
        )
    if intro:
        speech = (
            render_speech(intro, sr, rng)
            if job.get("voice") == "espeak"
            else render_voice(intro, sr, rng)
        )
        _add(signal, speech, 0, level * rng.uniform(1.0, 2.0))
        events.append(
            {"filename": name, "start": 0.0, "end": round(intro, 3), "kind": "voice", "label": ""}
        )
    audio = signal + noise
    audio *= rng.uniform(0.3, 0.9) / (np.abs(audio).max() + 1e-9)
    return audio.astype(np.float32), sorted(events, key=lambda e: e["start"])


def render_soundscape(job: dict, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """A 1-minute field recording: several species active in some windows over background."""
    sr, window_s = job["sample_rate"], job["window_seconds"]
    n_windows = job["seconds"] // window_s
    n = job["seconds"] * sr
    signal = np.zeros(n, np.float32)
    events = []
    for label in job["species"]:
        active = rng.random(n_windows) < rng.uniform(0.25, 0.75)
        active[rng.integers(n_windows)] = True
        gain = rng.uniform(0.4, 1.0)
        for w in np.flatnonzero(active):
            phrase = render_phrase(job["voiceprints"][label], sr, rng)[
                : int((window_s - 2 * EDGE) * sr)
            ]
            room = window_s - 2 * EDGE - len(phrase) / sr
            start = w * window_s + EDGE + rng.uniform(0.0, max(room, 0.0))
            _add(signal, phrase, int(start * sr), gain * rng.uniform(0.7, 1.0))
            events.append(
                {"filename": job["stem"], "window_end": int((w + 1) * window_s), "label": label}
            )
    level = rms(signal[np.abs(signal) > 1e-4]) if np.any(np.abs(signal) > 1e-4) else 0.1
    snr = rng.uniform(*job["snr_db"])
    noise = colored_noise(n, rng.uniform(1.0, 2.0), rng) * level / 10 ** (snr / 20)
    audio = signal + noise
    audio *= rng.uniform(0.3, 0.8) / (np.abs(audio).max() + 1e-9)
    return audio.astype(np.float32), events
