"""task=pseudo_label on the tiny synthetic set: rows, merge, shards, resume, bad files, truth AUC."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdclef.errors import ConfigError, DataError
from birdclef.inference.rows import grid_window_starts, row_id
from birdclef.inference.runtime import predict_folder
from birdclef.modules.metrics import macro_auc
from birdclef.tasks import pseudo_label
from tests.conftest import SR, compose_cfg


def _run(tiny_root, ckpt, tmp_path, *overrides):
    cfg = compose_cfg(
        "task=pseudo_label", f"data.root={tiny_root}", f"teacher.models=[{ckpt}]",
        "teacher.workers=1", *overrides, tmp=tmp_path,
    )  # fmt: skip
    return pseudo_label.run(cfg)


def _folder(tiny_root, tmp_path):
    """The tiny set's three soundscapes (one train, two test) and a corrupt file."""
    folder = tmp_path / "scapes"
    folder.mkdir()
    for p in [*(tiny_root / "train_soundscapes").glob("*.ogg"), *(tiny_root / "test_soundscapes").glob("*.ogg")]:  # fmt: skip
        shutil.copy(p, folder)
    (folder / "corrupt.ogg").write_bytes(b"OggS" + bytes(500))
    return folder


def _stems(folder):
    return [p.stem for p in sorted(folder.glob("*.ogg")) if p.stem != "corrupt"]


def test_rows_equal_predict_and_a_rerun_scores_nothing(tiny_root, tiny_checkpoint, tmp_path):
    folder, out = _folder(tiny_root, tmp_path), tmp_path / "pl"
    metrics = _run(tiny_root, tiny_checkpoint, tmp_path, f"teacher.soundscapes={folder}", f"teacher.output={out}")  # fmt: skip
    stems = _stems(folder)
    classes = pd.read_csv(tiny_root / "taxonomy.csv", dtype=str)["primary_label"].tolist()
    arrays = {s: np.load(out / "files" / f"{s}.npy") for s in stems}
    for s in stems:  # the row grid of each file, one column per class
        n = sf.info(str(folder / f"{s}.ogg")).frames
        assert arrays[s].shape == (len(grid_window_starts(n, 5 * SR, SR)), len(classes)) == (6, 6)
    frame = pd.read_csv(out / "pseudo_labels.csv")
    assert list(frame.columns) == ["row_id", *classes]
    assert frame["row_id"].tolist() == [row_id(s, 5 * (i + 1)) for s in stems for i in range(6)]
    merged = np.concatenate([arrays[s] for s in stems])
    np.testing.assert_allclose(frame[classes].to_numpy(), merged, rtol=1e-5, atol=1e-7)
    assert metrics["pseudo/files"] == 4 and metrics["pseudo/rows"] == 18
    assert metrics["pseudo/bad_files"] == 1 and metrics["pseudo/scored_files"] == 4
    assert metrics["pseudo/merged"] == 1.0 and "pseudo/auc" not in metrics  # no truth here
    bad = pd.read_csv(out / "bad_files.csv")
    assert [p.rsplit("/", 1)[-1] for p in bad["file"]] == ["corrupt.ogg"]
    assert not (out / "files" / "corrupt.npy").exists()
    # mean blend of one model = that model's scores as task=predict computes them
    sub, _ = predict_folder(
        folder, {"models": [str(tiny_checkpoint)], "blend": "mean", "taxonomy": str(tiny_root)},
        progress=False,
    )  # fmt: skip
    expected = sub.set_index("row_id").loc[frame["row_id"], classes].to_numpy()
    np.testing.assert_allclose(merged, expected, atol=1e-5)
    # a rerun scores nothing and leaves the per-file arrays alone
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "files").iterdir()}
    again = _run(tiny_root, tiny_checkpoint, tmp_path, f"teacher.soundscapes={folder}", f"teacher.output={out}")  # fmt: skip
    assert again["pseudo/scored_files"] == 0 and again["pseudo/rows"] == 18
    assert {p.name: p.stat().st_mtime_ns for p in (out / "files").iterdir()} == stamps
    pd.testing.assert_frame_equal(pd.read_csv(out / "pseudo_labels.csv"), frame)


