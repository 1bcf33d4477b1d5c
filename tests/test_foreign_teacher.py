"""A foreign teacher (Perch-like: waveform in, logits + embedding out) as ONNX and TF SavedModel.

The tiny models compute logits = [mean x, mean |x|, mean x^2] @ W + b, so every mapped
score is checked against numpy; their classes partly overlap the tiny taxonomy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from birdclef.core.errors import InferenceError
from birdclef.inference.foreign import describe
from birdclef.inference.foreign_runners import import_tensorflow
from birdclef.inference.loading import load_model
from birdclef.inference.predict import decode
from birdclef.inference.teacher import UNSCORED
from birdclef.tasks import pseudo_label
from tests.conftest import SR, compose_cfg

W = np.array(
    [[3.0, -1.0, 0.5, 2.0, -2.0], [1.0, 4.0, -3.0, 0.0, 1.5], [-2.0, 2.0, 6.0, 1.0, 0.5]],
    dtype=np.float32,
)
B = np.array([-0.5, 0.2, -1.0, 0.3, 0.0], dtype=np.float32)
WINDOW = 5 * SR


def names(taxonomy: pd.DataFrame) -> list[str]:
    """Model classes: taxonomy classes 2, 0 (other case, spaces) and 4, and two it lacks."""
    sci = taxonomy["scientific_name"].tolist()
    return [sci[2], "Turdus merula", f"  {sci[0].upper()} ", "Parus major", sci[4]]


MAPPED = {2: 0, 0: 2, 4: 4}  # taxonomy class -> model output


def features(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return np.stack([x.mean(1), np.abs(x).mean(1), (x**2).mean(1)], axis=1)


def expected(x: np.ndarray, n_classes: int) -> np.ndarray:
    """Mapped sigmoid scores of windows [B, samples], NaN for the classes the model lacks."""
    scores = 1.0 / (1.0 + np.exp(-(features(x) @ W + B)))
    out = np.full((len(x), n_classes), np.nan)
    for c, i in MAPPED.items():
        out[:, c] = scores[:, i]
    return out


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.from_numpy(W))
        self.register_buffer("b", torch.from_numpy(B))

    def forward(self, waveform):
        feats = torch.stack(
            [waveform.mean(1), waveform.abs().mean(1), waveform.pow(2).mean(1)], dim=1
        )
        return feats, feats @ self.w + self.b  # embedding first: the logits are output 1


@pytest.fixture(scope="module")
def foreign(tiny_root, tmp_path_factory):
    """(tiny.onnx, tiny SavedModel folder, labels.csv) of the same model."""
    folder = tmp_path_factory.mktemp("foreign")
    onnx_path = folder / "tiny.onnx"
    torch.onnx.export(
        Tiny(), (torch.zeros(2, WINDOW),), str(onnx_path), input_names=["waveform"],
        output_names=["embedding", "logits"], dynamo=False,
        dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "embedding": {0: "batch"}, "logits": {0: "batch"}},
    )  # fmt: skip
    tf = import_tensorflow(1)

    class Serve(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveform")])
        def serve(self, waveform):
            x = tf.cast(waveform, tf.float32)
            feats = tf.stack(
                [tf.reduce_mean(x, 1), tf.reduce_mean(tf.abs(x), 1), tf.reduce_mean(x * x, 1)], 1
            )
            return {"logits": feats @ tf.constant(W) + tf.constant(B), "embedding": feats}

    module = Serve()
    saved = folder / "tiny_saved"
    tf.saved_model.save(module, str(saved), signatures={"serving_default": module.serve})
    taxonomy = pd.read_csv(tiny_root / "taxonomy.csv")
    labels = folder / "labels.csv"
    labels.write_text("".join(f"{n}\n" for n in names(taxonomy)))
    return onnx_path, saved, labels


def description(tmp_path, model, labels, taxonomy, **settings):
    base = {"sample_rate": SR, "input_seconds": 5.0, "output": "logits", "activation": "sigmoid"}
    path = tmp_path / f"{model.name}.json"
    path.write_text(pd.Series(describe(model, labels, taxonomy, {**base, **settings})).to_json())
    return path


def test_onnx_and_saved_model_map_columns_by_scientific_name(foreign, tiny_root, tmp_path):
    onnx_path, saved, labels = foreign
    taxonomy = tiny_root / "taxonomy.csv"
    primary = pd.read_csv(taxonomy)["primary_label"].tolist()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, WINDOW)) * [[0.1], [0.5], [1.0]]).astype(np.float32)
    want = expected(x, len(primary))
    models = [
        load_model(description(tmp_path, onnx_path, labels, taxonomy)),  # by name
        load_model(
            description(tmp_path, saved, labels, taxonomy, output=1, batch_size=2)
        ),  # sorted
    ]
    for model in models:
        assert model.classes == primary and model.sample_rate == SR
        assert model.missing == [primary[c] for c in (1, 3, 5)]
        frames = model.frames(x.reshape(-1))
        assert frames.shape == (3 * WINDOW, 1) and model.window_frames == WINDOW
        scores, frame_scores = model.predict(x[:, None, :])
        assert frame_scores is None and scores.dtype == np.float32
        np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-6)  # NaN where want is NaN
    # a labels file with a header line; 2-s model windows: the max over 3 spread windows of 2 s
    header = tmp_path / "header.csv"
    header.write_text("scientific_name\n" + labels.read_text())
    short = load_model(description(tmp_path, onnx_path, header, taxonomy, input_seconds=2.0))
    n = 2 * SR
    starts = np.linspace(0, WINDOW - n, 3).round().astype(int)
    pieces = np.stack([expected(x[:, s : s + n], len(primary)) for s in starts])
    np.testing.assert_allclose(short.predict(x[:, None, :])[0], pieces.max(axis=0), rtol=1e-5)
    # softmax over all five model classes, then mapped
    soft = load_model(description(tmp_path, onnx_path, labels, taxonomy, activation="softmax"))
    z = features(x) @ W + B
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(soft.predict(x[:, None, :])[0][:, 0], p[:, 2], rtol=1e-5)


def _pseudo(tiny_root, tmp_path, name, *overrides):
    cfg = compose_cfg(
        "task=pseudo_label", f"data.root={tiny_root}", "teacher.workers=1",
        f"teacher.output={tmp_path / name}", *overrides, tmp=tmp_path,
    )  # fmt: skip
    return pseudo_label.run(cfg), pd.read_csv(tmp_path / name / "pseudo_labels.csv")


def test_pseudo_labels_of_a_foreign_teacher_alone_and_blended(
    foreign, tiny_root, tiny_checkpoint, tmp_path
):
    onnx_path, saved, labels = foreign
    primary = pd.read_csv(tiny_root / "taxonomy.csv")["primary_label"].tolist()
    scape = sorted((tiny_root / "train_soundscapes").glob("*.ogg"))[0]
    wave = decode(scape, SR)
    rows = -(-len(wave) // WINDOW)
    x = np.zeros((rows, WINDOW), np.float32)
    x.reshape(-1)[: len(wave)] = wave
    want = np.nan_to_num(expected(x, len(primary)), nan=UNSCORED)
    foreign_cfg = (f"teacher.foreign.labels={labels}", "teacher.foreign.output=logits")
    metrics, alone = _pseudo(tiny_root, tmp_path, "alone", f"teacher.models=[{onnx_path}]", *foreign_cfg)  # fmt: skip
    assert metrics["pseudo/unscored_classes"] == 3 and metrics["pseudo/rows"] == rows == 6
    np.testing.assert_allclose(alone[primary].to_numpy(), want, rtol=1e-5, atol=1e-6)
    assert 0.0 <= metrics["pseudo/auc"] <= 1.0  # the tiny set's train soundscape has truth
    # the SavedModel gives the same labels (logits are its output 1, sorted by name)
    _, saved_labels = _pseudo(
        tiny_root, tmp_path, "saved", f"teacher.models=[{saved}]", *foreign_cfg[:1],
        "teacher.foreign.output=1",
    )  # fmt: skip
    np.testing.assert_allclose(saved_labels[primary].to_numpy(), want, rtol=1e-5, atol=1e-6)
    # blended with a project model: mean where both score, the project model alone elsewhere
    _, own = _pseudo(tiny_root, tmp_path, "own", f"teacher.models=[{tiny_checkpoint}]")
    metrics, mixed = _pseudo(
        tiny_root, tmp_path, "mixed", f"teacher.models=[{tiny_checkpoint},{onnx_path}]", *foreign_cfg
    )  # fmt: skip
    assert metrics["pseudo/unscored_classes"] == 0
    both = own[primary].to_numpy().copy()
    for c in MAPPED:
        both[:, c] = (both[:, c] + want[:, c]) / 2
    np.testing.assert_allclose(mixed[primary].to_numpy(), both, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "mixed" / "foreign" / "1_tiny.json").is_file()


def test_foreign_teacher_errors(foreign, tiny_root, tmp_path):
    onnx_path, _, labels = foreign
    taxonomy = tiny_root / "taxonomy.csv"
    models = f"teacher.models=[{onnx_path}]"
    with pytest.raises(InferenceError, match="teacher.foreign.labels"):
        _pseudo(tiny_root, tmp_path, "a", models)
    with pytest.raises(InferenceError, match="activation"):
        _pseudo(tiny_root, tmp_path, "b", models, f"teacher.foreign.labels={labels}", "teacher.foreign.activation=relu")  # fmt: skip
    with pytest.raises(InferenceError, match=r"outputs \['embedding', 'logits'\]"):
        load_model(description(tmp_path, onnx_path, labels, taxonomy, output="label"))
    short = tmp_path / "short.csv"
    short.write_text("a\nb\n")
    model = load_model(description(tmp_path, onnx_path, short, taxonomy))
    with pytest.raises(
        InferenceError, match="outputs 5 classes but teacher.foreign.labels lists 2"
    ):
        model.predict(np.zeros((1, 1, WINDOW), np.float32))
