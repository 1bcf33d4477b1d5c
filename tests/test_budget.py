"""The training budget: epochs enough for optim.min_steps, within optim.min_epochs..max_epochs."""

import pytest

from birdclef.core.errors import ConfigError
from birdclef.modules.schedules import budget_epochs

OPTIM = {"min_steps": 300, "min_epochs": 10, "max_epochs": 100}


@pytest.mark.parametrize(
    ("steps_per_epoch", "epochs"),
    [(1, 100), (3, 100), (4, 75), (10, 30), (29, 11), (30, 10), (1000, 10)],
)
def test_small_sets_train_more_epochs_within_the_limits(steps_per_epoch, epochs):
    assert budget_epochs(OPTIM, steps_per_epoch) == epochs


def test_bad_budgets_are_one_clear_error():
    with pytest.raises(ConfigError, match="optim.min_epochs=0"):
        budget_epochs({**OPTIM, "min_epochs": 0}, 10)
    with pytest.raises(ConfigError, match="optim.max_epochs=5"):
        budget_epochs({**OPTIM, "max_epochs": 5}, 10)
    with pytest.raises(ConfigError, match="optim.min_steps=-1"):
        budget_epochs({**OPTIM, "min_steps": -1}, 10)
