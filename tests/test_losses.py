import pytest
import torch
import torch.nn.functional as F

from birdclef.core.activations import activate
from birdclef.core.errors import ConfigError
from birdclef.modules.losses import BCELoss, FocalBCELoss, FocalLoss, SoftCrossEntropy


def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=g)
    target = torch.softmax(torch.randn(8, 5, generator=g), dim=-1)
    return logits, target


def test_focal_with_gamma_zero_is_soft_cross_entropy():
    logits, target = batch()
    assert FocalLoss(gamma=0)(logits, target).item() == pytest.approx(
        SoftCrossEntropy()(logits, target).item(), rel=1e-6
    )


def test_focal_by_hand():
    logits = torch.tensor([[2.0, 0.0]])
    target = torch.tensor([[1.0, 0.0]])
    p = torch.softmax(logits, -1)[0, 0]
    expected = -((1 - p) ** 2) * torch.log(p)
    assert FocalLoss(gamma=2)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_bce_with_gamma_zero_is_bce():
    logits, target = batch()
    expected = F.binary_cross_entropy_with_logits(logits, target)
    assert FocalBCELoss(gamma=0)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert BCELoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert FocalBCELoss(gamma=2)(logits, target).item() < expected.item()


def test_activations():
    logits, _ = batch()
    assert torch.allclose(activate(logits, "softmax").sum(-1), torch.ones(8))
    assert torch.allclose(activate(logits, "sigmoid"), torch.sigmoid(logits))
    with pytest.raises(ConfigError):
        activate(logits, "tanh")
    with pytest.raises(ConfigError, match="gamma"):
        FocalLoss(gamma=-1)


class FrameNet(torch.nn.Module):
    """A stand-in SED net: fixed clip and frame logits, and a frame-loss weight."""

    def __init__(self, num_classes: int, frame_loss_weight: float = 0.5) -> None:
        super().__init__()
        self.frame_loss_weight = frame_loss_weight
        self.bias = torch.nn.Parameter(torch.zeros(num_classes))

    def forward(self, mel):
        g = torch.Generator().manual_seed(1)
        frames = torch.randn(len(mel), 7, len(self.bias), generator=g) + self.bias
        return {"logits": frames.mean(dim=1), "frame_logits": frames}


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_classifier_adds_the_frame_wise_max_term(weight):
    from birdclef.modules.classifier import Classifier

    net = {"_target_": "tests.test_losses.FrameNet", "frame_loss_weight": weight}
    module = Classifier(
        net, {"_target_": "birdclef.modules.losses.BCELoss"}, {}, ["a", "b"], ["a", "b", "null"]
    )
    outputs = module.net(torch.zeros(4, 1, 8, 8))
    target = torch.tensor([[1.0, 0, 0]] * 4)
    expected = F.binary_cross_entropy_with_logits(outputs["logits"], target)
    expected = expected + weight * F.binary_cross_entropy_with_logits(
        outputs["frame_logits"].amax(dim=1), target
    )
    assert module._loss(outputs, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.equal(module(torch.zeros(4, 1, 8, 8)), outputs["logits"])


@pytest.mark.parametrize(
    "loss", [FocalLoss(), SoftCrossEntropy(), BCELoss(), FocalBCELoss(alpha=0.25)]
)
def test_window_weights_scale_each_windows_loss(loss):
    """loss(weight=w) = mean_i w_i x loss of window i alone; all-one weights change nothing."""
    logits, target = batch()
    alone = torch.stack([loss(logits[i : i + 1], target[i : i + 1]) for i in range(len(logits))])
    assert loss(logits, target).item() == pytest.approx(alone.mean().item(), rel=1e-5)
    w = torch.linspace(0.0, 1.0, len(logits))
    assert loss(logits, target, w).item() == pytest.approx((w * alone).mean().item(), rel=1e-5)
    ones = torch.ones(len(logits))
    assert loss(logits, target, ones).item() == pytest.approx(loss(logits, target).item(), rel=1e-6)
