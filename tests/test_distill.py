"""Knowledge distillation (task=distill): teacher features, the KD loss, the student checkpoint."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from birdclef.core.activations import activate
from birdclef.core.errors import ConfigError
from birdclef.data.frontend import MelFrontend
from birdclef.data.teacher_inputs import TeacherInputs
from birdclef.modules.classifier import Classifier
from birdclef.modules.distill import Distiller
from birdclef.modules.exported_teacher import HIGH, LOW, ExportedTeacher
from birdclef.tasks.distill import recorded_auc, run, trained_on
from birdclef.tasks.train import build_datamodule
from tests.conftest import compose_cfg, fast_cfg, train_cfg

NO_MIXUP = "augment=none"  # distillation refuses augments that mix windows
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


def _cfg(tiny_root, tmp_path, teacher, *overrides):
    return fast_cfg(
        tiny_root, "task=distill", f"teacher.models=[{teacher}]", NO_MIXUP, *overrides, tmp=tmp_path
    )


def _distiller(
    teacher: Classifier, loss=None, output_names=None, teacher_override=None, **kw
) -> Distiller:
    """A student like `teacher` (its net, loss, classes), taught by it or by `teacher_override`."""
    loss = loss or dict(teacher.hparams["loss"])
    names = output_names or teacher.output_names
    return Distiller(
        teacher.hparams["net"], loss, teacher.hparams["optim"], teacher.classes, names,
        teacher=teacher_override or teacher, **kw,
    )  # fmt: skip


def test_distill_run_writes_a_plain_student(tiny_root, tiny_checkpoint, tmp_path):
    metrics = run(_cfg(tiny_root, tmp_path, tiny_checkpoint))
    assert metrics["distill/teacher"] == str(tiny_checkpoint)
    assert (metrics["distill/temperature"], metrics["distill/kd_weight"]) == (2.0, 0.7)
    for key in ("test/soundscape_auc", "model/params", "infer/cpu_ms_per_window", "train/kd_loss"):
        assert math.isfinite(metrics[key]), key
    ckpt = tmp_path / "out" / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert not [k for k in state["state_dict"] if not k.startswith("net.")]
    assert set(state["hyper_parameters"]) == {
        "net", "loss", "optim", "classes", "output_names", "frontend"
    }  # fmt: skip
    student = Classifier.from_checkpoint(ckpt)
    assert type(student) is Classifier
    from birdclef.inference.torch_backend import load_checkpoint

    graph, meta = load_checkpoint(ckpt)
    assert meta["classes"] == student.classes


def test_kd_loss_by_hand(tiny_checkpoint):
    teacher = Classifier.from_checkpoint(tiny_checkpoint)
    assert teacher.output_names[-1] == "null" and len(teacher.output_names) == 7
    model = _distiller(teacher, temperature=2.0, kd_weight=0.5)
    # teacher scores at T=2: 1/8 on each class, 1/4 on null; the student is uniform (1/7)
    t = 2.0 * torch.log(torch.tensor([[1, 1, 1, 1, 1, 1, 2.0]]) / 8)
    s = torch.zeros(1, 7)
    kl = 6 / 8 * math.log(7 / 8) + 1 / 4 * math.log(7 / 4)
    assert model.kd_loss(s, t).item() == pytest.approx(4 * kl, abs=1e-6)  # float32
    target = torch.eye(7)[:1]
    label = model.loss_fn(s, target)
    model._teacher_logits = t
    assert model._loss(s, target).item() == pytest.approx(0.5 * label.item() + 2 * kl, abs=1e-6)
    plain = _distiller(teacher, kd_weight=0.0)
    plain._teacher_logits = t
    assert torch.equal(plain._loss(s, target), plain.loss_fn(s, target))


def test_sigmoid_student_without_null(tiny_checkpoint):
    """A sigmoid student with no null column: BCE against the teacher's class scores."""
    teacher = Classifier.from_checkpoint(tiny_checkpoint)
    bce = {"_target_": "birdclef.modules.losses.BCELoss"}
    model = _distiller(teacher, loss=bce, output_names=teacher.classes, temperature=1.0)
    t = torch.log(torch.tensor([[1, 1, 1, 1, 1, 1, 4.0]]))  # softmax: 0.1 per class, 0.4 null
    q = model.teacher_targets(t)
    assert torch.allclose(q, torch.full((1, 6), 0.1))
    s = torch.zeros(1, 6)  # sigmoid 0.5: BCE = -(0.1 log 0.5 + 0.9 log 0.5) = log 2
    assert model.kd_loss(s, t).item() == pytest.approx(math.log(2), rel=1e-6)


