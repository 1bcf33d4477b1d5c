import numpy as np
import pytest

from birdclef.core.errors import ConfigError
from birdclef.data.labels import InformedLabels, presence

CLASSES = ["a", "b", "c", "1139490"]


def test_no_secondary_leftover_goes_to_null():
    target = InformedLabels(m=0.65).encode("b", [], CLASSES)
    np.testing.assert_allclose(target, [0, 0.65, 0, 0, 0.35])


def test_secondaries_share_the_leftover_equally():
    target = InformedLabels(m=0.65).encode("a", ["b", "1139490"], CLASSES)
    np.testing.assert_allclose(target, [0.65, 0.175, 0, 0.175, 0])
    target = InformedLabels(m=0.6).encode("c", ["a"], CLASSES)
    np.testing.assert_allclose(target, [0.4, 0, 0.6, 0, 0], atol=1e-7)


def test_secondaries_outside_taxonomy_or_equal_to_primary_are_ignored():
    target = InformedLabels(m=0.65).encode("a", ["zzz", "a"], CLASSES)
    np.testing.assert_allclose(target, [0.65, 0, 0, 0, 0.35])
    target = InformedLabels(m=0.5).encode("a", ["zzz", "c", "c"], CLASSES)
    np.testing.assert_allclose(target, [0.5, 0, 0.5, 0, 0])


def test_m_one_is_one_hot_and_null_stays_empty():
    np.testing.assert_array_equal(InformedLabels(m=1.0).encode("c", [], CLASSES), [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(
        InformedLabels(m=1.0).encode("c", ["a"], CLASSES), [0, 0, 1, 0, 0]
    )


def test_without_null_class_leftover_stays_on_primary():
    rule = InformedLabels(m=0.65, null_class=False)
    np.testing.assert_allclose(rule.encode("b", [], CLASSES), [0, 1, 0, 0])
    np.testing.assert_allclose(rule.encode("b", ["a"], CLASSES), [0.35, 0.65, 0, 0])
    assert rule.output_names(CLASSES) == CLASSES
    assert InformedLabels().output_names(CLASSES) == [*CLASSES, "null"]


def test_every_target_sums_to_one():
    rule = InformedLabels(m=0.7)
    targets = rule.encode_all(["a", "b", "c"], [[], ["a", "c"], ["x"]], CLASSES)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)


def test_presence_is_primary_plus_known_secondaries():
    truth = presence(["a", "b"], [["c", "zzz"], []], CLASSES)
    np.testing.assert_array_equal(truth, [[1, 0, 1, 0], [0, 1, 0, 0]])


@pytest.mark.parametrize("m", [0.0, -0.1, 1.5])
def test_bad_m_is_a_clear_error(m):
    with pytest.raises(ConfigError, match="label.m"):
        InformedLabels(m=m)


def test_multilabel_targets_make_secondary_species_positive():
    from birdclef.data.labels import MultiLabels

    rule = MultiLabels(secondary_weight=0.5)
    targets = rule.encode_all(["a", "b"], [["c", "zzz", "a"], []], CLASSES)
    np.testing.assert_array_equal(targets, [[1, 0, 0.5, 0], [0, 1, 0, 0]])
    assert rule.output_names(CLASSES) == CLASSES and rule.activation == "sigmoid"
    smoothed = MultiLabels(secondary_weight=0.0, smoothing=0.1).encode_all(
        ["1139490"], [["a"]], CLASSES
    )
    np.testing.assert_allclose(smoothed, [[0.1, 0.1, 0.1, 0.9]])
    with pytest.raises(ConfigError, match="label.secondary_weight"):
        MultiLabels(secondary_weight=1.5)
