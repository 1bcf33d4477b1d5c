"""Window detectors: Silero VAD (speech) and YAMNet through TF-Hub (AudioSet classes, speech).

A detector scores the 5-s windows of one recording, given as 16-kHz audio and
(start, end) sample spans; it returns one dict of plain numbers and strings per
window. Both give `speech` (a probability) and `speech_s` (seconds of the window
judged speech), so the voice filter reads either. Models load lazily (`load`), in
the process that scores: a detector object pickles without its model into the
manifest's worker processes. TensorFlow is imported only here and only for YAMNet.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from birdclef.core.errors import ConfigError, InferenceError
from birdclef.inference.foreign_runners import import_tensorflow as tensorflow_on_threads

log = logging.getLogger(__name__)

DETECTOR_RATE = 16000  # Hz, both models' input rate
SILERO_CHUNK = 512  # samples per Silero frame at 16 kHz (32 ms)
SILERO_CONTEXT = 64  # samples of the previous frame Silero sees with each frame
SILERO_STREAMS = 32  # recordings run side by side (about 3x the frames/s of one on a core)
YAMNET_HOP_SECONDS = 0.48  # s between YAMNet's 0.96-s patches
SPEECH_CLASSES = (  # YAMNet display names counted as speech
    "Speech", "Child speech, kid speaking", "Conversation", "Narration, monologue", "Babbling",
    "Speech synthesizer", "Whispering",
)  # fmt: skip
TOP_K = 3  # top classes kept per window in the manifest


def import_tensorflow():
    """TensorFlow (after torch and triton: the other order crashes) and tensorflow_hub, quiet
    and on one thread, or one clear error."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        tf = tensorflow_on_threads(1)
        with warnings.catch_warnings():  # tensorflow_hub imports the deprecated pkg_resources
            warnings.simplefilter("ignore", UserWarning)
            import tensorflow_hub as hub
    except (ImportError, InferenceError) as err:
        raise ConfigError(
            f"filter.yamnet needs TensorFlow and tensorflow-hub ({err}); install them with "
            "`pip install -e .[curation]` or use filter=voice (Silero VAD)."
        ) from err
    return tf, hub