def test_teacher_features_follow_the_window(cfg_train):
    cfg = cfg_train()
    for crop in ("fixed", "random"):  # same front end: the teacher sees exactly the same crop
        dm = build_datamodule(
            cfg_train(f"data.windows.crop={crop}"), teacher=TeacherInputs(MelFrontend(32000))
        )
        dm.prepare_data()
        dm.setup("fit")
        torch.manual_seed(0)
        for i in range(len(dm.train_set)):
            item = dm.train_set[i]
            assert torch.equal(item["teacher_features"], item["features"])
        assert "teacher_features" not in dm.val_set[0]
    # a teacher with twice the hop: half the frames, starting at the nearest teacher frame
    coarse = MelFrontend(32000, hop_length=1000)
    dm = build_datamodule(cfg, teacher=TeacherInputs(coarse))
    dm.prepare_data()
    dm.setup("fit")
    ts = dm.train_set
    assert ts.teacher.n_frames == ts.n_frames // 2 == 160
    for i in range(len(ts)):
        rec, start = int(ts.recording[i]), int(ts.start[i])
        frames = ts.teacher.frames.window(int(ts.teacher.recording[rec]), (start + 1) // 2, 160)
        assert torch.equal(ts[i]["teacher_features"], coarse.finish(frames).unsqueeze(0))


def test_distill_errors(tiny_root, tiny_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="needs a teacher"):
        run(compose_cfg(f"data.root={tiny_root}", "teacher.models=[]", tmp=tmp_path))
    onnx = tmp_path / "teacher.onnx"
    onnx.write_bytes(b"")
    with pytest.raises(
        ConfigError, match=r"teacher\.onnx cannot be read as an exported model.*task=export"
    ):
        run(_cfg(tiny_root, tmp_path, onnx))
    with pytest.raises(ConfigError, match="mixes windows"):
        run(_cfg(tiny_root, tmp_path, tiny_checkpoint, "augment=mixup"))
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    state["hyper_parameters"]["classes"][0] = "not_a_bird"
    other = tmp_path / "other.ckpt"
    torch.save(state, other)
    with pytest.raises(ConfigError, match="not_a_bird"):
        run(_cfg(tiny_root, tmp_path, other))
    # teachers must share one front end: their features are one batch key
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    state["hyper_parameters"]["frontend"]["hop_length"] = 1000
    coarse = tmp_path / "coarse.ckpt"
    torch.save(state, coarse)
    with pytest.raises(ConfigError, match="different front ends"):
        run(_cfg(tiny_root, tmp_path, f"{tiny_checkpoint},{coarse}"))
    # cross-fitting needs split.csv beside each teacher, and a teacher that did not train on
    # each of the student's training recordings
    with pytest.raises(ConfigError, match="split.csv"):
        run(_cfg(tiny_root, tmp_path, coarse, "teacher.cross_fit=true"))
    with pytest.raises(ConfigError, match="none can score them"):
        run(_cfg(tiny_root, tmp_path, tiny_checkpoint, "teacher.cross_fit=true"))


def test_several_teachers_average_and_the_mask_picks(tiny_checkpoint):
    teacher = Classifier.from_checkpoint(tiny_checkpoint)
    other = Classifier.from_checkpoint(tiny_checkpoint)
    model = Distiller(
        teacher.hparams["net"], dict(teacher.hparams["loss"]), teacher.hparams["optim"],
        teacher.classes, teacher.output_names, teacher=[teacher, other], temperature=1.0,
    )  # fmt: skip
    a = torch.log(torch.tensor([[1, 1, 1, 1, 1, 1, 4.0], [4, 1, 1, 1, 1, 1, 1.0]]))
    b = torch.log(torch.tensor([[1, 1, 1, 1, 1, 1, 1.0], [1, 1, 1, 1, 1, 1, 4.0]]))
    qa, qb = model.teacher_targets([a, a]), model.teacher_targets([b, b])
    assert torch.allclose(model.teacher_targets([a, b]), (qa + qb) / 2)
    mask = torch.tensor([[True, False], [False, True]])  # window 0: teacher 0; window 1: teacher 1
    picked = model.teacher_targets([a, b], mask)
    assert torch.allclose(picked[0], qa[0]) and torch.allclose(picked[1], qb[1])
    assert torch.allclose(qa[0], torch.tensor([0.1] * 6 + [0.4]))


def test_cross_fitted_teachers_teach_out_of_fold(tiny_root, tmp_path):
    """Two fold teachers (data.split.folds=2): each training window carries a mask of the teachers
    whose run did not train on its recording, and the student trains with it."""
    teachers = []
    for k in (0, 1):
        out = tmp_path / f"fold{k}"
        from birdclef.tasks.train import run as train

        train(fast_cfg(
            tiny_root, NO_MIXUP, "data.split.folds=2", f"data.split.fold={k}", "seed=3", tmp=out
        ))  # fmt: skip
        teachers.append(out / "out" / "checkpoints" / "best.ckpt")
    splits = [pd.read_csv(t.parent.parent / "split.csv") for t in teachers]
    held = [set(s.loc[s["split"] == "val", "filename"]) for s in splits]
    assert held[0].isdisjoint(held[1]) and held[0] | held[1] == set(splits[0]["filename"])
    cfg = _cfg(tiny_root, tmp_path, ",".join(map(str, teachers)), "teacher.cross_fit=true")

    dm = build_datamodule(
        cfg, teacher=TeacherInputs(MelFrontend(32000), [trained_on(t) for t in teachers])
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    files = dm.train_set.frames.index["file"].to_numpy()
    for i in range(len(dm.train_set)):
        f = files[int(dm.train_set.recording[i])]
        expected = [f not in trained_on(t) for t in teachers]
        assert dm.train_set[i]["teacher_mask"].tolist() == expected
        assert any(expected)
    metrics = run(cfg)
    assert (metrics["distill/teachers"], metrics["distill/cross_fit"]) == (2.0, 1.0)
    assert math.isfinite(metrics["train/kd_loss"]) and math.isfinite(metrics["test/soundscape_auc"])


# ---- exported teachers (task=export's .onnx / OpenVINO) -------------------------------------


@pytest.fixture(scope="module")
def exported(tiny_root, tiny_checkpoint, tmp_path_factory) -> Path:
    """task=export's folder for the tiny checkpoint: model_fp32.onnx (+ openvino/ if installed)."""
    from birdclef.tasks.export import run as export

    tmp = tmp_path_factory.mktemp("export")
    export(train_cfg(
        tiny_root, "task=export", f"task.model={tiny_checkpoint}", "task.int8=false",
        "task.check_windows=4", "task.calibration_windows=1", tmp=tmp,
    ))  # fmt: skip
    return tmp / "out" / "export"


def _restamped(source: Path, target: Path, edit) -> Path:
    """A copy of the exported `source` with its description edited (`edit(meta)`; None: none)."""
    import onnx

    proto = onnx.load(str(source))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["birdclef"])
    meta = edit(meta)
    del proto.metadata_props[:]
    if meta is not None:
        proto.metadata_props.add(key="birdclef", value=json.dumps(meta))
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(target))
    return target


