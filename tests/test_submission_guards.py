"""What keeps a submission valid: the int8 gate, per-file guards, exact digits, the row count."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from birdclef.core.metric import competition_score
from birdclef.inference import predict as predict_module
from birdclef.inference.runtime import empty_submission, predict_folder
from birdclef.inference.submission import SCORE_FORMAT, score_cells, write_submission
from birdclef.tasks import export
from tests.conftest import compose_cfg


def test_int8_is_refused_when_a_broken_calibration_costs_auc(
    tiny_root, tiny_checkpoint, tmp_path, monkeypatch
):
    original = export.sample_windows

    def broken(root, meta, n_check, n_calibration, seed):  # ranges from far quieter windows
        check, calibration = original(root, meta, n_check, n_calibration, seed)
        return check, calibration * 0.01

    monkeypatch.setattr(export, "sample_windows", broken)
    cfg = compose_cfg(
        "task=export", f"data.root={tiny_root}", "data.cache.workers=0", f"task.model={tiny_checkpoint}",
        "task.check_windows=8", "task.calibration_windows=8", "task.max_auc_drop=0.0",
        tmp=tmp_path,
    )  # fmt: skip
    metrics = export.run(cfg)
    folder = tmp_path / "out" / "export"
    report = json.loads((folder / "export.json").read_text())
    assert metrics["export/int8_kept"] == 0.0 and not (folder / "model_int8.onnx").exists()
    assert metrics["export/int8_auc_drop"] > 0.0 and "int8" not in report["files"]
    if "export/openvino_int8_kept" in metrics:  # OpenVINO's own int8 (openvino and nncf installed)
        assert (
            metrics["export/openvino_int8_kept"] == 0.0 and "openvino_int8" not in report["files"]
        )
        assert not (folder / "openvino_int8").exists() and (folder / "openvino").is_dir()
    assert report["metrics"]["export/fp32_auc"] == metrics["export/fp32_auc"]
    assert (folder / "model_fp32.onnx").is_file()


def test_int8_is_refused_when_it_is_not_faster_than_fp32(tiny_root, tiny_checkpoint, tmp_path):
    cfg = compose_cfg(
        "task=export", f"data.root={tiny_root}", "data.cache.workers=0", f"task.model={tiny_checkpoint}",
        "task.check_windows=8", "task.calibration_windows=8", "task.max_auc_drop=1.0",
        "task.int8_min_speedup=1000", tmp=tmp_path,
    )  # fmt: skip
    metrics = export.run(cfg)
    folder = tmp_path / "out" / "export"
    report = json.loads((folder / "export.json").read_text())
    names = ["int8"] + (["openvino_int8"] if "export/openvino_int8_auc" in metrics else [])
    for name in names:  # timed against its fp32 counterpart, then refused for the bound
        assert metrics[f"export/{name}_ms"] > 0 and metrics[f"export/{name}_fp32_ms"] > 0
        assert metrics[f"export/{name}_kept"] == 0.0 and name not in report["files"]
    assert not (folder / "model_int8.onnx").exists() and not (folder / "openvino_int8").exists()
    assert (folder / "model_fp32.onnx").is_file()


def test_a_model_that_fails_on_one_file_gives_it_median_rows(
    tiny_root, tiny_checkpoint, monkeypatch
):
    folder = tiny_root / "test_soundscapes"
    first = sorted(folder.glob("*.ogg"))[0]
    original = predict_module.FilePredictor._score_models

    def failing(self, wave, result):
        if result.path == str(first):
            raise RuntimeError("the model broke on this file")
        return original(self, wave, result)

    monkeypatch.setattr(predict_module.FilePredictor, "_score_models", failing)
    table, report = predict_folder(folder, {"models": [str(tiny_checkpoint)]}, progress=False)
    assert [i["file"] for i in report["bad_files"]] == [str(first)]
    bad = table[table["row_id"].str.startswith(first.stem + "_")]
    rest = table[~table["row_id"].str.startswith(first.stem + "_")]
    assert len(bad) == 6  # its own row count (a 30-s file), not a guess
    np.testing.assert_allclose(
        bad.iloc[0, 1:].to_numpy(float), rest.iloc[:, 1:].median().to_numpy()
    )


def test_scores_near_one_keep_their_order_in_the_file(tmp_path):
    scores = np.float32([1.0, 0.99999994, 0.9999999, 0.99999976])  # adjacent float32 values
    table = pd.DataFrame({"row_id": ["a_5", "a_10", "a_15", "a_20"], "c": scores})
    back = pd.read_csv(write_submission(table, tmp_path / "s.csv"))
    assert back["c"].to_numpy(np.float32).tolist() == scores.tolist()


def test_every_float32_score_is_read_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    scores = rng.random((40, 7), dtype=np.float32) ** 9
    scores[0] = [0.0, 1.0, 0.99999994, 1.4e-45, 1e-38, 0.1, 1e-30]  # edges and a subnormal
    scores[1] = np.float32(0.5) + np.spacing(np.float32(0.5)) * np.arange(7, dtype=np.float32)
    table = pd.DataFrame(scores, columns=[f"sp{i}" for i in range(7)])
    table.insert(0, "row_id", [f"file_{5 * (i + 1)}" for i in range(40)])
    path = write_submission(table, tmp_path / "s.csv")
    back = pd.read_csv(path)
    assert back.columns.tolist() == table.columns.tolist()
    assert back["row_id"].tolist() == table["row_id"].tolist()
    np.testing.assert_array_equal(back.iloc[:, 1:].to_numpy(np.float32), scores)
    first = path.read_text().splitlines()[1]
    assert first.startswith("file_5,0.00000000e+00,1.00000000e+00,9.99999940e-01,1.40129846e-45,")
    empty = write_submission(table.iloc[:0], tmp_path / "empty.csv")  # no rows: the header alone
    assert empty.read_text() == ",".join(table.columns) + "\n"


def test_score_cells_write_what_the_score_format_writes():
    """float64 scores (blends of several models) and float64's extremes: the same numbers
    as `%.9g` once read, three-digit exponents included."""
    rng = np.random.default_rng(1)
    values = rng.random((30, 9)) ** 40
    values[0, :4] = [5e-324, 1e-310, 123.456, 9.9999999996e-5]  # the last rounds up a decade
    lines = bytes(score_cells(values)).decode().splitlines()
    read = np.array([[float(c) for c in line.split(",")] for line in lines])
    np.testing.assert_array_equal(read, [[float(SCORE_FORMAT % v) for v in row] for row in values])
    assert lines[0].split(",")[3] == "1.00000000e-004"


def test_tables_the_fast_writer_cannot_take_are_written_by_pandas(tmp_path):
    table = pd.DataFrame({"row_id": ['a,"b"_5', "c_5"], "x": [0.25, -1.0], "y": [np.nan, 0.5]})
    back = pd.read_csv(write_submission(table, tmp_path / "s.csv"))
    assert back["row_id"].tolist() == ['a,"b"_5', "c_5"]
    assert back["x"].tolist() == [0.25, -1.0] and np.isnan(back["y"][0])


def test_the_scorer_refuses_extra_rows_as_it_refuses_missing_ones():
    solution = pd.DataFrame({"row_id": ["a_5", "a_10"], "x": [1, 0], "y": [0, 1]})
    submission = pd.DataFrame(
        {"row_id": ["a_5", "a_10", "a_15"], "x": [0.9, 0.1, 0.5], "y": [0.1, 0.9, 0.5]}
    )
    with pytest.raises(ValueError, match="1 row\\(s\\) the solution lacks"):
        competition_score(solution, submission)
    with pytest.raises(ValueError, match="lacks 1 row"):
        competition_score(solution, submission.iloc[:1])
    assert competition_score(solution, submission.iloc[:2]) == 1.0


def test_the_save_run_writes_the_sample_rows_or_the_header(tmp_path):
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("row_id,b,a\nx_5,0.5,0.5\n")
    rows = empty_submission(str(sample), ["b", "a"])
    assert rows["row_id"].tolist() == ["x_5"] and list(rows.columns) == ["row_id", "b", "a"]
    sample.write_text("row_id,b,a\n")
    assert list(empty_submission(str(tmp_path), ["b", "a"]).columns) == ["row_id", "b", "a"]
    assert len(empty_submission(None, ["a"])) == 0
