"""The real detectors: Silero VAD on espeak-ng speech, a YAMNet-signature SavedModel via tensorflow_hub."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from birdclef.core.errors import ConfigError
from birdclef.data.curation.detectors import DETECTOR_RATE, SileroVad, YamnetDetector
from birdclef.data.synthetic.speech import render_speech
from tests.conftest import needs_espeak

# not importorskip: TensorFlow must come after torch and triton (import_tensorflow sees to it)
needs_tf = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_hub") is None, reason="pip install -e .[curation]"
)
KEEP = ["Bird", "Bird vocalization, bird call, bird song", "Insect", "Frog"]
SECONDS = 5 * DETECTOR_RATE


def whistle(seconds: float, freq: float = 3000.0) -> np.ndarray:
    t = np.arange(int(seconds * DETECTOR_RATE)) / DETECTOR_RATE
    notes = (np.sin(2 * np.pi * 2 * t) > 0).astype(np.float32)  # 4 notes a second
    return (
        0.4 * notes * np.sin(2 * np.pi * freq * (1 + 0.1 * np.sin(2 * np.pi * 8 * t)) * t)
    ).astype(np.float32)


@needs_espeak
@pytest.mark.skipif(
    importlib.util.find_spec("silero_vad") is None, reason="pip install -e .[curation]"
)
def test_silero_finds_espeak_speech_in_an_intro_and_not_in_calls():
    rng = np.random.default_rng(0)
    intro = render_speech(4.0, DETECTOR_RATE, rng)
    noise = 0.01 * rng.standard_normal(3 * SECONDS).astype(np.float32)
    audio = noise.copy()
    audio[: len(intro)] += 0.5 * intro  # window 0: 4 s of speech
    audio[SECONDS : 2 * SECONDS] += whistle(5)  # window 1: bird-like whistles; window 2: noise
    spans = [(0, SECONDS), (SECONDS, 2 * SECONDS), (2 * SECONDS, 3 * SECONDS)]
    scores = SileroVad().score(audio, spans)
    assert scores[0]["speech_s"] >= 2.0 and scores[0]["speech"] > 0.9
    assert scores[1]["speech_s"] <= 0.3 and scores[2]["speech_s"] == 0.0
    again = SileroVad().score(audio, spans)
    assert again == scores  # deterministic


@pytest.mark.skipif(
    importlib.util.find_spec("silero_vad") is None, reason="pip install -e .[curation]"
)
def test_silero_streams_side_by_side_equal_each_recording_alone(monkeypatch):
    import torch

    from birdclef.data.curation import detectors

    rng = np.random.default_rng(1)
    lengths = [0, 100, 512, 3 * SECONDS + 77, SECONDS, 2 * SECONDS + 511]
    audios = [
        (0.05 * rng.standard_normal(n)).astype(np.float32) + np.resize(whistle(3), n)
        for n in lengths
    ]
    vad = SileroVad()
    monkeypatch.setattr(detectors, "SILERO_STREAMS", 2)  # recordings one after another in a stream
    many = vad.frame_probs_many(audios)
    vad.load()
    for audio, probs in zip(audios, many, strict=True):
        assert len(probs) == -(-len(audio) // 512)
        if len(audio) >= 512:  # silero-vad's own loop: a frame per call, a recording at a time
            ref = vad.model.audio_forward(torch.from_numpy(audio), DETECTOR_RATE).numpy()[0]
            np.testing.assert_allclose(probs, ref, atol=1e-6)
        np.testing.assert_array_equal(vad.frame_probs(audio), probs)
    spans = [[(0, len(a))] if len(a) else [] for a in audios]
    assert vad.score_many(audios, spans) == [
        vad.score(a, s) for a, s in zip(audios, spans, strict=True)
    ]


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    if importlib.util.find_spec("tensorflow_hub") is None:
        pytest.skip("pip install -e .[curation]")
    from birdclef.data.curation.standin import write

    return write(tmp_path_factory.mktemp("yamnet") / "standin")


def test_yamnet_savedmodel_loads_through_tensorflow_hub_and_scores_windows(standin):
    import tensorflow_hub as hub

    model = hub.load(str(standin))
    scores, embeddings, log_mel = model(np.zeros(SECONDS, np.float32))
    assert scores.shape == (9, 521) and embeddings.shape == (9, 1024) and log_mel.shape == (498, 64)
    detector = YamnetDetector(str(standin), KEEP)
    detector.check()
    assert len(detector.names) == 521 and detector.names[106] == "Bird"
    audio = np.concatenate([whistle(5), np.zeros(SECONDS, np.float32)])
    bird, silence = detector.score(audio, [(0, SECONDS), (SECONDS, 2 * SECONDS)])
    assert bird["keep"] and bird["top1"] in KEEP and bird["keep_score"] > 0.9
    assert not silence["keep"] and silence["top1"] == "Silence" and silence["speech_s"] == 0.0
    assert set(bird) == {"top1", "top1_score", "top2", "top2_score", "top3", "top3_score",
                         "keep", "keep_score", "speech", "speech_s"}  # fmt: skip


def test_keep_list_names_are_checked_against_the_class_map(standin):
    with pytest.raises(ConfigError, match=r"filter.yamnet.keep names \['Birb', 'Frogs'\]"):
        YamnetDetector(str(standin), ["Bird", "Birb", "Frogs"]).check()


@needs_tf
def test_an_unloadable_model_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="could not be loaded as YAMNet.*local SavedModel"):
        YamnetDetector(str(tmp_path / "nothing"), KEEP).check()
