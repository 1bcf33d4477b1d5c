"""task=evaluate: the fold discipline (the test never reaches a fold job), the bootstrap, resume."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from birdclef.analysis.intervals import bootstrap, interval, paired, point_estimate
from birdclef.core.metric import macro_auc
from birdclef.data import cache as cache_module
from birdclef.runs.recipes import CONF_DIR, compose_run
from birdclef.tasks import evaluate
from tests.conftest import compose_cfg

FLOOR_ONLY = "task.compare=[floor]"


def evaluate_cfg(root, tmp_path, *overrides):
    return compose_cfg(
        "task=evaluate", f"task.roots=[{root}]", "task.folds=2", "task.bootstrap=50",
        f"task.work={tmp_path / 'work'}", 'task.base=["data.cache.workers=0"]', *overrides,
        tmp=tmp_path,
    )  # fmt: skip


@pytest.fixture
def reads(monkeypatch):
    """Every file a frame cache decodes, in order."""
    seen = []
    original = cache_module.FrameCache.build

    def build(self, paths, *args, **kwargs):
        seen.extend(str(p) for p in paths)
        return original(self, paths, *args, **kwargs)

    monkeypatch.setattr(cache_module.FrameCache, "build", build)
    return seen


def test_fold_jobs_never_read_the_test_soundscapes(tiny_root, tmp_path, reads):
    cfg = evaluate_cfg(tiny_root, tmp_path, FLOOR_ONLY, "task.baseline=null", "task.test=false")
    evaluate.run(cfg)
    assert reads and not [p for p in reads if "test_soundscapes" in p]
    for job in evaluate.plan(cfg):
        assert {"monitor=null", "data.test=false"} <= set(job.overrides)
        split = pd.read_csv(job.folder / "split.csv")
        assert set(split["split"]) == {"train", "val"}  # every recording trains or is held out


@pytest.mark.slow
def test_the_test_labels_change_nothing_but_the_test_scores(tiny_root, tmp_path):
    """Two roots alike but for the test labels: identical OOF rows and the same fold models."""
    other = tmp_path / "other_root"
    shutil.copytree(tiny_root, other)
    labels = other / "test_soundscapes" / "soundscape_labels.csv"
    solution = pd.read_csv(labels, dtype={"row_id": str})
    classes = [c for c in solution.columns if c != "row_id"]
    solution[classes] = solution[classes].to_numpy()[::-1]  # the rows' truths shuffled
    solution.to_csv(labels, index=False)
    runs = {}
    for name, root in (("a", tiny_root), ("b", other)):
        cfg = evaluate_cfg(root, tmp_path / name, FLOOR_ONLY, "task.baseline=null")
        results = evaluate.run(cfg)
        oof = pd.concat(
            [pd.read_csv(j.folder / evaluate.OOF) for j in evaluate.plan(cfg)], ignore_index=True
        )
        runs[name] = (oof, results)
    (oof_a, res_a), (oof_b, res_b) = runs["a"], runs["b"]
    pd.testing.assert_frame_equal(oof_a, oof_b)
    key = [k for k in res_a if k.endswith("oof_auc")]
    assert key and all(res_a[k] == res_b[k.replace(tiny_root.name, other.name)] for k in key)


@pytest.mark.slow
def test_a_finished_job_is_skipped_and_a_killed_one_runs_again(tiny_root, tmp_path, monkeypatch):
    cfg = evaluate_cfg(tiny_root, tmp_path, FLOOR_ONLY, "task.baseline=null", "task.test=false")
    evaluate.run(cfg)
    jobs = evaluate.plan(cfg)
    stamps = [(j.folder / evaluate.CHECKPOINT).stat().st_mtime_ns for j in jobs]
    trained = []
    original = evaluate.score_held_out
    monkeypatch.setattr(
        evaluate, "score_held_out", lambda c, f: trained.append(f) or original(c, f)
    )
    evaluate.run(cfg)  # everything finished: nothing trains
    assert trained == []
    assert [(j.folder / evaluate.CHECKPOINT).stat().st_mtime_ns for j in jobs] == stamps
    (jobs[1].folder / evaluate.OOF).unlink()  # killed after training, before its rows
    evaluate.run(cfg)
    assert trained == [jobs[1].folder]


def test_bad_settings_are_one_clear_error(tmp_path):
    with pytest.raises(Exception, match="task.compare=.*must name recipes"):
        evaluate.plan(compose_cfg("task=evaluate", "task.compare=[nope]", tmp=tmp_path))
    with pytest.raises(Exception, match="task.baseline=nope"):
        evaluate.plan(compose_cfg("task=evaluate", "task.baseline=nope", tmp=tmp_path))
    with pytest.raises(Exception, match="task.folds=1"):
        evaluate.plan(compose_cfg("task=evaluate", "task.folds=1", tmp=tmp_path))
    with pytest.raises(Exception, match="label=multilabel is an old config name"):
        evaluate.plan(
            compose_cfg(
                "task=evaluate",
                '+task.recipes.x="label=multilabel"',
                "task.compare=[x]",
                "task.baseline=null",
                tmp=tmp_path,
            )
        )


EVALUATIONS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("eval_*.yaml"))


@pytest.mark.parametrize("experiment", EVALUATIONS)
def test_every_shipped_evaluation_composes_each_recipe(experiment, tmp_path):
    """Each recipe of an `experiment=eval_*` file composes as its fold job will, with the fold rules."""
    cfg = compose_cfg(f"experiment={experiment}", f"task.work={tmp_path}", tmp=tmp_path)
    jobs = [j for j in evaluate.plan(cfg) if j.seed == cfg.task.seeds[0] and j.fold == 0]
    assert sorted(j.recipe for j in jobs) == sorted(cfg.task.compare)
    for job in jobs:
        run_cfg = compose_run(list(job.overrides))
        assert run_cfg.data.test is False and run_cfg.monitor is None
        assert run_cfg.data.split.fold == 0


def data(n_files=30, rows=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    files = np.repeat(np.arange(n_files), rows)
    truth = (rng.random((n_files * rows, classes)) < 0.3).astype(float)
    truth[:classes, :] = np.eye(classes)  # every class has a positive
    return truth, files, rng


def test_bootstrap_of_identical_recipes_has_a_zero_difference():
    truth, files, rng = data()
    scores = rng.random(truth.shape)
    reps = bootstrap(truth, {"a": [scores], "b": [scores.copy()]}, files, 200)
    diff, confidence = paired(0.5, 0.5, reps["a"], reps["b"])
    assert (diff.low, diff.high) == (0.0, 0.0) and confidence == pytest.approx(0.0, abs=1e-5)


def test_bootstrap_separates_a_perfect_recipe_from_noise_and_is_reproducible():
    truth, files, rng = data()
    perfect, noise = truth + 0.01 * rng.random(truth.shape), rng.random(truth.shape)
    runs = {"perfect": [perfect], "noise": [noise]}
    reps = bootstrap(truth, runs, files, 300, seed=3)
    assert np.array_equal(reps["noise"], bootstrap(truth, runs, files, 300, seed=3)["noise"])
    points = {k: point_estimate(truth, v) for k, v in runs.items()}
    assert points["perfect"] == 1.0 and points["perfect"] == macro_auc(truth, perfect)
    diff, confidence = paired(points["perfect"], points["noise"], reps["perfect"], reps["noise"])
    assert confidence == pytest.approx(1.0, abs=1e-5) and diff.low > 0.2
    noise_iv = interval(points["noise"], reps["noise"])
    assert noise_iv.low < points["noise"] < noise_iv.high and noise_iv.high - noise_iv.low < 0.3


def test_bootstrap_draws_whole_files_and_seeds():
    """A recipe right on one file's rows and wrong elsewhere: its replicates vary by file draws."""
    truth, files, rng = data(n_files=2, rows=50, classes=2)
    scores = np.where(files[:, None] == 0, truth, 1 - truth)  # file 0 perfect, file 1 inverted
    reps = bootstrap(truth, {"x": [scores]}, files, 400, seed=1)["x"]
    # a draw holds file 0 twice (AUC 1), file 1 twice (0) or both: three values, as whole files
    # move together (rows drawn one by one would give many)
    values = set(np.round(reps, 9))
    assert len(values) == 3 and {0.0, 1.0} <= values
    two_seeds = bootstrap(truth, {"x": [scores, truth]}, files, 400, seed=1)["x"]
    assert two_seeds.max() == 1.0 and two_seeds.min() < 0.5  # seeds are drawn as well
    with pytest.raises(ValueError, match="same seeds"):
        bootstrap(truth, {"a": [scores], "b": [scores, scores]}, files, 10)


