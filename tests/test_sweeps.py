"""A sweep fills a results table: Hydra multirun (basic and submitit launchers) + birdclef.runs.report;
failed jobs are recorded, finished ones skipped, and jobs that share a machine split its cores."""

import json
import re
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from birdclef.core.cpus import available_cpus
from birdclef.core.errors import DataError
from birdclef.runs import jobs
from birdclef.runs.report import collect, main, table
from tests.conftest import ROOT, TRAIN_FAST

LOCAL_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def fake_run(folder, overrides, metrics=None, failed=None):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if failed is not None:
        (folder / jobs.FAILED).write_text(f"{failed}\n\nTraceback ...\n")


def test_report_table(tmp_path):
    fake_run(
        tmp_path / "0",
        ["model=melcnn", "paths.data_dir=/x"],
        {"test/soundscape_auc": 0.71, "model/params": 2.5e6},
    )
    fake_run(
        tmp_path / "1",
        ["model=sed", "++rerun=true", "+hydra.launcher.qos=x"],
        {"test/soundscape_auc": 0.83, "val/auc": 0.9},
    )
    runs, common = collect([tmp_path])
    assert common == []
    text = table(runs, sort="test/soundscape_auc")
    lines = text.splitlines()
    assert lines[2].startswith("| model=sed | 0.830 | 0.900 |")
    assert lines[3].startswith("| model=melcnn | 0.710 |")  # paths.* overrides are hidden
    assert "| 2.50 |" in lines[3]
    assert "CPUs" not in lines[0]  # job columns only when some run has them
    out = tmp_path / "table.md"
    assert main([str(tmp_path), "--out", str(out)]) + "\n" == out.read_text()
    with pytest.raises(DataError, match="no metrics.json"):
        collect([tmp_path / "empty"])


def test_report_lists_failed_jobs_and_cpu_share(tmp_path):
    metrics = {
        "val/auc": 0.9,
        "train/epoch_seconds": 4.0,
        "job/cpus": 8.0,
        "job/concurrent_jobs": 2.0,
    }
    fake_run(tmp_path / "0", ["model=melcnn", "trainer.max_epochs=1"], metrics)
    fake_run(
        tmp_path / "1", ["model=sed", "trainer.max_epochs=1"], failed="model.backbone=x is unknown"
    )
    text = main([str(tmp_path)])
    head, _, row, *rest = text.split("All runs: `trainer.max_epochs=1`\n\n")[1].splitlines()
    assert head.endswith("| CPUs | jobs at once |") and row.endswith("| 8 | 2 |")
    assert row.startswith("| model=melcnn |  | 0.900 |  | 4.0 |")
    assert rest == [
        "",
        "Failed (1, see their failed.txt):",
        "- model=sed: model.backbone=x is unknown",
    ]
    (tmp_path / "0" / "metrics.json").unlink()
    assert "No run finished." in main([str(tmp_path)])  # only failed jobs: still a report


def test_report_means_over_seeds_and_rare_classes(tmp_path):
    # two settings x two seeds; classes a (1 recording, rare at K=1) and b (3 recordings)
    aucs = {
        ("0", "42"): (0.70, 0.5, 0.9),
        ("0", "1"): (0.74, 0.7, 0.8),
        ("1", "42"): (0.80, 0.9, 0.7),
    }
    for i, ((drop, seed), (auc, rare, common)) in enumerate(aucs.items()):
        run = tmp_path / str(i)
        fake_run(run, [f"filter.voice.drop={drop}", f"seed={seed}"], {"test/soundscape_auc": auc})
        (run / "split.csv").write_text(
            "filename,primary_label,split\nx,a,train\n" + "y,b,train\n" * 3
        )
        (run / "per_class_auc.csv").write_text(
            f"class,positives,rows,auc\na,2,10,{rare}\nb,3,10,{common}\nc,0,10,\n"
        )
    text = main([str(tmp_path), "--mean-over", "seed", "--rare", "1"])
    head, _, first, second = text.splitlines()[-4:]
    assert "AUC, classes <= 1 rec." in head and head.endswith("| runs |")
    assert first.startswith("| filter.voice.drop=0 | 0.720 ± 0.028 | 0.600 ± 0.141 |")
    assert first.endswith("| 2 |")
    assert second.startswith("| filter.voice.drop=1 | 0.800 | 0.900 |")


def test_available_cpus_honours_job_allocations(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv(jobs.CPUS_ENV, raising=False)
    machine = available_cpus()
    assert machine >= 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert available_cpus() == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "999")
    monkeypatch.setenv(jobs.CPUS_ENV, "1")
    assert available_cpus() == 1
    monkeypatch.setenv(jobs.CPUS_ENV, "999")
    assert available_cpus() == machine  # a cap never raises the count
    monkeypatch.setenv(jobs.CPUS_ENV, "not a number")
    assert available_cpus() == machine


