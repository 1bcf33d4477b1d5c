"""End-to-end: `birdclef.tasks.train.run` and `run.py` on tiny synthetic data in a temp dir."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from birdclef.core.errors import ConfigError
from birdclef.core.metric import competition_score
from birdclef.data.labels import InformedLabels, MultiLabels
from birdclef.data.metadata import load_soundscape_labels
from birdclef.modules.classifier import Classifier
from birdclef.tasks.train import build_datamodule, run
from tests.conftest import ROOT, TRAIN_FAST, compose_cfg, fast_cfg


@pytest.fixture(scope="module")
def trained(tiny_root, tmp_path_factory):
    """One short training run shared by the checks below."""
    tmp = tmp_path_factory.mktemp("run")
    cfg = fast_cfg(tiny_root, "trainer.max_epochs=2", "label.m=0.65", tmp=tmp)
    return cfg, run(cfg)


def test_run_leaves_config_metrics_checkpoint_and_log(trained):
    cfg, metrics = trained
    out = Path(cfg.paths.output_dir)
    for name in (
        "config.yaml",
        "metrics.json",
        "run.log",
        "split.csv",
        "checkpoints/best.ckpt",
        "soundscape_predictions.csv",
    ):
        assert (out / name).is_file(), name
    assert (out / "csv").is_dir()
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("val/auc", "val/loss", "val/balanced_acc", "test/soundscape_auc", "train/loss"):
        assert np.isfinite(saved[key]), key
    assert 0.0 <= saved["val/auc"] <= 1.0 and 0.0 <= saved["test/soundscape_auc"] <= 1.0
    assert saved == pytest.approx(metrics)


def test_soundscape_auc_is_the_competition_score_of_the_written_predictions(trained, tiny_root):
    cfg, metrics = trained
    predictions = pd.read_csv(
        f"{cfg.paths.output_dir}/soundscape_predictions.csv", dtype={"row_id": str}
    )
    classes = [c for c in predictions.columns if c != "row_id"]
    solution = load_soundscape_labels(tiny_root, classes).drop(columns=["stem", "end"])
    assert len(predictions) == len(solution) == 12
    assert competition_score(solution, predictions) == pytest.approx(
        metrics["test/soundscape_auc"], abs=1e-6
    )


def test_checkpoint_loads_weights_only_and_predicts_the_same(trained):
    cfg, _ = trained
    path = f"{cfg.paths.output_dir}/checkpoints/best.ckpt"
    state = torch.load(
        path, weights_only=True, map_location="cpu"
    )  # no pickle of arbitrary objects
    assert state["hyper_parameters"]["classes"]
    model = Classifier.from_checkpoint(path)
    assert model.hparams.frontend["_target_"] == "birdclef.data.frontend.MelFrontend"
    dm = build_datamodule(cfg)
    dm.setup()
    with torch.no_grad():
        scores = torch.cat([model.scores(model(b["features"])) for b in dm.test_dataloader()])
    written = pd.read_csv(f"{cfg.paths.output_dir}/soundscape_predictions.csv")
    expected = torch.tensor(written[dm.classes].to_numpy(), dtype=scores.dtype)
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)


def test_bad_audio_is_skipped_and_listed(tiny_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(tiny_root, root)
    train = pd.read_csv(root / "train.csv", dtype=str)
    victim = train["filename"].iloc[0]
    (root / "train_audio" / victim).write_bytes(b"garbage")
    (root / "train_audio" / train["filename"].iloc[1]).unlink()
    run(fast_cfg(root, "model.channels=[8]", tmp=tmp_path))
    skipped = pd.read_csv(tmp_path / "out" / "skipped_files.csv")
    assert set(skipped["file"]) == {victim, train["filename"].iloc[1]}
    assert skipped["error"].str.contains("cannot decode|not found").all()


def test_wandb_logger_works_offline(cfg_fast, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    metrics = run(cfg_fast("model.channels=[8]", "logger=wandb"))
    assert np.isfinite(metrics["val/auc"])
    assert list((tmp_path / "out" / "wandb").glob("offline-run-*"))


def cli(*args, cwd=ROOT, timeout=300):
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_cli_run_writes_hydra_outputs(tiny_root, tmp_path):
    done = cli(
        f"data.root={tiny_root}", f"paths.data_dir={tmp_path}/data", f"hydra.run.dir={tmp_path}/run",
        *TRAIN_FAST, "model.channels=[8]",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test/soundscape_auc" in done.stdout
    for name in (".hydra/config.yaml", "run.log", "metrics.json", "checkpoints/best.ckpt"):
        assert (tmp_path / "run" / name).is_file(), name
    log = (tmp_path / "run" / "run.log").read_text()
    assert "Trainer.fit" in log and log.count("`Trainer.fit` stopped") == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.root=/no/such/folder", "data.root=/no/such/folder does not exist"),
        ("data.windows.train=middle", "data.windows.train='middle' must be one of"),
        ("label.m=1.5", "label.m=1.5 must be in"),
    ],
)
def test_cli_user_errors_are_one_clear_line(override, message, cfg_train, run_main):
    """run.py's main in this process (test_cli_run_writes_hydra_outputs starts the real one)."""
    status, output = run_main(cfg_train(override))
    assert status == 2
    assert message in output
    assert "Traceback" not in output