def test_bca_is_the_percentile_interval_without_bias_and_agrees_with_its_confidence():
    rng = np.random.default_rng(0)
    replicates = rng.normal(0.03, 0.01, 20000)
    flat = rng.normal(0.0, 1.0, 50)  # a symmetric jackknife: no acceleration
    flat = np.concatenate([flat, -flat])
    plain, corrected = interval(0.03, replicates), interval(0.03, replicates, flat)
    assert corrected.low == pytest.approx(plain.low, abs=1e-3)
    assert corrected.high == pytest.approx(plain.high, abs=1e-3)
    # replicates shifted above the estimate (the bias of a resampled macro AUC): BCa moves down
    shifted = interval(0.02, replicates, flat)
    assert shifted.low < plain.low - 0.005 and shifted.high < plain.high - 0.005
    _, confidence = paired(0.03, 0.0, replicates, np.zeros_like(replicates), flat, flat * 0)
    assert plain.low > 0 and confidence > 0.975  # an interval above 0 is a confidence above 97.5%
    _, doubtful = paired(0.005, 0.0, replicates - 0.025, np.zeros_like(replicates), flat, flat * 0)
    assert 0.5 < doubtful < 0.975


def test_bootstrap_with_strata_ranks_rows_within_their_fold():
    """Per-seed strata (each seed has its own folds) go with the rows they label."""
    rng = np.random.default_rng(2)
    truth = (rng.random((80, 3)) < 0.3).astype(int)
    fold = np.repeat([0, 1], 40)
    offset = np.where(fold == 0, 0.0, 5.0)[:, None]  # fold 1's model scores everything higher
    scores = truth + 0.5 * rng.random((80, 3)) + offset
    files = np.repeat(np.arange(20), 4)
    runs = {"x": [scores]}
    assert point_estimate(truth, [scores], [fold]) == 1.0
    assert point_estimate(truth, [scores]) < 0.9
    reps = bootstrap(truth, runs, files, 50, strata=[fold])["x"]
    assert np.allclose(reps[np.isfinite(reps)], 1.0)


def test_the_pages_command_can_be_pasted_into_a_shell():
    import shlex

    given = [
        "task=evaluate",
        "task.roots=[a,b]",
        '+task.recipes.x="loss=focal trainer.max_epochs=10"',
    ]
    line = evaluate.shell_command(given)
    assert line.startswith("python run.py task=evaluate ")
    assert shlex.split(line)[2:] == given
