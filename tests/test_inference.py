"""The submission's building blocks: numpy front end, blends, post-processing, row mapping, writer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from birdclef.core.errors import InferenceError
from birdclef.data.frontend import MelFrontend, MfccFrontend
from birdclef.inference.blend import blend, ranks
from birdclef.inference.features import LogMelFrames, MelBands, cut_windows, mel_filterbank
from birdclef.inference.postprocess import postprocess, smooth, topk_scale
from birdclef.inference.predict import FileScores
from birdclef.inference.rows import rows_from_windows, window_starts
from birdclef.inference.submission import assemble, read_columns, validate, write_submission
from tests.conftest import compose_cfg

SR = 32000


@pytest.mark.parametrize(
    "kwargs", [{}, {"n_mels": 64, "n_fft": 1024, "hop_length": 320, "f_min": 50, "f_max": 14000}]
)
@pytest.mark.parametrize("seconds", [60 - 1e-4, 3.0, 0.01])
def test_numpy_frames_equal_the_training_front_end(kwargs, seconds):
    wave = np.random.default_rng(0).normal(0, 0.1, int(seconds * SR)).astype(np.float32)
    frontend = MelFrontend(SR, **kwargs)
    expected = frontend.frames(wave).numpy()
    got = LogMelFrames(frontend.frame_params())(wave)
    assert got.shape == expected.shape == (1 + len(wave) // frontend.hop_length, frontend.n_mels)
    assert np.abs(got - expected).max() < 1e-3  # dB


def test_fast_front_end_halves_the_frames_of_a_window(tmp_path):
    """`frontend=mel_fast` (the 1,100x submission setting): 160 frames per 5-s row, 5-s rows still
    on whole frames, and the numpy frames of predict/bundle equal the training front end's."""
    from hydra.utils import instantiate

    fast = instantiate(compose_cfg("frontend=mel_fast", tmp=tmp_path).frontend)
    default = instantiate(compose_cfg(tmp=tmp_path).frontend)
    assert (fast.hop_length, default.hop_length) == (1000, 500)
    assert 5 * SR % fast.hop_length == 0
    wave = np.random.default_rng(1).normal(0, 0.1, 10 * SR).astype(np.float32)
    assert fast(torch.from_numpy(wave[: 5 * SR])).shape[-1] == 160
    got = LogMelFrames(fast.frame_params())(wave)
    assert got.shape == (1 + 10 * SR // 1000, 128)
    assert np.abs(got - fast.frames(wave).numpy()).max() < 1e-3  # dB


@pytest.mark.parametrize("group", [1, 16, 200])
def test_banded_mel_equals_the_dense_product(group):
    """The mel filters applied band by band give the dense product (the zeros skipped), for
    groups of one filter, the default and one group of all; filters that are all zero too."""
    filters = mel_filterbank(SR, 2048, 128, 20, 16000)
    filters[:, 5] = 0.0  # a filter with no bins (more mels than bins at the low end)
    power = np.random.default_rng(2).random((300, 1025), dtype=np.float32) ** 4
    bands = MelBands(filters, group)
    got, expected = bands(power), power @ filters
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert (got[:, 5] == 0).all()
    if group == 16:  # it skips most of the dense product's work
        work = sum((high - low) * (last - first) for first, last, low, high, _ in bands.groups)
        assert work < filters.size / 5


def test_frames_are_a_view_of_mel_major_storage():
    """Frames are stored mel-major, so a window's [n_mels, frames] cut is a contiguous copy."""
    frames = LogMelFrames(MelFrontend(SR).frame_params())(np.zeros(SR, dtype=np.float32))
    assert frames.shape == (1 + SR // 500, 128) and frames.T.flags.c_contiguous


def test_mfcc_models_share_the_mel_frames():
    mfcc = MfccFrontend(SR, n_mfcc=20)
    assert LogMelFrames(mfcc.frame_params()).filters.shape == (1025, 128)


def test_cut_windows_pads_past_both_ends():
    frames = np.arange(12, dtype=np.float32).reshape(6, 2)  # 6 frames of 2 features
    out = cut_windows(frames, [-1, 4], 3, pad_value=-100.0)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0, 0], [-100, 0, 2])
    np.testing.assert_array_equal(out[1, 1], [9, 11, -100])


def test_rank_blend_is_the_mean_of_per_class_ranks():
    a = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]], np.float32)
    b = np.array([[30.0, 1.0], [20.0, 2.0], [10.0, 3.0]], np.float32)  # another scale
    np.testing.assert_allclose(ranks(a)[:, 0], [1 / 3, 2 / 3, 1.0])
    out = blend([a, b], "rank")
    np.testing.assert_allclose(out[:, 0], [2 / 3, 2 / 3, 2 / 3])  # opposite orders cancel
    out = blend([a, b], "rank", weights=[3, 1])
    np.testing.assert_allclose(out[:, 0], 0.75 * ranks(a)[:, 0] + 0.25 * ranks(b)[:, 0], rtol=1e-6)


def test_mean_and_power_blends():
    a, b = np.full((2, 1), 0.2, np.float32), np.full((2, 1), 0.6, np.float32)
    np.testing.assert_allclose(blend([a, b], "mean"), 0.4, rtol=1e-6)
    np.testing.assert_allclose(blend([a, b], "power", power=2.0), np.sqrt(0.2), rtol=1e-6)
    with pytest.raises(InferenceError, match="one non-negative weight per model"):
        blend([a, b], "mean", weights=[1.0])
    with pytest.raises(InferenceError, match="predict.blend='max'"):
        blend([a, b], "max")