class _Scores:
    """An exported model that outputs given scores, with the tiny export's description."""

    def __init__(self, meta: dict, scores) -> None:
        self.path, self.meta, self.classes = Path("stub.onnx"), meta, list(meta["classes"])
        self.frame_params, self.window_frames = meta["frame_params"], meta["window_frames"]
        self.scores = np.asarray(scores, dtype=np.float32)

    def predict(self, windows):
        return self.scores[: len(windows)], None


@pytest.mark.parametrize("name", ["model_fp32.onnx", "openvino"])
def test_exported_teacher_teaches_its_checkpoints_targets(
    name, exported, tiny_root, tiny_checkpoint
):
    if name == "openvino" and not HAS_OPENVINO:
        pytest.skip("openvino is not installed")
    from birdclef.models.quantize import sample_windows

    ckpt = Classifier.from_checkpoint(tiny_checkpoint)
    teacher = ExportedTeacher.load(exported / name)
    # the softmax export's dropped null column is restored, and it reads its checkpoint's features
    assert teacher.output_names == ckpt.output_names and teacher.activation == "softmax"
    frontend = instantiate(ckpt.hparams["frontend"])
    assert teacher.frontend().params() == frontend.params() and frontend.top_db == 80
    raw, _ = sample_windows(tiny_root, teacher.model.meta, 8, 1, seed=3)
    features = frontend.finish(torch.from_numpy(raw)).unsqueeze(1)  # as TeacherFrames gives them
    with torch.no_grad():
        z_ckpt = ckpt(features)
    z = teacher(features)
    assert z.shape == (8, 7) and z.dtype == torch.float32
    scores = activate(z_ckpt, "softmax")
    assert scores[:, :6].std() > 1e-3  # scores that differ between windows and classes
    torch.testing.assert_close(activate(z, "softmax"), scores, rtol=0, atol=1e-4)
    # the graph floors its input itself: floored frames and raw frames give the same logits
    torch.testing.assert_close(teacher(torch.from_numpy(raw)), z, rtol=0, atol=1e-5)
    for temperature in (1.0, 2.0, 5.0):
        kw = dict(temperature=temperature, kd_weight=0.5)
        expected = _distiller(ckpt, **kw).teacher_targets(z_ckpt)
        got = _distiller(ckpt, **kw, teacher_override=teacher).teacher_targets(z)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    with pytest.raises(ConfigError, match="takes windows of 320 frames, given 160"):
        teacher(features[..., :160])


