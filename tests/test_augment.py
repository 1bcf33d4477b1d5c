import pytest
import torch

from birdclef.core.errors import ConfigError
from birdclef.data.augment import BatchAugment, _to_power


def batch(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    mel = torch.rand(n, 1, 8, 10, generator=g) * 40 - 60
    target = torch.eye(4)[:n]
    return {
        "features": mel,
        "target": target,
        "truth": target[:, :3].clone(),
        "background": torch.rand(n, 1, 8, 10, generator=g) * 40 - 70,
    }


def test_all_off_is_identity():
    b = batch()
    out = BatchAugment()(b)
    for key in b:
        assert torch.equal(out[key], b[key])


def swapped(seed_from=0):
    """A seed for which randperm(2) swaps, so each clip is mixed with the other."""
    for seed in range(seed_from, seed_from + 100):
        torch.manual_seed(seed)
        if torch.randperm(2).tolist() == [1, 0]:
            return seed
    raise AssertionError


@pytest.mark.parametrize("rule", ["max", "linear"])
def test_mixup_mixes_power_and_targets_by_rule(rule):
    b = batch()
    torch.manual_seed(swapped())
    out = BatchAugment(mixup_p=1.0, mixup_rule=rule)(b)
    p_a, p_b, p_mix = (
        _to_power(b["features"][0]),
        _to_power(b["features"][1]),
        _to_power(out["features"][0]),
    )
    lam = ((p_mix - p_b) / (p_a - p_b)).flatten()
    assert torch.allclose(lam, lam[0].expand_as(lam), atol=1e-3)  # one weight for the whole window
    lam = lam[0].item()
    assert 0.5 <= lam <= 1.0  # folded: the clip dominates
    expected = (
        torch.tensor([1.0, 1.0, 0, 0]) if rule == "max" else torch.tensor([lam, 1 - lam, 0, 0])
    )
    assert torch.allclose(out["target"][0], expected, atol=1e-3)
    assert torch.equal(out["truth"][0], torch.tensor([1.0, 1.0, 0.0]))  # presence is the union


def test_mixup_renormalises_for_softmax_losses():
    torch.manual_seed(swapped())
    out = BatchAugment(mixup_p=1.0, mixup_rule="max")(batch(), softmax=True)
    assert torch.allclose(out["target"][0], torch.tensor([0.5, 0.5, 0, 0]))


def test_background_keeps_target_and_adds_power_at_snr():
    b = batch(4)
    out = BatchAugment(background_p=1.0, background_snr_db=(10.0, 10.0))(b)
    assert torch.equal(out["target"], b["target"])
    added = _to_power(out["features"]) - _to_power(b["features"])
    assert (added > 0).all()
    ratio = _to_power(b["features"]).mean(dim=(-2, -1)) / added.mean(dim=(-2, -1))
    assert torch.allclose(ratio, torch.full_like(ratio, 10.0), rtol=1e-3)  # 10 dB


def test_background_study_rule_pulls_label_to_null():
    b = batch(3)
    out = BatchAugment(background_p=1.0, background_label="study")(b, null_index=3)
    lam = out["target"][:, :3].sum(dim=1)
    assert ((lam >= 0.5) & (lam <= 1.0)).all()
    assert torch.allclose(out["target"][:, 3], 1 - lam)
    expected = lam.view(3, 1, 1, 1) * b["features"] + (1 - lam.view(3, 1, 1, 1)) * b["background"]
    assert torch.allclose(out["features"], expected, atol=1e-4)


def test_background_without_soundscapes_is_a_clear_error():
    b = batch()
    del b["background"]
    with pytest.raises(ConfigError, match="train_soundscapes"):
        BatchAugment(background_p=0.5)(b)


def test_masks_fill_stripes_with_the_window_mean():
    b = batch(4)
    torch.manual_seed(0)
    out = BatchAugment(time_masks=1, time_mask_fraction=0.5)(b)["features"]
    changed = (out != b["features"]).any(dim=2).squeeze(1)  # [n, frames] columns touched
    assert changed.any()  # this seed draws at least one non-empty stripe
    for i in range(4):
        cols = changed[i].nonzero().flatten()
        assert len(cols) <= 5
        if len(cols):
            assert cols.max() - cols.min() + 1 == len(cols)  # one contiguous stripe
            assert torch.allclose(out[i, 0, :, cols], b["features"][i].mean().expand(8, len(cols)))


@pytest.mark.parametrize(
    "kwargs",
    [{"mixup_p": 2.0}, {"mixup_rule": "min"}, {"background_label": "x"}, {"mixup_alpha": 0.0}],
)
def test_bad_settings(kwargs):
    with pytest.raises(ConfigError, match="augment"):
        BatchAugment(**kwargs)


def test_mixup_keeps_the_smaller_loss_weight():
    b = batch()
    b["weight"] = torch.tensor([1.0, 0.3])
    torch.manual_seed(swapped())
    out = BatchAugment(mixup_p=1.0)(b)
    assert torch.allclose(out["weight"], torch.tensor([0.3, 0.3]))  # each mixed with the other