def test_smoothing_kernel_renormalises_at_the_edges():
    scores = np.array([[1.0], [0.0], [0.0], [1.0]], np.float32)
    out = smooth(scores, [0.25, 0.5, 0.25])
    np.testing.assert_allclose(out[:, 0], [0.5 / 0.75 * 1 + 0, 0.25, 0.25, 0.5 / 0.75], rtol=1e-6)
    with pytest.raises(InferenceError, match="odd-length"):
        smooth(scores, [0.5, 0.5])


def test_topk_scale_multiplies_by_the_files_top_k_mean():
    scores = np.array([[0.9, 0.1], [0.5, 0.1], [0.1, 0.2]], np.float32)
    out = topk_scale(scores, k=2)
    np.testing.assert_allclose(out[:, 0], scores[:, 0] * 0.7, rtol=1e-6)
    np.testing.assert_allclose(out[:, 1], scores[:, 1] * 0.15, rtol=1e-6)
    assert postprocess(scores, 2, 1.0, [0.1, 0.8, 0.1]).max() <= 1.0


def test_overlapping_windows_average_into_rows():
    starts = window_starts(2, 2.5)  # 0, 2.5, 5, 7.5
    np.testing.assert_allclose(starts, [0, 2.5, 5, 7.5])
    scores = np.array([[1.0], [0.0], [0.0], [1.0]], np.float32)
    rows = rows_from_windows(scores, None, starts, 2)
    # row 0: window 0 covers 5 s (1.0), window 1 covers 2.5 s (0.0) -> 2/3
    np.testing.assert_allclose(rows[:, 0], [5 / 7.5, (2.5 * 0 + 5 * 0 + 2.5 * 1) / 10], rtol=1e-6)
    with pytest.raises(InferenceError, match="stride_seconds"):
        window_starts(2, 6)


def test_sed_rows_take_the_frames_inside_them():
    starts = np.array([0.0, 2.5])
    scores = np.zeros((2, 1), np.float32)
    frames = np.zeros((2, 4, 1), np.float32)  # 4 frames of 1.25 s per window
    frames[1, 3, 0] = 0.8  # window 2.5-7.5, frame at 6.25-7.5 s: inside row 1 only
    rows = rows_from_windows(scores, frames, starts, 2)
    np.testing.assert_allclose(rows[:, 0], [0.0, 0.8], atol=1e-6)


def _result(path, rows, value=None, error=None, classes=2):
    scores = {} if error else {0: np.full((rows, classes), value, np.float32)}
    return FileScores(path, rows, scores, error=error, seconds=rows * 5.0)


def test_assemble_fills_bad_files_with_class_medians_and_validates(tmp_path):
    results = [
        _result("a.ogg", 2, 0.2),
        _result("bad.ogg", 12, error="LibsndfileError: corrupt"),
        _result("c.ogg", 3, 0.6),
    ]
    frame, issues = assemble(results, [["x", "y"]], ["m"], ["y", "x"], blend_how="mean")
    assert list(frame.columns) == ["row_id", "y", "x"]
    assert frame["row_id"].tolist()[:3] == ["a_5", "a_10", "bad_5"]
    assert len(frame) == 17 and frame["row_id"].is_unique
    np.testing.assert_allclose(
        frame.loc[frame.row_id == "bad_60", "x"], 0.6
    )  # median of 0.2,0.2,0.6x3
    assert issues[0]["file"] == "bad.ogg"
    validate(frame, results, ["y", "x"])
    broken = frame.copy()
    broken.loc[0, "x"] = 1.5
    with pytest.raises(InferenceError, match=r"outside \[0, 1\]"):
        validate(broken, results, ["y", "x"])
    with pytest.raises(InferenceError, match="duplicate row ids"):
        validate(pd.concat([frame.iloc[:1], frame.iloc[:-1]]), results, ["y", "x"])
    path = write_submission(frame, tmp_path / "sub" / "submission.csv")
    assert pd.read_csv(path).shape == frame.shape
    assert [p.name for p in path.parent.iterdir()] == ["submission.csv"]


def test_models_with_other_classes_are_refused():
    results = [_result("a.ogg", 1, 0.5)]
    with pytest.raises(InferenceError, match="differ from the 3 submission columns"):
        assemble(results, [["x", "y"]], ["m.onnx"], ["x", "y", "z"])
    with pytest.raises(InferenceError, match="none of the 1 audio files"):
        assemble([_result("a.ogg", 12, error="empty")], [["x"]], ["m"], None)


def test_columns_come_from_sample_submission_or_taxonomy(tmp_path):
    (tmp_path / "taxonomy.csv").write_text("primary_label,class_name\n0012,Aves\nb,Aves\n")
    assert read_columns(tmp_path) == ["0012", "b"]
    (tmp_path / "sample_submission.csv").write_text("row_id,b,0012\n")
    assert read_columns(tmp_path) == ["b", "0012"]
    with pytest.raises(InferenceError, match="not found"):
        read_columns(tmp_path / "nope.csv")