def test_exported_scores_back_to_logits(exported, tiny_checkpoint):
    """Sigmoid: logit(p), clamped to float32; softmax without a recorded null: renormalised
    over the classes; with one: the leftover mass as the null column."""
    meta = ExportedTeacher.load(exported / "model_fp32.onnx").model.meta
    ckpt_like = Classifier.from_checkpoint(tiny_checkpoint)  # a softmax student with null
    p = [[0.0, 0.25, 0.5, 0.75, 1.0, 1e-3]]
    sigmoid = ExportedTeacher(_Scores({**meta, "activation": "sigmoid"}, p))
    assert sigmoid.output_names == meta["classes"]
    z = sigmoid(torch.zeros(1, 1, 128, 320))
    np.testing.assert_allclose(
        z.numpy()[0, 1:], [math.log(1 / 3), 0.0, math.log(3), math.log(HIGH / (1 - HIGH)),
                           math.log(1e-3 / (1 - 1e-3))], rtol=1e-5)  # fmt: skip
    assert z[0, 0] == pytest.approx(math.log(LOW), rel=1e-6) and 16 < z[0, 4] < 17
    p = np.array([[0.05, 0.05, 0.1, 0.1, 0.2, 0.1]])  # class scores; 0.4 left for null
    old = {k: v for k, v in meta.items() if k not in ("output_names", "frontend_params")}
    renormalised = ExportedTeacher(_Scores(old, p))
    assert renormalised.output_names == meta["classes"]
    assert renormalised.frontend().top_db is None  # unrecorded front end: raw dB frames
    student = _distiller(ckpt_like, temperature=2.0, teacher_override=renormalised)
    q = student.teacher_targets(renormalised(torch.zeros(1, 128, 320)))
    np.testing.assert_allclose(q.numpy()[0], [*np.sqrt(p[0]) / np.sqrt(p[0]).sum(), 0.0], atol=1e-6)
    with_null = ExportedTeacher(_Scores(meta, p))
    assert with_null.output_names == meta["output_names"] and with_null.frontend().top_db == 80
    student = _distiller(ckpt_like, temperature=2.0, teacher_override=with_null)
    q = student.teacher_targets(with_null(torch.zeros(1, 128, 320)))
    full = np.sqrt([*p[0], 0.4])
    np.testing.assert_allclose(q.numpy()[0], full / full.sum(), atol=1e-6)


def test_distill_run_with_an_onnx_teacher(tiny_root, tiny_checkpoint, exported, tmp_path):
    onnx = exported / "model_fp32.onnx"
    metrics = run(_cfg(tiny_root, tmp_path, onnx))
    assert metrics["distill/teacher"] == str(onnx) and metrics["distill/teachers"] == 1.0
    assert math.isfinite(metrics["train/kd_loss"]) and math.isfinite(metrics["test/soundscape_auc"])
    # the export records its checkpoint, whose run recorded its test AUC
    expected = recorded_auc(tiny_checkpoint)
    assert math.isfinite(expected) and metrics["distill/teacher_soundscape_auc"] == expected
    student = Classifier.from_checkpoint(tmp_path / "out" / "checkpoints" / "best.ckpt")
    assert type(student) is Classifier