class SileroVad:
    """Silero VAD (ONNX, shipped in the silero-vad wheel): speech probability per 32-ms frame.

    Per window: `speech` = its highest frame probability, `speech_s` = seconds of
    frames at or above `threshold`.
    """

    name = "silero"

    def __init__(self, threshold: float = 0.5) -> None:
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"filter.vad_threshold={threshold} must be in (0, 1).")
        self.threshold = threshold
        self.model = None

    def params(self) -> dict:
        from importlib.metadata import version

        return {
            "detector": self.name,
            "version": version("silero-vad"),
            "threshold": self.threshold,
        }

    def check(self) -> None:
        if importlib.util.find_spec("silero_vad") is None:
            raise ConfigError(
                "the voice filter's default detector needs silero-vad: `pip install -e .[curation]` "
                "(or filter.speech=yamnet)."
            )

    def __getstate__(self):
        return {**self.__dict__, "model": None}

    def load(self) -> None:
        if self.model is None:
            import torch
            from silero_vad import load_silero_vad

            torch.set_num_threads(1)
            self.model = load_silero_vad(onnx=True)

    def frame_probs(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of each 512-sample frame of 16-kHz `audio`."""
        return self.frame_probs_many([audio])[0]

    def frame_probs_many(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """`frame_probs` of several recordings, run side by side as streams of one batch.

        Silero keeps a recurrent state (and 64 samples of context) per stream. Each of up to
        SILERO_STREAMS streams runs its recordings one after another, its state and context
        zeroed where a recording starts, so each recording gets exactly the probabilities it
        gets alone, and no stream waits on padding but at the very end. A call (one 32-ms
        frame) for 32 streams takes about 10x one for a single stream: 32 side by side score
        about 3x the audio per second on a core.
        """
        self.load()
        frames = np.array([-(-len(a) // SILERO_CHUNK) for a in audios], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(frames)])
        flat = np.zeros((int(offsets[-1]) + 1, SILERO_CHUNK), np.float32)  # last row: padding
        for a, start in zip(audios, offsets, strict=False):
            flat.reshape(-1)[start * SILERO_CHUNK : start * SILERO_CHUNK + len(a)] = a
        if frames.sum() == 0:
            return [np.zeros(0, np.float32) for _ in audios]
        # no more streams than keep busy while the longest recording runs: a wider call costs more
        streams = min(SILERO_STREAMS, -(-int(frames.sum()) // int(frames.max())))
        lanes: list[list[int]] = [[] for _ in range(streams)]  # longest first to the shortest lane
        load = np.zeros(streams, np.int64)
        for i in np.argsort(-frames, kind="stable"):
            if frames[i]:
                lane = int(np.argmin(load))
                lanes[lane].append(int(i))
                load[lane] += frames[i]
        pad = len(flat) - 1
        rows = np.full((streams, int(load.max())), pad, np.int64)  # flat's row of each step
        fresh = np.zeros(rows.shape, bool)  # a recording starts: zero the stream's memory
        for lane, members in enumerate(lanes):
            at = 0
            for i in members:
                rows[lane, at : at + frames[i]] = np.arange(offsets[i], offsets[i + 1])
                fresh[lane, at] = True
                at += frames[i]
        probs = np.zeros(len(flat), np.float32)
        state = np.zeros((2, streams, 128), np.float32)
        context = np.zeros((streams, SILERO_CONTEXT), np.float32)
        rate = np.array(DETECTOR_RATE, dtype=np.int64)
        session = self.model.session  # the onnxruntime session of silero-vad's OnnxWrapper
        for t in range(rows.shape[1]):
            state[:, fresh[:, t]] = 0.0
            context[fresh[:, t]] = 0.0
            chunk = np.concatenate([context, flat[rows[:, t]]], axis=1)
            out, state = session.run(None, {"input": chunk, "state": state, "sr": rate})
            probs[rows[:, t]] = out[:, 0]
            context = chunk[:, -SILERO_CONTEXT:]
        return [probs[offsets[i] : offsets[i + 1]].copy() for i in range(len(audios))]

    def score(self, audio: np.ndarray, spans: list[tuple[int, int]]) -> list[dict]:
        return self.score_many([audio], [spans])[0]

    def score_many(
        self, audios: list[np.ndarray], spans: list[list[tuple[int, int]]]
    ) -> list[list[dict]]:
        """`score` of several recordings, their frames computed as one batch of streams."""
        return [
            self._windows(probs, s)
            for probs, s in zip(self.frame_probs_many(audios), spans, strict=True)
        ]

    def _windows(self, probs: np.ndarray, spans: list[tuple[int, int]]) -> list[dict]:
        centres = (np.arange(len(probs)) + 0.5) * SILERO_CHUNK
        out = []
        for a, b in spans:
            inside = probs[(centres >= a) & (centres < b)]
            voiced = int((inside >= self.threshold).sum())
            out.append({
                "speech": round(float(inside.max()) if len(inside) else 0.0, 4),
                "speech_s": round(voiced * SILERO_CHUNK / DETECTOR_RATE, 3),
            })  # fmt: skip
        return out


def _folder_digest(path: Path) -> str:
    """A hash of a local SavedModel's files (names, sizes, times), so a replaced model re-scores."""
    stamp = sorted(
        (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in path.rglob("*")
        if p.is_file()
    )
    return hashlib.sha1(repr(stamp).encode()).hexdigest()[:12]


class YamnetDetector:
    """YAMNet (or any SavedModel with its signature) loaded with `tensorflow_hub.load`.

    `model` is a TF-Hub handle (downloaded when there is internet) or a local SavedModel
    folder. Per window: the `TOP_K` classes of the patch-mean scores (`top1`..`top3`
    and their scores), `keep` (one of them is in `keep`, the study's relevant classes),
    `keep_score` (the best patch-mean score of a `keep` class: the rescue rule's rank),
    `speech` (the highest patch score of a speech class) and `speech_s` (0.48 s per patch
    whose speech score reaches `speech_threshold`).
    """

    name = "yamnet"

    def __init__(self, model: str, keep: list[str], speech_threshold: float = 0.5) -> None:
        if not keep:
            raise ConfigError("filter.yamnet.keep is empty: list the YAMNet classes to keep.")
        self.handle, self.keep = str(model), list(keep)
        self.speech_threshold = speech_threshold
        self.model = None
        self.names: list[str] | None = None

    def params(self) -> dict:
        local = Path(self.handle).expanduser()
        model = f"{local.resolve()}@{_folder_digest(local)}" if local.is_dir() else self.handle
        return {
            "detector": self.name, "model": model, "keep": sorted(self.keep),
            "speech": list(SPEECH_CLASSES), "speech_threshold": self.speech_threshold, "top_k": TOP_K,
        }  # fmt: skip

    def __getstate__(self):
        return {**self.__dict__, "model": None}

    def load(self) -> None:
        if self.model is not None:
            return
        tf, hub = import_tensorflow()
        try:
            self.model = hub.load(self.handle)
            class_map = self.model.class_map_path().numpy().decode()
        except Exception as err:  # hub raises many kinds (no network, bad folder, no asset)
            raise ConfigError(
                f"filter.yamnet.model={self.handle} could not be loaded as YAMNet ({type(err).__name__}: "
                f"{str(err)[:200]}). Give a TF-Hub handle (needs internet) or a local SavedModel "
                "folder with YAMNet's signature and class_map_path() (see README, Data curation)."
            ) from err
        import pandas as pd

        self.names = pd.read_csv(tf.io.gfile.GFile(class_map))["display_name"].tolist()
        self._keep = np.array([n in set(self.keep) for n in self.names])
        self._speech = np.array([n in SPEECH_CLASSES for n in self.names])

    def check(self) -> None:
        """Load the model and refuse keep-list names its class map lacks (one error for all)."""
        self.load()
        unknown = [n for n in self.keep if n not in self.names]
        if unknown:
            raise ConfigError(
                f"filter.yamnet.keep names {unknown}, which are not YAMNet classes of "
                f"{self.handle}; use display names from its class map (e.g. 'Bird', 'Frog', "
                "'Insect'), spelled exactly."
            )

    def score(self, audio: np.ndarray, spans: list[tuple[int, int]]) -> list[dict]:
        import tensorflow as tf

        self.load()
        out = []
        for a, b in spans:
            wave = tf.constant(audio[a:b].astype(np.float32))
            scores = self.model(wave)[0].numpy()  # [patches, classes]
            mean = scores.mean(axis=0)
            top = np.argsort(-mean, kind="stable")[:TOP_K]
            speech = scores[:, self._speech].max(axis=1)
            row = {}
            for k, c in enumerate(top, start=1):
                row[f"top{k}"], row[f"top{k}_score"] = self.names[c], round(float(mean[c]), 4)
            row["keep"] = bool(self._keep[top].any())
            row["keep_score"] = round(float(mean[self._keep].max()), 4)
            row["speech"] = round(float(speech.max()), 4)
            voiced = int((speech >= self.speech_threshold).sum()) * YAMNET_HOP_SECONDS
            row["speech_s"] = round(min(voiced, (b - a) / DETECTOR_RATE), 3)
            out.append(row)
        return out