def test_two_shards_merge_to_the_one_run_labels(tiny_root, tiny_checkpoint, tmp_path):
    folder = _folder(tiny_root, tmp_path)
    scapes = f"teacher.soundscapes={folder}"
    _run(tiny_root, tiny_checkpoint, tmp_path, scapes, f"teacher.output={tmp_path / 'one'}")
    two = tmp_path / "two"
    first = _run(tiny_root, tiny_checkpoint, tmp_path, scapes, f"teacher.output={two}", "teacher.shards=2")  # fmt: skip
    # sorted: H00..., corrupt, test_7_0000, test_7_0001 -> shard 0 gets H00 and test_7_0000
    assert first["pseudo/merged"] == 0.0 and first["pseudo/files"] == 2
    assert first["pseudo/scored_files"] == 2 and not (two / "pseudo_labels.csv").exists()
    last = _run(tiny_root, tiny_checkpoint, tmp_path, scapes, f"teacher.output={two}",
                "teacher.shard=1", "teacher.shards=2")  # fmt: skip
    assert last["pseudo/merged"] == 1.0 and last["pseudo/scored_files"] == 2
    assert last["pseudo/files"] == 4 and last["pseudo/bad_files"] == 1
    pd.testing.assert_frame_equal(
        pd.read_csv(two / "pseudo_labels.csv"), pd.read_csv(tmp_path / "one" / "pseudo_labels.csv")
    )


def test_auc_against_the_synthetic_truth(tiny_root, tiny_checkpoint, tmp_path):
    metrics = _run(tiny_root, tiny_checkpoint, tmp_path)  # default folder and output
    (out,) = (tmp_path / "data" / "pseudo" / tiny_root.name).iterdir()  # <teacher key>
    assert (out / "teacher.json").is_file() and (out / "pseudo_labels.csv").is_file()
    truth = pd.read_csv(tiny_root / "train_soundscapes_truth.csv")
    classes = pd.read_csv(tiny_root / "taxonomy.csv", dtype=str)["primary_label"].tolist()
    (path,) = (out / "files").glob("*.npy")
    scores = np.load(path).astype(np.float64)
    ids = [row_id(path.stem, 5 * (i + 1)) for i in range(len(scores))]
    y = truth.set_index("row_id").loc[ids, classes].to_numpy() > 0
    assert y.any() and metrics["pseudo/rows"] == len(ids) == 6
    assert metrics["pseudo/auc"] == pytest.approx(macro_auc(y, scores), abs=1e-9)
    assert metrics["pseudo/positive_mean"] == pytest.approx(scores[y].mean(), abs=1e-6)
    assert metrics["pseudo/negative_mean"] == pytest.approx(scores[~y].mean(), abs=1e-6)


def test_clear_errors(tiny_root, tiny_checkpoint, tmp_path):
    cases = [
        (ConfigError, "teacher.models is empty", ["teacher.models=[]"]),
        (ConfigError, r"teacher.shard=2 must be in \[0", ["teacher.shard=2", "teacher.shards=2"]),
        (ConfigError, "rank blend gives ranks", ["teacher.blend=rank"]),
        (DataError, "is not a folder", [f"teacher.soundscapes={tmp_path / 'nowhere'}"]),
        (DataError, "holds no audio", [f"teacher.soundscapes={tmp_path}"]),
    ]
    for error, message, overrides in cases:
        with pytest.raises(error, match=message):
            _run(tiny_root, tiny_checkpoint, tmp_path, *overrides)
    other = tmp_path / "other"  # a data root whose taxonomy has one class the model lacks
    shutil.copytree(tiny_root / "train_soundscapes", other / "train_soundscapes")
    taxonomy = pd.read_csv(tiny_root / "taxonomy.csv", dtype=str)
    taxonomy.loc[0, "primary_label"] = "notabird"
    taxonomy.to_csv(other / "taxonomy.csv", index=False)
    with pytest.raises(ConfigError, match="differ from the 6 classes"):
        _run(other, tiny_checkpoint, tmp_path, f"teacher.output={tmp_path / 'x'}")
