import numpy as np
import pandas as pd
import pytest

from birdclef.core.errors import ConfigError
from birdclef.data.splits import fold_split, grouped_split


def frame():
    rows = []
    for label, n in (("a", 10), ("b", 5), ("c", 3), ("d", 2), ("e", 1)):
        for i in range(n):
            for window in range(3):  # several windows per recording share its filename
                rows.append(
                    {"primary_label": label, "filename": f"{label}/{i}.ogg", "window": window}
                )
    return pd.DataFrame(rows)


def test_split_groups_recordings_and_stratifies():
    data = frame()
    is_val = grouped_split(data, val_fraction=0.2, seed=1, min_recordings=3)
    sides = data.assign(val=is_val).groupby("filename")["val"].nunique()
    assert (sides == 1).all()  # no recording on both sides
    val_files = data[is_val].drop_duplicates("filename").groupby("primary_label").size().to_dict()
    assert val_files == {
        "a": 2,
        "b": 1,
        "c": 1,
    }  # round(0.2 n), at least 1; rare d and e train only


def test_split_is_fixed_by_seed():
    data = frame()
    np.testing.assert_array_equal(grouped_split(data, 0.3, 5), grouped_split(data, 0.3, 5))
    assert not np.array_equal(grouped_split(data, 0.3, 5), grouped_split(data, 0.3, 6))


def test_every_class_keeps_a_training_recording():
    data = frame()
    is_val = grouped_split(data, val_fraction=0.9, seed=0, min_recordings=2)
    assert set(data[~is_val]["primary_label"]) == set("abcde")


def test_bad_fraction():
    with pytest.raises(ConfigError, match="val_fraction"):
        grouped_split(frame(), 1.0, 0)


def test_folds_hold_out_every_recording_once():
    data = frame()  # 21 recordings of 5 classes, 3 windows each
    masks = [fold_split(data, folds=4, fold=k, seed=3) for k in range(4)]
    held = np.stack(masks).sum(axis=0)
    assert (held == 1).all()  # every row (so every recording) in exactly one fold
    for is_val in masks:
        sides = data.assign(val=is_val).groupby("filename")["val"].nunique()
        assert (sides == 1).all()  # a recording's windows stay together
    sizes = [data[m]["filename"].nunique() for m in masks]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 21
    # stratified: class a's 10 recordings spread 3/3/2/2 over the 4 folds
    a = [data[m & (data["primary_label"] == "a")]["filename"].nunique() for m in masks]
    assert sorted(a) == [2, 2, 3, 3]
    assert np.array_equal(masks[1], fold_split(data, folds=4, fold=1, seed=3))  # seeded
    assert not np.array_equal(masks[1], fold_split(data, folds=4, fold=1, seed=4))


@pytest.mark.parametrize("folds,fold", [(1, 0), (4, 4), (4, -1), (2.5, 0)])
def test_bad_folds_are_one_config_error(folds, fold):
    with pytest.raises(ConfigError, match="data.split.folds"):
        fold_split(frame(), folds=folds, fold=fold, seed=0)
