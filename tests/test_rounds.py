"""task=rounds: the chain of steps, its folders and lineage, resume, and one real round (slow)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from omegaconf import OmegaConf

from birdclef.core.errors import ConfigError
from birdclef.core.io import write_json, write_text
from birdclef.tasks import rounds
from tests.conftest import fast_cfg


def _cfg(tiny_root, tmp_path, *overrides):
    return fast_cfg(tiny_root, "task=rounds", "teacher.workers=1", *overrides, tmp=tmp_path)


@pytest.fixture
def fake_steps(monkeypatch):
    """train and pseudo_label replaced by stubs that leave what the real ones leave, and a log."""
    calls = []

    def train(cfg, extra_metrics=None):
        out = rounds.Path(cfg.paths.output_dir)
        write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        r = extra_metrics["round/index"]
        write_text(out / rounds.BEST, f"student of round {r}, call {len(calls)}")
        metrics = {"val/auc": 0.6 + r / 10, "test/soundscape_auc": 0.5 + r / 10, **extra_metrics}
        write_json(out / "metrics.json", metrics)
        calls.append(("train", r, cfg.data.pseudo.labels))
        return metrics

    def pseudo(cfg, planned=None):
        out, target = rounds.Path(cfg.paths.output_dir), rounds.Path(cfg.teacher.output)
        p = planned if planned is not None else rounds.pseudo_label.plan(cfg)  # as the real one
        assert p["target"] == target and p["key"] == target.name
        write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        write_text(target / "pseudo_labels.csv", "row_id\n")
        metrics = {"pseudo/auc": 0.8, "pseudo/rows": 6}
        write_json(out / "metrics.json", metrics)
        calls.append(("pseudo", list(cfg.teacher.models), target.name))
        return metrics

    def distill(cfg, extra_metrics=None):
        metrics = train(cfg, extra_metrics)
        calls[-1] = ("distill", *calls[-1][1:], list(cfg.teacher.models), cfg.task.fn)
        return metrics

    monkeypatch.setattr(rounds.train_task, "run", train)
    monkeypatch.setattr(rounds.distill_task, "run", distill)
    monkeypatch.setattr(rounds.pseudo_label, "run", pseudo)
    return calls


def _chain(out, fake_steps, k):
    """Round r's checkpoint path (r < k), the labellers' keys and round r's labels (r >= 1)."""
    ckpt = [str(out / f"round_{r}" / "train" / rounds.BEST) for r in range(k)]
    keys = [c[2] for c in fake_steps if c[0] == "pseudo"]
    labels = [str(out / f"round_{r}" / "pseudo_label" / keys[r - 1] / "pseudo_labels.csv") for r in (1, 2)]  # fmt: skip
    return ckpt, keys, labels


def test_rounds_chain_students_into_teachers_and_record_lineage(
    tiny_root, tmp_path, fake_steps, monkeypatch
):
    cfg = _cfg(tiny_root, tmp_path, "task.k=2")
    before = OmegaConf.to_yaml(cfg)
    plans, plan = [], rounds.pseudo_label.plan
    monkeypatch.setattr(rounds.pseudo_label, "plan", lambda c: plans.append(c) or plan(c))
    metrics = rounds.run(cfg)
    assert len(plans) == 2  # one plan per round (it reads the models), reused by the job
    assert OmegaConf.to_yaml(cfg) == before  # the given config is never changed
    out = tmp_path / "out"
    ckpt, keys, labels = _chain(out, fake_steps, 3)
    assert fake_steps == [
        ("train", 0, None),
        ("pseudo", [ckpt[0]], keys[0]),
        ("train", 1, labels[0]),
        ("pseudo", [ckpt[1]], keys[1]),
        ("train", 2, labels[1]),
    ]
    assert keys[0] != keys[1]
    table = metrics["rounds"]
    assert [r["round"] for r in table] == [0, 1, 2]
    assert [r["teacher"] for r in table] == ["", ckpt[0], ckpt[1]]
    assert [r["pseudo_labels"] for r in table] == ["", *labels]
    assert [r["test/soundscape_auc"] for r in table] == pytest.approx([0.5, 0.6, 0.7])
    assert metrics["test/soundscape_auc"] == pytest.approx(0.7) and metrics["rounds/k"] == 2
    assert metrics["rounds/supervised_test_auc"] == pytest.approx(0.5)
    assert json.loads((out / "metrics.json").read_text())["rounds"][2]["pseudo/auc"] == 0.8
    assert pd.read_csv(out / "rounds.csv")["teacher_key"].fillna("").tolist() == ["", *keys]
    student = json.loads((out / "round_2" / "train" / "metrics.json").read_text())
    assert student["round/teacher"] == [ckpt[1]] and student["round/teacher_key"] == keys[1]
    assert student["round/pseudo_labels"] == labels[1] and student["round/pseudo_auc"] == 0.8
    step_cfg = OmegaConf.load(out / "round_1" / "train" / "config.yaml")
    assert "rounds" not in step_cfg and step_cfg.task.fn == rounds.TRAIN_FN

    # a rerun runs nothing; raising k runs only the new round
    fake_steps.clear()
    assert rounds.run(cfg)["rounds"] == table
    assert fake_steps == []
    rounds.run(_cfg(tiny_root, tmp_path, "task.k=3"))
    assert [c[:2] for c in fake_steps] == [("pseudo", [ckpt[2]]), ("train", 3)]

    # a new round-1 student (its checkpoint changed) makes every later step run again
    fake_steps.clear()
    (out / "round_1" / "train" / "metrics.json").unlink()
    rounds.run(_cfg(tiny_root, tmp_path, "task.k=3"))
    assert [c[:2] for c in fake_steps] == [
        ("train", 1), ("pseudo", [ckpt[1]]), ("train", 2), ("pseudo", [ckpt[2]]), ("train", 3)
    ]  # fmt: skip
    assert fake_steps[1][2] != keys[1]


