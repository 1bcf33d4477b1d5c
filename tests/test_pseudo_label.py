"""task=pseudo_label on the tiny synthetic set: rows, merge, shards, resume, bad files, truth AUC,
and the frames of an SED teacher."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdclef.core.errors import ConfigError, DataError
from birdclef.core.metric import macro_auc
from birdclef.core.rows import grid_window_starts, row_id
from birdclef.data.pseudo_store import read_frames
from birdclef.inference.loading import load_model
from birdclef.inference.rows import frames_along_file, window_starts
from birdclef.inference.runtime import predict_folder
from birdclef.inference.teacher import frames_on_grid
from birdclef.tasks import pseudo_label
from tests.conftest import SR, compose_cfg, train_cfg


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


TINY_TIMM = "mobilenetv3_small_050"  # the smallest timm CNN (as in test_models)


@pytest.fixture(scope="module")
def sed_checkpoint(tiny_root, tmp_path_factory):
    """best.ckpt of a one-epoch SED net on the tiny dataset: a teacher with frame scores."""
    from birdclef.tasks.train import run

    tmp = tmp_path_factory.mktemp("sed")
    cfg = train_cfg(tiny_root, "model=sed", f"model.backbone={TINY_TIMM}", tmp=tmp)
    run(cfg)
    return tmp / "out" / "checkpoints" / "best.ckpt"


def _predict(folder, ckpt, tiny_root, **settings):
    frame, _ = predict_folder(
        folder, {"models": [str(ckpt)], "blend": "mean", "taxonomy": str(tiny_root), **settings},
        progress=False,
    )  # fmt: skip
    return frame.set_index("row_id")


def test_frames_along_the_file_average_overlapping_windows():
    n = 4  # frames of 1.25 s per window
    tiled = np.arange(2 * n * 1, dtype=np.float32).reshape(2, n, 1)
    frames, seconds = frames_along_file(tiled, window_starts(2, 5.0), 2)
    np.testing.assert_array_equal(frames[:, 0], np.arange(8))  # the windows one after another
    assert seconds == 1.25
    starts = window_starts(2, 2.5)  # 0, 2.5, 5, 7.5: each frame slot covered by two windows
    values = np.arange(4 * n, dtype=np.float32).reshape(4, n, 1)
    frames, _ = frames_along_file(values, starts, 2)
    # window w covers slots 2w..2w+3; the last window's slots 8 and 9 lie past the rows
    expected = [
        0,
        1,
        (2 + 4) / 2,
        (3 + 5) / 2,
        (6 + 8) / 2,
        (7 + 9) / 2,
        (10 + 12) / 2,
        (11 + 13) / 2,
    ]
    np.testing.assert_allclose(frames[:, 0], expected)
    coarse = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)  # 2 rows of 2 frames
    np.testing.assert_array_equal(frames_on_grid(coarse, 2, 4)[:, 0], [0, 0, 1, 1, 2, 2, 3, 3])


def test_sed_teacher_stores_frames_whose_row_maxima_are_the_sed_rows(
    tiny_root, sed_checkpoint, tmp_path
):
    folder, out = _folder(tiny_root, tmp_path), tmp_path / "pl"
    scapes, output = f"teacher.soundscapes={folder}", f"teacher.output={out}"
    metrics = _run(tiny_root, sed_checkpoint, tmp_path, scapes, output)
    assert metrics["pseudo/merged"] == 1.0 and metrics["pseudo/scored_files"] == 4
    model = load_model(sed_checkpoint)
    n_mels = model.frame_params["n_mels"]
    probe = np.full((1, n_mels, model.window_frames), model.pad_value, np.float32)
    per_window = model.predict(probe)[1].shape[1]  # frames per 5-s window of this net
    assert model.has_frame_scores and per_window > 1
    info = json.loads((out / "teacher.json").read_text())
    assert info["frame_seconds"] == pytest.approx(5 / per_window)
    assert info["frame_models"] == [str(sed_checkpoint)]
    classes = pd.read_csv(tiny_root / "taxonomy.csv", dtype=str)["primary_label"].tolist()
    sed_rows = _predict(folder, sed_checkpoint, tiny_root, sed_frames=True)
    window_rows = _predict(folder, sed_checkpoint, tiny_root)
    labels = pd.read_csv(out / "pseudo_labels.csv").set_index("row_id")
    stems = _stems(folder)
    for s in stems:
        frames, seconds = read_frames(out, s)
        np.testing.assert_array_equal(frames, np.load(out / "files" / f"{s}.frames.npy"))
        assert frames.shape == (6 * per_window, len(classes)) and frames.dtype == np.float32
        assert seconds == info["frame_seconds"]
        assert np.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1
        ids = [row_id(s, 5 * (i + 1)) for i in range(6)]
        maxima = frames.reshape(6, per_window, -1).max(axis=1)
        np.testing.assert_allclose(maxima, sed_rows.loc[ids, classes].to_numpy(), atol=1e-5)
        # the rows stay the window scores of task=predict's default
        np.testing.assert_allclose(
            labels.loc[ids, classes].to_numpy(), window_rows.loc[ids, classes].to_numpy(), atol=1e-5
        )
    assert not (out / "files" / "corrupt.frames.npy").exists()
    with pytest.raises(DataError, match="corrupt could not be scored"):
        read_frames(out, "corrupt")
    with pytest.raises(DataError, match="'nope' is not a soundscape this teacher scored"):
        read_frames(out, "nope")
    # resume: a file without its frames is scored again, the others are left alone
    kept = np.load(out / "files" / f"{stems[1]}.frames.npy")
    (out / "files" / f"{stems[1]}.frames.npy").unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "files").iterdir()}
    again = _run(tiny_root, sed_checkpoint, tmp_path, scapes, output)
    assert again["pseudo/scored_files"] == 1 and again["pseudo/merged"] == 1.0
    np.testing.assert_allclose(read_frames(out, stems[1])[0], kept, atol=1e-6)
    now = {p.name: p.stat().st_mtime_ns for p in (out / "files").iterdir()}
    assert now.keys() == {*stamps, f"{stems[1]}.frames.npy"}
    assert {k: v for k, v in now.items() if stems[1] not in k} == {
        k: v for k, v in stamps.items() if stems[1] not in k
    }
    assert again["pseudo/rows"] == metrics["pseudo/rows"] == 18


def test_a_run_killed_between_frames_and_rows_scores_the_file_again(
    tiny_root, sed_checkpoint, tmp_path, monkeypatch
):
    out = tmp_path / "pl"
    scape = sorted((tiny_root / "train_soundscapes").glob("*.ogg"))[0].stem
    real = pseudo_label.atomic_path

    def killed_at_the_rows(path, *args):
        if path.name == f"{scape}.npy":
            raise KeyboardInterrupt  # the job is killed once the frames are written
        return real(path, *args)

    monkeypatch.setattr(pseudo_label, "atomic_path", killed_at_the_rows)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_root, sed_checkpoint, tmp_path, f"teacher.output={out}")
    assert (out / "files" / f"{scape}.frames.npy").exists()  # frames go first ...
    assert not (out / "files" / f"{scape}.npy").exists()  # ... so the file is not done
    monkeypatch.undo()
    metrics = _run(tiny_root, sed_checkpoint, tmp_path, f"teacher.output={out}")
    assert metrics["pseudo/scored_files"] == 1 and metrics["pseudo/merged"] == 1.0
    assert read_frames(out, scape)[0].shape[0] % 6 == 0


def test_frames_blend_the_sed_models_alone_and_a_plain_teacher_stores_none(
    tiny_root, tiny_checkpoint, sed_checkpoint, tmp_path
):
    plain = tmp_path / "plain"
    _run(tiny_root, tiny_checkpoint, tmp_path, f"teacher.output={plain}")
    assert not list((plain / "files").glob("*.frames.npy"))
    info = json.loads((plain / "teacher.json").read_text())
    assert "frame_seconds" not in info and "frame_models" not in info
    scape = sorted((tiny_root / "train_soundscapes").glob("*.ogg"))[0].stem
    with pytest.raises(DataError, match="the teacher was not an SED net"):
        read_frames(plain, scape)
    with pytest.raises(DataError, match="not merged yet"):
        read_frames(tmp_path / "nowhere", scape)
    alone, mixed = tmp_path / "alone", tmp_path / "mixed"
    _run(tiny_root, sed_checkpoint, tmp_path, f"teacher.output={alone}")
    _run(tiny_root, f"{sed_checkpoint},{tiny_checkpoint}", tmp_path, f"teacher.output={mixed}",
         "teacher.weights=[1,3]")  # fmt: skip
    # the plain model shares the rows (weight 3 of 4), not the frames
    np.testing.assert_allclose(
        read_frames(mixed, scape)[0], read_frames(alone, scape)[0], atol=1e-6
    )
    rows = 0.25 * np.load(alone / "files" / f"{scape}.npy") + 0.75 * np.load(plain / "files" / f"{scape}.npy")  # fmt: skip
    np.testing.assert_allclose(np.load(mixed / "files" / f"{scape}.npy"), rows, atol=1e-6)
    assert json.loads((mixed / "teacher.json").read_text())["frame_models"] == [str(sed_checkpoint)]
    with pytest.raises(ConfigError, match="gives the SED models .* weight 0"):
        _run(tiny_root, f"{sed_checkpoint},{tiny_checkpoint}", tmp_path,
             f"teacher.output={tmp_path / 'zero'}", "teacher.weights=[0,1]")  # fmt: skip