def test_cli_synth_task(cfg, run_main, tmp_path):
    status, output = run_main(cfg("task=synth", "synth=tiny", f"paths.data_dir={tmp_path}"))
    assert status == 0, output[-2000:]
    roots = list((tmp_path / "synthetic").iterdir())
    assert len(roots) == 1 and (roots[0] / "train.csv").is_file()
    assert str(roots[0]) in output


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("loss=bce", "label.m=0.65"), "label.m=0.65 set a rule a sigmoid loss does not use"),
        (
            ("loss=focal", "label.secondary_weight=0.2"),
            "label.secondary_weight=0.2 set a rule a softmax",
        ),
    ],
)
def test_label_rule_for_the_other_kind_of_loss_is_refused(cfg_train, overrides, message):
    cfg = cfg_train(*overrides)
    with pytest.raises(ConfigError, match=message):
        build_datamodule(cfg)


def test_sigmoid_losses_get_multilabel_targets(tmp_path):
    def rule(*overrides):
        cfg = compose_cfg(*overrides, tmp=tmp_path)
        return instantiate(cfg.label, activation=instantiate(cfg.loss).activation)

    assert isinstance(rule("loss=focal_bce"), MultiLabels)
    assert isinstance(rule("experiment=top_sed"), MultiLabels)
    assert isinstance(rule("loss=focal"), InformedLabels)


def test_mel_augmentation_on_embeddings_is_refused(cfg_train):
    pytest.importorskip("ai_edge_litert")
    cfg = cfg_train("model=birdnet", "frontend=birdnet", "augment=specaugment")
    with pytest.raises(ConfigError, match="augment=none"):
        run(cfg)


def test_mel_augmentation_on_mfcc_is_refused(cfg_train):
    cfg = cfg_train("frontend=mfcc", "augment=mixup")
    with pytest.raises(ConfigError, match="MFCCs"):
        run(cfg)


def test_the_default_melcnn_on_mfcc_names_both_fixes(cfg_train):
    cfg = cfg_train("frontend=mfcc")
    assert cfg.model.input_norm == "pcen" and cfg.augment.mixup_p > 0  # the default MelCNN's
    with pytest.raises(
        ConfigError, match="input_norm=pcen.*MFCCs.*augment=none model.input_norm=dataset"
    ):
        run(cfg)


def test_longer_training_windows_still_score_5s_rows(tiny_root, cfg_train, tmp_path):
    """10-s training windows come from the same cache; soundscape rows stay the 5-s grid."""
    five = build_datamodule(cfg_train())
    five.setup()
    shards = sorted((tmp_path / "data" / "cache").rglob("*.npy"))
    assert shards  # the cache this test checks is its own
    cfg = cfg_train("model.channels=[8]", "window_seconds=10")
    dm = build_datamodule(cfg)
    dm.setup()
    assert sorted((tmp_path / "data" / "cache").rglob("*.npy")) == shards  # nothing rebuilt
    assert dm.train_set[0]["features"].shape == (1, 128, 640)  # 10 s at hop 500
    assert dm.test_set[0]["features"].shape == (1, 128, 320)  # rows are 5 s
    metrics = run(cfg)
    predictions = pd.read_csv(tmp_path / "out" / "soundscape_predictions.csv")
    solution = load_soundscape_labels(tiny_root, dm.classes)
    assert predictions["row_id"].tolist() == solution["row_id"].tolist()
    ends = sorted({int(r.rsplit("_", 1)[1]) for r in predictions["row_id"]})
    assert ends == list(range(5, 31, 5))  # the 30-s soundscapes' six 5-s rows, not a 10-s grid
    assert 0 <= metrics["test/soundscape_auc"] <= 1


def test_random_crops_draw_new_starts_inside_the_limit(cfg_train):
    cfg = cfg_train(
        "data.windows.crop=random", "data.windows.crop_seconds=7", "data.windows.train=first"
    )
    dm = build_datamodule(cfg)
    dm.setup()
    ds = dm.train_set
    frames = ds.frames
    longest = max(range(len(ds)), key=lambda i: frames.n_frames(int(ds.recording[i])))
    assert frames.n_frames(int(ds.recording[longest])) > 7 * 64  # longer than the crop limit
    torch.manual_seed(0)
    cuts = {ds[longest]["features"].sum().item() for _ in range(12)}
    assert len(cuts) > 3  # a new crop at each read
    starts = []
    original = frames.window
    frames.window = lambda i, start, n: starts.append(start) or original(i, start, n)
    for _ in range(50):
        ds[longest]
    frames.window = original
    assert min(starts) >= 0 and max(starts) + ds.n_frames <= round(7 * 32000 / 500)
    assert len(dm.val_set) and dm.val_set.crop == "fixed"  # validation windows stay fixed


def test_missing_resume_checkpoint(tiny_root, tmp_path):
    cfg = compose_cfg(f"data.root={tiny_root}", f"ckpt_path={tmp_path}/nope.ckpt", tmp=tmp_path)
    with pytest.raises(ConfigError, match="ckpt_path"):
        run(cfg)


def test_monitor_null_tests_the_last_epoch(cfg_fast):
    cfg = cfg_fast("trainer.max_epochs=3", "monitor=null")
    run(cfg)
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]
    best, last = (
        torch.load(folder / n, weights_only=True, map_location="cpu")
        for n in ("best.ckpt", "last.ckpt")
    )
    assert best["epoch"] == last["epoch"] == 2
    for key, value in last["state_dict"].items():
        torch.testing.assert_close(best["state_dict"][key], value, rtol=0, atol=0)


def test_early_stopping_without_a_monitor_is_refused(tiny_root, tmp_path):
    cfg = compose_cfg(
        f"data.root={tiny_root}", "monitor=null", "callbacks=early_stopping", tmp=tmp_path
    )
    with pytest.raises(ConfigError, match="early_stopping.*monitor=null"):
        run(cfg)