def test_extra_teachers_blend_with_each_student(tiny_root, tmp_path, fake_steps):
    other = tmp_path / "other.ckpt"  # only stamped here: the stub does not load it
    other.write_text("x")
    rounds.run(_cfg(tiny_root, tmp_path, "task.k=1", f"teacher.models=[{other}]"))
    student = str(tmp_path / "out" / "round_0" / "train" / rounds.BEST)
    assert fake_steps[1][:2] == ("pseudo", [student, str(other)])


def test_distilled_rounds_learn_from_the_last_student_online(tiny_root, tmp_path, fake_steps):
    """task.distill=true: round r >= 1 runs task=distill with round r-1's student as the
    teacher and its labels as data.pseudo.labels; round 0 stays supervised."""
    other = tmp_path / "other.ckpt"  # an extra labeller: it blends into the labels, not into KD
    other.write_text("x")
    rounds.run(
        _cfg(
            tiny_root,
            tmp_path,
            "task.k=2",
            "task.distill=true",
            "augment=none",
            f"teacher.models=[{other}]",
        )  # fmt: skip
    )
    ckpt, keys, labels = _chain(tmp_path / "out", fake_steps, 2)
    assert fake_steps == [
        ("train", 0, None),
        ("pseudo", [ckpt[0], str(other)], keys[0]),
        ("distill", 1, labels[0], [ckpt[0]], rounds.DISTILL_FN),
        ("pseudo", [ckpt[1], str(other)], keys[1]),
        ("distill", 2, labels[1], [ckpt[1]], rounds.DISTILL_FN),
    ]


def test_rounds_errors(tiny_root, tmp_path):
    with pytest.raises(ConfigError, match="task.k"):
        rounds.run(_cfg(tiny_root, tmp_path, "task.k=-1"))
    with pytest.raises(ConfigError, match="ckpt_path"):
        rounds.run(_cfg(tiny_root, tmp_path, "ckpt_path=x.ckpt"))
    with pytest.raises(ConfigError, match="teacher.shards=1"):
        rounds.run(_cfg(tiny_root, tmp_path, "teacher.shards=2"))
    # the default MelCNN's mixup, refused before round 0 trains
    with pytest.raises(ConfigError, match="mixup_p=0.5 mixes windows.*augment=none"):
        rounds.run(_cfg(tiny_root, tmp_path, "task.distill=true"))
    assert not (tmp_path / "out" / "round_0").exists()


@pytest.mark.slow
def test_one_real_round_on_the_tiny_set(tiny_root, tmp_path):
    cfg = _cfg(tiny_root, tmp_path, "task.k=1", "data.pseudo.power=2")
    metrics = rounds.run(cfg)
    out = tmp_path / "out"
    r1 = json.loads((out / "round_1" / "train" / "metrics.json").read_text())
    labels = out / "round_1" / "pseudo_label" / r1["round/teacher_key"] / "pseudo_labels.csv"
    assert r1["round/pseudo_labels"] == str(labels) and labels.is_file()
    assert r1["round/teacher"] == [str(out / "round_0" / "train" / rounds.BEST)]
    assert 0 <= r1["round/pseudo_auc"] <= 1 and r1["round/pseudo_rows"] == 6
    assert metrics["test/soundscape_auc"] == r1["test/soundscape_auc"]
    stamp = (out / "round_1" / "train" / rounds.BEST).stat().st_mtime_ns
    assert rounds.run(cfg)["rounds"] == metrics["rounds"]  # resumed: nothing trains again
    assert (out / "round_1" / "train" / rounds.BEST).stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_one_real_distilled_round_on_the_tiny_set(tiny_root, tmp_path):
    cfg = _cfg(
        tiny_root, tmp_path, "task.k=1", "task.distill=true", "augment=none", "data.pseudo.power=2"
    )
    rounds.run(cfg)
    r1 = json.loads((tmp_path / "out" / "round_1" / "train" / "metrics.json").read_text())
    teacher = str(tmp_path / "out" / "round_0" / "train" / rounds.BEST)
    assert r1["distill/teacher"] == teacher and r1["distill/teachers"] == 1.0
    assert r1["round/teacher"] == [teacher] and r1["round/index"] == 1
    assert 0 <= r1["test/soundscape_auc"] <= 1
