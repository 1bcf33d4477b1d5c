"""Knowledge distillation (task=distill): teacher features, the KD loss, the student checkpoint."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from birdclef.data.frontend import MelFrontend
from birdclef.errors import ConfigError
from birdclef.modules.classifier import Classifier
from birdclef.modules.distill import Distiller
from birdclef.tasks.distill import run
from birdclef.tasks.train import build_datamodule
from tests.conftest import compose_cfg

TINY = ("data.cache_workers=0", "data.batch_size=16", "trainer.max_epochs=1", "model.channels=[8,16]")  # fmt: skip


def _cfg(tiny_root, tmp_path, teacher, *overrides):
    return compose_cfg(
        f"data.root={tiny_root}", "task=distill", f"teacher.models=[{teacher}]", *TINY, *overrides,
        tmp=tmp_path,
    )  # fmt: skip


def _distiller(teacher: Classifier, loss=None, output_names=None, **kw) -> Distiller:
    loss = loss or dict(teacher.hparams["loss"])
    names = output_names or teacher.output_names
    return Distiller(
        teacher.hparams["net"], loss, teacher.hparams["optim"], teacher.classes, names,
        teacher=teacher, **kw,
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


def test_teacher_features_follow_the_window(tiny_root, tmp_path):
    cfg = compose_cfg(f"data.root={tiny_root}", "data.cache_workers=0", tmp=tmp_path)
    for crop in ("fixed", "random"):  # same front end: the teacher sees exactly the same crop
        dm = build_datamodule(
            compose_cfg(f"data.root={tiny_root}", "data.cache_workers=0", f"data.crop={crop}",
                        tmp=tmp_path),
            teacher_frontend=MelFrontend(32000),
        )  # fmt: skip
        dm.prepare_data()
        dm.setup("fit")
        torch.manual_seed(0)
        for i in range(len(dm.train_set)):
            item = dm.train_set[i]
            assert torch.equal(item["teacher_features"], item["features"])
        assert "teacher_features" not in dm.val_set[0]
    # a teacher with twice the hop: half the frames, starting at the nearest teacher frame
    coarse = MelFrontend(32000, hop_length=1000)
    dm = build_datamodule(cfg, teacher_frontend=coarse)
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
    with pytest.raises(ConfigError, match=r"\.onnx"):
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
    """Two fold teachers (data.folds=2): each training window carries a mask of the teachers
    whose run did not train on its recording, and the student trains with it."""
    teachers = []
    for k in (0, 1):
        out = tmp_path / f"fold{k}"
        from birdclef.tasks.train import run as train

        train(compose_cfg(
            f"data.root={tiny_root}", *TINY, "data.folds=2", f"data.fold={k}", "seed=3",
            tmp=out,
        ))  # fmt: skip
        teachers.append(out / "out" / "checkpoints" / "best.ckpt")
    splits = [pd.read_csv(t.parent.parent / "split.csv") for t in teachers]
    held = [set(s.loc[s["split"] == "val", "filename"]) for s in splits]
    assert held[0].isdisjoint(held[1]) and held[0] | held[1] == set(splits[0]["filename"])
    cfg = _cfg(tiny_root, tmp_path, ",".join(map(str, teachers)), "teacher.cross_fit=true")
    from birdclef.tasks.distill import trained_on

    dm = build_datamodule(
        cfg, teacher_frontend=MelFrontend(32000), teacher_trained_on=[trained_on(t) for t in teachers]
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