def test_start_job_sizes_torch_threads_from_its_share(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(jobs.CPUS_ENV, "1")
        monkeypatch.setenv(jobs.CONCURRENT_ENV, "3")
        assert jobs.start_job() == 1 and torch.get_num_threads() == 1
        assert jobs.job_info() == {"job/cpus": 1.0, "job/concurrent_jobs": 3.0}
        monkeypatch.delenv(jobs.CPUS_ENV)
        monkeypatch.delenv(jobs.CONCURRENT_ENV)
        threads = jobs.start_job()  # all of the machine, but never more than torch's default
        assert threads == min(jobs.torch_default_threads(), available_cpus())
        assert jobs.job_info()["job/concurrent_jobs"] == 1.0
    finally:
        torch.set_num_threads(before)


def sweep_config(tmp_path, launcher=LOCAL_LAUNCHER, cpus_per_task=None, max_batch_size=None):
    return OmegaConf.create({"hydra": {
        "launcher": {"_target_": launcher, "cpus_per_task": cpus_per_task},
        "sweeper": {"_target_": BASIC_SWEEPER, "max_batch_size": max_batch_size,
                    "params": {"label.m": "1.0,0.65"}},
        "overrides": {"task": ["model=melcnn,cnn,sed", "trainer.max_epochs=1"]},
        "sweep": {"dir": str(tmp_path)},
    }})  # fmt: skip


def test_local_sweep_splits_the_cores_over_jobs_at_once(monkeypatch, tmp_path):
    monkeypatch.setattr(jobs, "available_cpus", lambda: 12)
    for name in (jobs.CPUS_ENV, jobs.CONCURRENT_ENV):  # recorded, so the callback's values go
        monkeypatch.setenv(name, "")
    callback = jobs.SweepCallback()
    for kwargs, cpus, at_once in [
        ({}, "2", "6"),  # 2 x 3 jobs, all at once
        ({"max_batch_size": 4}, "3", "4"),  # the sweeper hands out 4 at a time
        ({"cpus_per_task": 5}, "5", "6"),  # set by hand
    ]:
        callback.on_multirun_start(sweep_config(tmp_path, **kwargs))
        assert (jobs.os.environ[jobs.CPUS_ENV], jobs.os.environ[jobs.CONCURRENT_ENV]) == (
            cpus,
            at_once,
        )
    monkeypatch.setenv(jobs.CPUS_ENV, "")
    callback.on_multirun_start(sweep_config(tmp_path, launcher="hydra.BasicLauncher"))
    assert jobs.os.environ[jobs.CPUS_ENV] == ""  # jobs one after another: each has all cores


def sweep(tmp_path, *overrides):
    args = [
        "-m",
        *overrides,
        f"paths.data_dir={tmp_path}/data",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    done = subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    "launcher", ["basic", pytest.param("submitit_local", marks=pytest.mark.slow)]
)  # the submitit launcher starts a process per job: slow
def test_multirun_sweep_then_report(launcher, tiny_root, tmp_path):
    extra = ["launcher=local"] if launcher == "submitit_local" else []
    sweep(tmp_path, *extra, f"data.root={tiny_root}", *TRAIN_FAST, "model.channels=[8],[8,16]")
    runs, common = collect([tmp_path / "sweep"])
    assert sorted(name for name, _ in runs) == ["model.channels=[8,16]", "model.channels=[8]"]
    assert "trainer.max_epochs=1" in common
    assert all(0 <= m["test/soundscape_auc"] <= 1 for _, m in runs)
    if launcher == "submitit_local":  # both jobs at once, each on half of the cores
        share = max(1, available_cpus() // 2)
        for num in (0, 1):
            log = (tmp_path / "sweep" / str(num) / "run.log").read_text()
            found = re.search(
                rf"job {num}: (\d+) CPU\(s\), (\d+) torch thread\(s\); 2 jobs at once", log
            )
            assert found and int(found[1]) == share and int(found[2]) <= share, log[-2000:]


@pytest.mark.slow  # two sweeps; the fast suite records and skips jobs in test_run_errors
def test_failed_job_is_recorded_and_finished_job_skipped_on_rerun(tiny_root, tmp_path):
    args = (f"data.root={tiny_root}", *TRAIN_FAST, "model.channels=[8]", "ckpt_path=/no/such.ckpt,null",
            f"++hydra.callbacks.jobs._target_={jobs.__name__}.SweepCallback")  # fmt: skip
    first = sweep(tmp_path, *args)
    failed, finished = tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"
    reason = "ckpt_path=/no/such.ckpt is not a file"
    assert f"job 0 failed: {reason}" in first
    assert (failed / jobs.FAILED).read_text().startswith(reason)
    assert not (failed / "metrics.json").exists() and (finished / "metrics.json").is_file()
    assert "1 job(s) failed, 1 finished" in first  # the sweep's summary at the end
    stamp = (finished / "metrics.json").stat().st_mtime_ns

    second = sweep(tmp_path, *args)
    assert "job 1 already finished with this config, skipped" in second
    assert (finished / "metrics.json").stat().st_mtime_ns == stamp
    assert f"job 0 failed: {reason}" in second  # a job without results runs again
    table_text = main([str(tmp_path / "sweep")])
    assert (
        "| ckpt_path=null |" in table_text and f"- ckpt_path=/no/such.ckpt: {reason}" in table_text
    )
