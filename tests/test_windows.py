import numpy as np
import pytest

from birdclef.core.rows import row_id, soundscape_ends, split_row_id
from birdclef.data.windows import cut_window, recording_window_starts

SR = 32000
W = 5 * SR


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (3.0, [0.0]),  # short: one padded window
        (5.0, [0.0]),
        (8.0, [0.0, 3.0]),  # leftover 3 s >= 2.5 s: one more window aligned to the end
        (12.4, [0.0, 5.0]),  # leftover 2.4 s < 2.5 s: dropped
        (12.6, [0.0, 5.0, 7.6]),  # leftover 2.6 s: window 7.6-12.6
        (12.5, [0.0, 5.0, 7.5]),  # exactly half a window counts
        (10.0, [0.0, 5.0]),
    ],
)
def test_clip_rule(seconds, expected):
    starts = recording_window_starts(int(round(seconds * SR)), W)
    assert [round(s / SR, 3) for s in starts] == expected


def test_cut_window_pads_short_audio_with_zeros():
    audio = np.ones(3 * SR, np.float32)
    window = cut_window(audio, 0, W)
    assert window.shape == (W,)
    assert window[: 3 * SR].sum() == 3 * SR and not window[3 * SR :].any()


def test_last_window_of_8s_file_is_its_last_5s():
    audio = np.arange(8 * SR, dtype=np.float32)
    last = cut_window(audio, recording_window_starts(len(audio), W)[-1], W)
    np.testing.assert_array_equal(last, audio[-W:])


def test_soundscape_grid_and_row_ids():
    assert soundscape_ends(60 * SR, SR, 5) == list(range(5, 61, 5))
    # every whole 5 s is a row, as in the solution files: 39 s has 7 rows, 12.4 s 2, 64 s 12
    assert soundscape_ends(39 * SR, SR, 5) == [5, 10, 15, 20, 25, 30, 35]
    assert soundscape_ends(int(12.4 * SR), SR, 5) == [5, 10]
    assert soundscape_ends(64 * SR, SR, 5) == list(range(5, 61, 5))
    # a last window at most 0.1 s short still counts: 59.99 s has 12 rows, 59.8 s 11
    assert soundscape_ends(60 * SR - 320, SR, 5) == list(range(5, 61, 5))
    assert soundscape_ends(int(59.8 * SR), SR, 5) == list(range(5, 56, 5))
    # a few samples over 60 s make no 13th row; a file shorter than 5 s gets one padded row
    assert soundscape_ends(60 * SR + 320, SR, 5) == list(range(5, 61, 5))
    assert soundscape_ends(2 * SR, SR, 5) == [5]
    assert row_id("H02_20230420_074000", 15) == "H02_20230420_074000_15"
    assert split_row_id("H02_20230420_074000_15") == ("H02_20230420_074000", 15)
    with pytest.raises(ValueError, match="row_id"):
        split_row_id("nounderscore")
