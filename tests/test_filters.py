"""The rating filter: which train.csv rows it keeps, exactly."""

import logging

import pandas as pd
import pytest
from hydra.utils import instantiate

from birdclef.core.errors import ConfigError, DataError
from birdclef.data.filters import NoFilter, RatingFilter
from tests.conftest import compose_cfg

# fmt: off
ROWS = [  # filename, primary_label, collection, rating
    ("a1", "a", "XC", 4.0),    # rated, good: kept
    ("a2", "a", "XC", 2.5),    # rated, poor: dropped
    ("a3", "a", "XC", 0.0),    # XC but unrated (0): kept
    ("a4", "a", "XC", 3.0),    # exactly min_rating: kept
    ("b1", "b", "iNat", 1.0),  # not Xeno-canto: its rating is not a grade, kept
    ("b2", "b", "CSA", 2.0),   # not Xeno-canto: kept
    ("b3", "b", "XC", 1.5),    # dropped, although its class keeps other rows
    ("c1", "c", "XC", 2.0),    # class c would vanish: its best keep_top=2 rows come back
    ("c2", "c", "XC", 1.0),
    ("c3", "c", "XC", 2.5),
    ("d1", "d", "XC", 1.0),    # class d would vanish: its only row comes back
]
# fmt: on


def train() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=["filename", "primary_label", "collection", "rating"])


def test_rating_filter_keeps_exactly_these_recordings(caplog):
    with caplog.at_level(logging.INFO, logger="birdclef.data.filters"):
        kept = RatingFilter(min_rating=3.0, keep_top=2)(train())
    # train.csv order is kept, the index is fresh
    assert list(kept["filename"]) == ["a1", "a3", "a4", "b1", "b2", "c1", "c3", "d1"]
    assert list(kept.index) == list(range(8))
    pd.testing.assert_frame_equal(
        kept, train().set_index("filename").loc[list(kept["filename"])].reset_index()
    )
    assert "kept 8 of 11 recordings" in caplog.text and "rescued classes: ['c', 'd']" in caplog.text


def test_rating_filter_rescues_only_emptied_classes_up_to_keep_top():
    assert list(RatingFilter(min_rating=3.0, keep_top=1)(train())["filename"]) == [
        "a1", "a3", "a4", "b1", "b2", "c3", "d1",
    ]  # fmt: skip
    # keep_top=0 lets emptied classes vanish
    assert list(RatingFilter(min_rating=3.0, keep_top=0)(train())["primary_label"].unique()) == [
        "a",
        "b",
    ]
    # a higher bar: class a keeps its unrated row, so it is not rescued; b keeps its non-XC rows
    assert list(RatingFilter(min_rating=4.5, keep_top=5)(train())["filename"]) == [
        "a3", "b1", "b2", "c1", "c2", "c3", "d1",
    ]  # fmt: skip
    # min_rating 0 keeps everything
    assert len(RatingFilter(min_rating=0.0)(train())) == len(ROWS)


def test_rating_filter_only_grades_xeno_canto():
    # the same low ratings on non-XC rows are never dropped, and no class needs rescuing
    frame = train().assign(collection="iNat")
    assert RatingFilter(min_rating=5.0, keep_top=0)(frame).equals(frame)


def test_rating_filter_refuses_bad_settings_and_missing_columns():
    with pytest.raises(ConfigError, match="filter.rating.min_rating=6"):
        RatingFilter(min_rating=6)
    with pytest.raises(ConfigError, match="filter.rating.keep_top=-1"):
        RatingFilter(keep_top=-1)
    with pytest.raises(
        DataError, match=r"column\(s\) \['collection'\]; set filter.rating.enabled=false"
    ):
        RatingFilter()(train().drop(columns="collection"))


def test_filter_configs_build_these_filters(tmp_path):
    rating = instantiate(compose_cfg("filter.rating.enabled=true", tmp=tmp_path).filter)
    assert isinstance(rating, RatingFilter) and (rating.min_rating, rating.keep_top) == (3.0, 5)
    none = instantiate(compose_cfg(tmp=tmp_path).filter)
    assert isinstance(none, NoFilter) and none(train()).equals(train())
