"""A YAMNet stand-in: a small SavedModel with YAMNet's signature and class map, no learned weights.

The real YAMNet comes from TF-Hub, which needs internet. This stand-in lets the whole
path (tensorflow_hub.load, the class-map check, the manifest, the filter) run offline
and in tests. Like YAMNet it takes a float32 waveform [n] at 16 kHz and returns
(scores [patches, 521], embeddings [patches, 1024], log_mel [frames, 64]) for 0.96-s
patches every 0.48 s, and `class_map_path()` names a CSV `index,mid,display_name` of
YAMNet's 521 classes. Its scores are a hand-set rule on band energies, not a classifier:
    Silence      patch power below SILENCE_DB
    Speech       most power below 1 kHz, strongly modulated over time (syllables)
    Bird (vocalization), Animal   most power in 1.5-7.5 kHz
    Insect       most power above 4 kHz
    Noise        whatever scores none of these
Write one with `python -m birdclef.data.curation.standin <folder>` and use it with
`filter.yamnet.model=<folder>`.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from birdclef.data.curation.detectors import DETECTOR_RATE, import_tensorflow

CLASS_MAP = Path(__file__).with_name("yamnet_class_map.csv")
N_CLASSES, N_EMBEDDING, N_MELS = 521, 1024, 64
STFT_WINDOW, STFT_HOP, FFT = 400, 160, 512  # samples at 16 kHz (25 ms, 10 ms), as YAMNet
PATCH, PATCH_HOP = 96, 48  # log-mel frames per patch (0.96 s) and between patches (0.48 s)
MEL_LOW, MEL_HIGH = 125.0, 7500.0  # Hz
SILENCE_DB = -50.0  # dB (power of a full-scale sine = -3 dB): quieter patches are Silence
SPEECH_MODULATION_DB = 6.0  # dB, std over a patch of the low band's level: syllables
BASE_SCORE = 0.01  # every other class
# the classes the rule scores, by display name, and the rule's feature that drives each
RULE = {
    "Speech": "speech", "Narration, monologue": "speech", "Bird": "bird",
    "Bird vocalization, bird call, bird song": "bird", "Animal": "animal", "Insect": "insect",
    "Silence": "silence", "Noise": "noise",
}  # fmt: skip
FEATURES = ("speech", "bird", "animal", "insect", "silence", "noise")


def _projection(names: list[str]) -> np.ndarray:
    """[features, classes]: which class each rule feature scores."""
    out = np.zeros((len(FEATURES), len(names)), np.float32)
    for name, feature in RULE.items():
        out[FEATURES.index(feature), names.index(name)] = 1.0
    return out


def build(class_map: Path = CLASS_MAP):
    """The stand-in as a tf.Module (saved by `write`)."""
    import pandas as pd

    tf, _ = import_tensorflow()
    names = pd.read_csv(class_map)["display_name"].tolist()
    mel = tf.signal.linear_to_mel_weight_matrix(
        N_MELS, FFT // 2 + 1, DETECTOR_RATE, MEL_LOW, MEL_HIGH
    )
    edges = np.linspace(*(1127.0 * np.log1p(np.array([MEL_LOW, MEL_HIGH]) / 700.0)), N_MELS + 2)
    centres = 700.0 * np.expm1(edges[1:-1] / 1127.0)  # Hz, the mel bins' centres (HTK scale)

    def band(low: float, high: float):
        return tf.constant(((centres >= low) & (centres < high)).astype(np.float32))

    class Standin(tf.Module):
        def __init__(self):
            super().__init__()
            self.class_map = tf.saved_model.Asset(str(class_map))
            self.mel = tf.constant(mel)
            self.projection = tf.constant(_projection(names))
            self.low, self.birdband, self.high = band(0, 1000), band(1500, 7500), band(4000, 8000)

        @tf.function(input_signature=[])
        def class_map_path(self):
            return self.class_map.asset_path

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, waveform):
            short = tf.maximum(STFT_WINDOW + (PATCH - 1) * STFT_HOP - tf.shape(waveform)[0], 0)
            wave = tf.pad(waveform, [[0, short]])
            spec = tf.abs(tf.signal.stft(wave, STFT_WINDOW, STFT_HOP, FFT))
            power = tf.matmul(tf.square(spec), self.mel)  # [frames, mels]
            log_mel = tf.math.log(tf.sqrt(power) + 0.001)
            patches = tf.signal.frame(power, PATCH, PATCH_HOP, axis=0)  # [patches, 96, mels]
            total = tf.reduce_sum(patches, axis=-1) + 1e-12  # [patches, 96]
            level_db = 10.0 * tf.math.log(tf.reduce_mean(total, axis=1) / FFT**2 * 4) / np.log(10.0)

            def share(weights):
                return tf.reduce_sum(patches * weights, axis=[1, 2]) / tf.reduce_sum(total, axis=1)

            low_db = (
                10.0
                * tf.math.log(tf.reduce_sum(patches * self.low, axis=-1) + 1e-12)
                / np.log(10.0)
            )
            modulation = tf.math.reduce_std(low_db, axis=1)
            silence = tf.sigmoid((SILENCE_DB - level_db) / 2.0)
            sound = 1.0 - silence
            speech = (
                sound
                * tf.sigmoid((share(self.low) - 0.5) / 0.08)
                * tf.sigmoid((modulation - SPEECH_MODULATION_DB) / 1.5)
            )
            bird = sound * tf.sigmoid((share(self.birdband) - 0.5) / 0.08)
            insect = sound * tf.sigmoid((share(self.high) - 0.5) / 0.08)
            animal = 0.8 * tf.maximum(bird, insect)
            noise = sound * (1.0 - tf.reduce_max(tf.stack([speech, bird, insect]), axis=0))
            features = tf.stack([speech, bird, animal, insect, silence, noise], axis=1)
            scores = tf.maximum(tf.matmul(features, self.projection), BASE_SCORE)
            embeddings = tf.pad(features, [[0, 0], [0, N_EMBEDDING - len(FEATURES)]])
            return scores, embeddings, log_mel

    return Standin()


def write(folder: str | Path, class_map: Path = CLASS_MAP) -> Path:
    """Save the stand-in as a SavedModel folder (replacing one there) and return its path."""
    tf, _ = import_tensorflow()
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    module = build(class_map)
    tf.saved_model.save(module, str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="where to write the SavedModel")
    print(write(parser.parse_args().folder))
