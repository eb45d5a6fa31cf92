"""Population Based Bandits (``scheduler="pb2"``): PBT whose explore step is a GP bandit.

PB2 (Parker-Holder et al. 2020) exploits like PBT, but instead of perturbing the
donor's config at random it fits a time-varying Gaussian process to the
population's data (how fast the metric improved, per unit of ``time_attr``, under
which hyperparameters, from which reward and when) and picks the new
hyperparameters within ``hyperparam_bounds`` by GP-UCB.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from typing import Any

from tunekit_core import space

from .pbt import PopulationBasedTraining, _TrialState

__all__ = ["PB2"]

logger = logging.getLogger(__name__)

# Only the latest data points feed the GP (its cost grows with the cube of their number).
_MAX_POINTS = 1000


def _flatten_bounds(bounds: dict, prefix: tuple = ()) -> dict[tuple, tuple[float, float]]:
    flat: dict[tuple, tuple[float, float]] = {}
    for key, value in bounds.items():
        path = (*prefix, key)
        if isinstance(value, dict):
            flat.update(_flatten_bounds(value, path))
            continue
        name = "/".join(str(p) for p in path)
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(
                f"hyperparam_bounds[{name!r}] must be a [low, high] list or tuple, got {value!r}."
            )
        low, high = value
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise ValueError(
                f"hyperparam_bounds[{name!r}] must hold two numbers [low, high], got {value!r}."
            )
        if low > high:
            raise ValueError(
                f"hyperparam_bounds[{name!r}] must be [low, high] with low <= high, got {value!r}."
            )
        flat[path] = (float(low), float(high))
    return flat


class PB2(PopulationBasedTraining):
    """Population Based Bandits: PBT with a GP-bandit explore step (Ray Tune's semantics).

    At each perturbation point PB2 records, per trial, the time, the hyperparameters
    in ``hyperparam_bounds`` and the (mode-adjusted) metric. When a bottom trial
    exploits a top trial, the change of the metric per unit of ``time_attr`` between
    consecutive records of the same trial and config becomes the GP's target, with
    the time, the reward before the change and the hyperparameters as inputs. The
    new hyperparameters maximise the upper confidence bound of the predicted
    improvement at the donor's time and reward; configs already chosen in the same
    round lower the confidence bonus around them, so a round spreads out. Until the
    donor has two records under one config, the donor's config is copied unchanged.

    Args:
        time_attr: The result field measuring progress (see PopulationBasedTraining).
        metric: The result field to optimise (else ``tunekit.run``'s metric).
        mode: ``"min"`` or ``"max"`` (else ``tunekit.run``'s mode).
        perturbation_interval: Perturbation period in units of ``time_attr``.
        hyperparam_bounds: Per config key a ``[low, high]`` range of a numeric
            hyperparameter, or a dict of such for nested keys. Missing initial
            values are sampled uniformly within it. Ints stay ints.
        quantile_fraction: The fraction of trials that exploit, and of trials
            exploited; between 0 and 0.5.
        log_config: Write the policy files (as PopulationBasedTraining does).
        require_attrs: Raise when a result lacks ``time_attr`` or ``metric``.
        synch: Synchronous rounds (as PopulationBasedTraining).
        custom_explore_fn: ``f(config) -> config`` applied to the chosen config.

    Uses numpy and scipy. Decisions are reproducible under ``random.seed(n)``
    called before the scheduler is created.
    """

    def __init__(
        self,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        perturbation_interval: float = 60.0,
        hyperparam_bounds: dict | None = None,
        quantile_fraction: float = 0.25,
        log_config: bool = True,
        require_attrs: bool = True,
        synch: bool = False,
        custom_explore_fn: Callable[[dict], dict] | None = None,
    ):
        if not hyperparam_bounds:
            raise ValueError(
                "PB2 needs `hyperparam_bounds`: a dict mapping each hyperparameter to explore "
                "to its [low, high] range, e.g. {'lr': [1e-4, 1e-1]}."
            )
        flat = _flatten_bounds(hyperparam_bounds)
        super().__init__(
            time_attr=time_attr,
            metric=metric,
            mode=mode,
            perturbation_interval=perturbation_interval,
            hyperparam_mutations=hyperparam_bounds,
            quantile_fraction=quantile_fraction,
            resample_probability=0.0,
            custom_explore_fn=custom_explore_fn,
            log_config=log_config,
            require_attrs=require_attrs,
            synch=synch,
        )
        self._hyperparam_bounds = hyperparam_bounds
        self._bounds_flat = flat
        # one row per perturbation point: (trial_id, time, hyperparameter values, score)
        self._data: list[tuple[str, float, tuple, float]] = []
        self._last_exploration_time: float = 0
        self._current: list[list[float]] | None = None  # configs chosen in this round

    def on_trial_add(self, runner: Any, trial: Any) -> None:
        """Sample hyperparameters the trial's config lacks uniformly within their bounds."""
        for path, (low, high) in self._bounds_flat.items():
            try:
                space.get_path(trial.config, path)
                continue
            except (KeyError, IndexError, TypeError):
                pass
            node = trial.config
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value = self._rng.uniform(low, high)
            trial.evaluated_params["/".join(str(p) for p in path)] = value
        super().on_trial_add(runner, trial)

    def _values(self, config: dict) -> tuple:
        return tuple(float(space.get_path(config, path)) for path in self._bounds_flat)

    def _save_trial_state(self, state: _TrialState, time: float, result: dict, trial: Any) -> float:
        score = super()._save_trial_state(state, time, result, trial)
        self._data.append((trial.trial_id, float(time), self._values(trial.config), float(score)))
        return score

    def _get_new_config(self, trial: Any, donor: Any) -> tuple[dict, dict]:
        """Hyperparameters for ``trial`` (continuing from ``donor``) chosen by GP-UCB."""
        max_time = max((row[1] for row in self._data), default=0)
        if max_time > self._last_exploration_time:
            self._current = None  # a new round: earlier choices no longer count
        values = self._explore(trial, donor)
        new_config = copy.deepcopy(donor.config)
        for path, value in zip(self._bounds_flat, values):
            space.set_path(new_config, path, value)
        max_time = max((row[1] for row in self._data), default=0)
        chosen = [float(v) for v in values]
        if max_time > self._last_exploration_time or self._current is None:
            self._last_exploration_time = max_time
            self._current = [chosen]
        else:
            self._current.append(chosen)
        if self._custom_explore_fn is not None:
            new_config = self._custom_explore_fn(new_config)
            if new_config is None:
                raise ValueError(
                    "custom_explore_fn returned None; it must return the (modified) config dict."
                )
        return new_config, {}

    def _explore(self, trial: Any, donor: Any) -> list:
        """The new hyperparameter values, typed like the donor's; records the new point."""
        import numpy as np

        from . import gp

        points = _improvement_points(self._data)[-_MAX_POINTS:]
        base_points = [p for p in points if p[4] == donor.trial_id]
        donor_values = [space.get_path(donor.config, path) for path in self._bounds_flat]
        if not base_points:
            return donor_values
        X = np.array([[p[0], p[1], *p[2]] for p in points], dtype=float)
        y = np.array([p[3] for p in points], dtype=float)
        base = base_points[-1]
        newpoint = np.array([base[0], base[1]], dtype=float)
        bounds = np.array(list(self._bounds_flat.values()), dtype=float).T
        current = None if self._current is None else np.array(self._current, dtype=float)
        seed = self._rng.getrandbits(63)
        chosen = gp.select_config(
            X, y, current, newpoint, bounds, num_fixed=2, rng=np.random.default_rng(seed)
        )
        values = []
        for raw, old, (low, high) in zip(chosen, donor_values, self._bounds_flat.values()):
            value = min(max(float(raw), low), high)
            if isinstance(old, int) and not isinstance(old, bool):
                value = int(min(max(round(value), math.ceil(low)), math.floor(high)))
            values.append(value)
        # The trial continues from the donor's time and reward with the new values:
        # its next record measures the improvement they bring.
        self._data.append((trial.trial_id, base[0], tuple(float(v) for v in values), base[5]))
        return values

    def debug_string(self) -> str:
        return f"PB2: {self._num_checkpoints} checkpoints, {self._num_perturbations} perturbs"

    _STATE_FIELDS = (
        *PopulationBasedTraining._STATE_FIELDS,
        "_data",
        "_last_exploration_time",
        "_current",
    )


def _improvement_points(data: list[tuple[str, float, tuple, float]]) -> list[tuple]:
    """Per record, the improvement rate since the previous record of the same trial and config.

    Returns ``(time, reward_before, values, rate, trial_id, reward)`` tuples in time
    order, for records that follow one of the same trial and config at an earlier time.
    """
    order = sorted(range(len(data)), key=lambda i: data[i][1])
    previous: dict[tuple, tuple[float, float]] = {}
    points = []
    for index in order:
        trial_id, time, values, reward = data[index]
        key = (trial_id, values)
        before = previous.get(key)
        previous[key] = (time, reward)
        if before is None:
            continue
        dt = time - before[0]
        if not dt > 0:
            continue
        rate = (reward - before[1]) / dt
        if math.isnan(rate):
            continue
        points.append((time, before[1], values, rate, trial_id, reward))
    return points
