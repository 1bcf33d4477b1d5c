"""How batches are drawn (`data.loader`): random or class-balanced sampling, epoch-seeded draws, loaders."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler

from birdclef.core.errors import ConfigError

SAMPLERS = ("random", "balanced")


def check_sampler(sampler: str, balance_power: float) -> None:
    """Refuse a `data.loader.sampler` or `data.loader.balance_power` the DataModule cannot use."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"data.loader.sampler={sampler!r} must be one of {SAMPLERS}.")
    if not 0.0 <= balance_power <= 1.0:
        raise ConfigError(
            f"data.loader.balance_power={balance_power} must be in [0, 1] (0 = no balancing, "
            "1 = equal classes)."
        )


class EpochSeededSampler(WeightedRandomSampler):
    """Weighted draws seeded by (seed, epoch): a resumed run draws what it would have drawn.

    Lightning calls `set_epoch` before each training epoch.
    """

    def __init__(self, weights, num_samples: int, seed: int) -> None:
        super().__init__(weights, num_samples, replacement=True, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed * 100_003 + epoch)


class EpochRedrawSampler(Sampler[int]):
    """Every labelled window and `draws` of the `extra` windows after them, new ones each epoch.

    The pseudo-labelled windows (`data.pseudo.redraw`) sit after the `labelled` ones in the
    fit set; each epoch draws `draws` of them without replacement, seeded by (seed, epoch) as
    `EpochSeededSampler` is, and shuffles them in with the labelled ones. So an epoch keeps
    its length while, over the epochs, every pseudo row is read.
    """

    def __init__(self, labelled: int, extra: int, draws: int, seed: int) -> None:
        if not 0 <= draws <= extra:
            raise ValueError(f"cannot draw {draws} of {extra} windows without replacement")
        self.labelled, self.extra, self.draws, self.seed = labelled, extra, draws, seed
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed * 100_003 + epoch)

    def __iter__(self):
        g = self.generator
        extra = self.labelled + torch.randperm(self.extra, generator=g)[: self.draws]
        order = torch.cat([torch.arange(self.labelled), extra])
        return iter(order[torch.randperm(len(order), generator=g)].tolist())

    def __len__(self) -> int:
        return self.labelled + self.draws


def class_balanced_sampler(
    primary, n_classes: int, total: int, balance_power: float, seed: int,
    extra_draws: int | None = None,
) -> EpochSeededSampler:  # fmt: skip
    """Draw windows with weight n_c ** -balance_power, n_c = windows of their primary class.

    `primary`: the labelled windows' primary class indices; `total`: every window drawn
    from, the labelled ones first. Power 0 is plain shuffling; 1 makes every class equally
    likely per draw; the default 0.5 lifts the long tail without repeating a 1-recording
    class endlessly. Pseudo windows (no primary class: those past `primary`) get the
    labelled windows' mean weight, so they keep their share of draws. `extra_draws`
    (`data.pseudo.redraw`): an epoch draws the labelled windows' count plus this many, the
    pseudo windows weighted to that share. Lightning wraps it in a distributed sampler
    under DDP.
    """
    primary = torch.as_tensor(primary)
    counts = torch.bincount(primary, minlength=n_classes).clamp_min(1).double()
    weights = counts[primary].pow(-balance_power)
    extra = total - len(primary)
    draws = extra if extra_draws is None else extra_draws
    share = weights.mean() * (draws / extra if extra else 0.0)
    weights = torch.cat([weights, share.expand(extra)])
    return EpochSeededSampler(weights, num_samples=len(primary) + draws, seed=seed)


@dataclass(frozen=True)
class LoaderSpec:
    """`data.loader`: batch size, loader workers and how training draws its windows."""

    batch_size: int = 32
    num_workers: int = 0  # cached reads are cheap; 0 avoids fork overhead on small data
    sampler: str = "random"  # random | balanced (class-balanced draws for the long tail)
    balance_power: float = 0.5  # balanced: weight n_c ** -balance_power

    def __post_init__(self) -> None:
        check_sampler(self.sampler, self.balance_power)
        if self.batch_size < 1 or self.num_workers < 0:
            raise ConfigError(
                f"data.loader.batch_size={self.batch_size} must be >= 1 and "
                f"data.loader.num_workers={self.num_workers} >= 0."
            )

    def loader(self, dataset: Dataset, shuffle: bool = False, sampler=None) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, sampler=sampler,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )  # fmt: skip