def test_distill_run_with_mixed_teachers(tiny_root, tiny_checkpoint, exported, tmp_path):
    teachers = [tiny_checkpoint, exported / "model_fp32.onnx"]
    teachers += [exported / "openvino"] if HAS_OPENVINO else []
    metrics = run(_cfg(tiny_root, tmp_path, ",".join(map(str, teachers))))
    assert metrics["distill/teachers"] == float(len(teachers))
    assert math.isfinite(metrics["train/kd_loss"])
    assert metrics["distill/teacher_soundscape_auc"] == pytest.approx(recorded_auc(tiny_checkpoint))


def test_exported_teacher_errors(tiny_root, tiny_checkpoint, exported, tmp_path):
    onnx = exported / "model_fp32.onnx"
    with pytest.raises(ConfigError, match=r"missing\.onnx\] not found"):
        run(_cfg(tiny_root, tmp_path, tmp_path / "missing.onnx"))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\xfe not a model")
    with pytest.raises(ConfigError, match=r"garbage\.onnx cannot be read as an exported model"):
        run(_cfg(tiny_root, tmp_path, garbage))
    bare = _restamped(onnx, tmp_path / "bare.onnx", lambda meta: None)
    with pytest.raises(
        ConfigError, match=r"bare\.onnx has no 'birdclef' metadata.*task=pseudo_label"
    ):
        run(_cfg(tiny_root, tmp_path, bare))
    embeddings = _restamped(onnx, tmp_path / "emb.onnx", lambda m: {**m, "frame_params": {"kind": "BirdNETFrontend"}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"emb\.onnx reads 'BirdNETFrontend' frames.*log-mel"):
        run(_cfg(tiny_root, tmp_path, embeddings))
    silent = _restamped(onnx, tmp_path / "silent.onnx", lambda m: {**m, "activation": None})
    with pytest.raises(ConfigError, match=r"silent\.onnx does not record its activation"):
        run(_cfg(tiny_root, tmp_path, silent))
    saved_model = tmp_path / "perch"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"")
    description = tmp_path / "perch.json"
    description.write_text("{}")
    for foreign in (saved_model, description):
        with pytest.raises(ConfigError, match="another project.*data.pseudo.labels"):
            run(_cfg(tiny_root, tmp_path, foreign))
    with pytest.raises(ConfigError, match=r"takes windows of 320 frames \(5 s\).*give it 192"):
        run(_cfg(tiny_root, tmp_path, onnx, "window_seconds=3"))
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    state["hyper_parameters"]["frontend"]["top_db"] = 60
    floored = tmp_path / "run" / "checkpoints" / "floored.ckpt"
    floored.parent.mkdir(parents=True)
    torch.save(state, floored)
    with pytest.raises(
        ConfigError,
        match=r"different front ends \(MelFrontend and MelFrontend, differing in top_db\)",
    ):
        run(_cfg(tiny_root, tmp_path, f"{floored},{onnx}"))


def test_cross_fit_finds_an_exported_teachers_split(tiny_checkpoint, exported, tmp_path):
    """split.csv beside the export, else in the run of the checkpoint it was exported from."""
    seen = trained_on(tiny_checkpoint)
    assert seen and trained_on(exported / "model_fp32.onnx") == seen
    if HAS_OPENVINO:
        assert (
            trained_on(exported / "openvino")
            == trained_on(exported / "openvino" / "model.xml")
            == seen
        )
    moved = _restamped(
        exported / "model_fp32.onnx", tmp_path / "moved" / "model.onnx",
        lambda m: {**m, "source": str(tmp_path / "gone" / "checkpoints" / "best.ckpt")},
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"split\.csv.*copy the run's split\.csv beside"):
        trained_on(moved)
    assert math.isnan(recorded_auc(moved))
    shutil.copy(tiny_checkpoint.parent.parent / "split.csv", moved.parent / "split.csv")
    assert trained_on(moved) == seen
