import shutil

import pandas as pd
import pytest

from birdclef.core.errors import DataError
from birdclef.data.metadata import load_metadata, load_soundscape_labels, parse_list


def copy_root(tiny_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(tiny_root, root)
    return root


def test_loads_synthetic_folder_with_string_labels(tiny_root):
    meta = load_metadata(tiny_root)
    assert len(meta.classes) == 6
    assert all(isinstance(c, str) for c in meta.classes)
    assert all(isinstance(x, list) for x in meta.train["secondary_labels"])
    assert all(isinstance(x, list) for x in meta.train["type"])
    assert meta.train["rating"].dtype.kind == "f"
    # numeric-looking iNaturalist ids stay strings
    taxonomy = pd.read_csv(tiny_root / "taxonomy.csv", dtype=str)
    assert set(meta.classes) == set(taxonomy["primary_label"])


def test_train_files_are_each_recording_once_with_its_class_folder(tiny_root):
    meta = load_metadata(tiny_root)
    twice = pd.concat([meta.train, meta.train.iloc[:1]], ignore_index=True)
    meta.train = twice  # a recording on two rows is listed once
    paths, keys, groups = meta.train_files()
    assert keys == list(dict.fromkeys(twice["filename"])) and len(keys) == len(twice) - 1
    assert paths == [tiny_root / "train_audio" / k for k in keys]
    assert groups == [k.split("/")[0] for k in keys] and set(groups) <= set(meta.classes)


def test_parse_list():
    assert parse_list("['song', 'call']", where="x") == ["song", "call"]
    assert parse_list("[]", where="x") == []
    assert parse_list("", where="x") == []
    assert parse_list("['1139490']", where="x") == ["1139490"]
    with pytest.raises(DataError, match="row 3"):
        parse_list("[song", where="train.csv row 3, type")


def test_missing_folder_and_files(tmp_path, tiny_root):
    with pytest.raises(DataError, match="does not exist"):
        load_metadata(tmp_path / "nope")
    root = copy_root(tiny_root, tmp_path)
    (root / "train.csv").unlink()
    with pytest.raises(DataError, match="train.csv not found"):
        load_metadata(root)


def test_missing_column_names_it(tmp_path, tiny_root):
    root = copy_root(tiny_root, tmp_path)
    train = pd.read_csv(root / "train.csv", dtype=str).drop(columns="secondary_labels")
    train.to_csv(root / "train.csv", index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) \['secondary_labels'\]"):
        load_metadata(root)


def test_unknown_primary_label(tmp_path, tiny_root):
    root = copy_root(tiny_root, tmp_path)
    train = pd.read_csv(root / "train.csv", dtype=str)
    train.loc[0, "primary_label"] = "notabird9"
    train.to_csv(root / "train.csv", index=False)
    with pytest.raises(DataError, match="notabird9"):
        load_metadata(root)


def test_secondary_outside_taxonomy_is_counted(tmp_path, tiny_root):
    root = copy_root(tiny_root, tmp_path)
    train = pd.read_csv(root / "train.csv", dtype=str)
    train.loc[0, "secondary_labels"] = "['zzzzzz1', 'zzzzzz1']"
    train.to_csv(root / "train.csv", index=False)
    assert load_metadata(root).unknown_secondary["zzzzzz1"] >= 2


def test_submission_must_match_taxonomy(tmp_path, tiny_root):
    root = copy_root(tiny_root, tmp_path)
    sub = pd.read_csv(root / "sample_submission.csv", dtype=str)
    sub.insert(1, "extra1", 0)
    sub.to_csv(root / "sample_submission.csv", index=False)
    with pytest.raises(DataError, match="extra1"):
        load_metadata(root)


def test_soundscape_labels(tiny_root):
    classes = load_metadata(tiny_root).classes
    labels = load_soundscape_labels(tiny_root, classes)
    assert len(labels) == 2 * 6  # two 30-s soundscapes
    assert list(labels.columns[:3]) == ["row_id", "stem", "end"]
    assert sorted(labels["end"].unique()) == [5, 10, 15, 20, 25, 30]
    assert set(labels[classes].to_numpy().ravel()) <= {0.0, 1.0}
