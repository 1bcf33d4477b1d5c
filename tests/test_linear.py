"""model=linear: shapes, exact linearity in the pooled statistics, and training on a separable toy."""

import pytest
import torch
from hydra.utils import instantiate

from birdclef.core.errors import ConfigError
from birdclef.models.build import net_config
from birdclef.models.layers import EPS
from birdclef.models.linear import PooledLinear
from tests.conftest import compose_cfg

B, F, T, K = 6, 16, 40, 3  # windows, bands, frames, classes


def features(seed: int = 0, shape=(B, 1, F, T)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 20 - 40  # dB-like


def test_shapes_and_config(tmp_path):
    net = PooledLinear(K, n_features=F)
    assert net(features()).shape == (B, K)
    assert net.statistics(features()).shape == (B, 2 * F)
    assert (
        sum(p.numel() for p in net.parameters()) == 2 * F * K + K
    )  # one linear layer, nothing else
    cfg = compose_cfg("model=linear", tmp=tmp_path)
    built = instantiate(net_config(cfg.model, instantiate(cfg.frontend)), num_classes=K)
    assert isinstance(built, PooledLinear) and built.n_features == cfg.frontend.n_mels


def test_wrong_band_count_is_one_config_error():
    with pytest.raises(ConfigError, match=r"built for features.*frontend it was built with"):
        PooledLinear(K, n_features=F + 1)(features())


def test_running_standardisation_is_the_pooled_mean_and_variance():
    net = PooledLinear(K, n_features=F).train()
    batches = [features(seed, shape=(n, 1, F, T)) for seed, n in enumerate([5, 1, 8])]
    for x in batches:
        net(x)
    stats = torch.cat([net.statistics(x) for x in batches])
    torch.testing.assert_close(net.norm.mean, stats.mean(0))
    torch.testing.assert_close(net.norm.var, stats.var(0, correction=0))
    assert net.norm.count.item() == 14


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_logits_are_exactly_linear_in_the_band_statistics(mode):
    torch.manual_seed(0)
    net = PooledLinear(K, n_features=F)
    net.train()(features(1))  # some standardisation other than the identity
    net.train(mode == "train")
    x = features(2)
    x2 = x.squeeze(1).double()
    stats = torch.cat([x2.mean(-1), ((x2 - x2.mean(-1, keepdim=True)) ** 2).mean(-1).sqrt()], -1)
    with torch.no_grad():
        logits = net(x)  # in train mode this updates the standardisation first
        mean, var = net.norm.mean.double(), net.norm.var.double()
        w, b = net.head.weight.double(), net.head.bias.double()
    expected = ((stats - mean) / torch.sqrt(var + EPS)) @ w.T + b
    torch.testing.assert_close(logits.double(), expected, rtol=1e-5, atol=1e-4)


def test_trains_on_a_separable_problem():
    # class k: band 2 + 5k is 12 dB louder; one linear read-out of the band means separates them
    gen = torch.Generator().manual_seed(3)
    labels = torch.arange(60) % K
    x = torch.randn((60, 1, F, T), generator=gen) * 6 - 50
    for k in range(K):
        x[labels == k, :, 2 + 5 * k] += 12
    torch.manual_seed(0)
    net = PooledLinear(K, n_features=F)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net.train()(x), labels)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = net.eval()(x).argmax(-1)
    assert loss.item() < 0.05
    assert torch.equal(predicted, labels)
