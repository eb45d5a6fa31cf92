"""Population Based Training (``scheduler="pbt"``) and its replay (``"pbt_replay"``).

PBT trains a population of trials side by side. Every ``perturbation_interval``
units of ``time_attr`` a trial is ranked against the population: a trial in the
bottom ``quantile_fraction`` *exploits* a trial of the top fraction (it continues
from that trial's checkpoint) and *explores* (it continues with a perturbed copy of
that trial's config). The config schedule each trial followed is written to policy
files that :class:`PopulationBasedTrainingReplay` replays.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import pickle
import shutil
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from tunekit_fifo import FIFOScheduler

from tunekit_core import space
from tunekit_core.scheduler import validate_mode

__all__ = ["PopulationBasedTraining", "PopulationBasedTrainingReplay"]

logger = logging.getLogger(__name__)

# The metric name used when only a mode was given (Ray Tune's DEFAULT_METRIC).
DEFAULT_METRIC = "_metric"
TRAINING_ITERATION = "training_iteration"

_PENDING = "PENDING"
_PAUSED = "PAUSED"
_RUNNING = "RUNNING"
_FINISHED = ("TERMINATED", "ERROR")

# A donor whose checkpoint is still being written (a class trainable pausing to save).
_AWAIT = object()


class _TrialState:
    """What PBT remembers about one trial (plain data: it is saved with the scheduler)."""

    def __init__(self, orig_tag: str):
        self.orig_tag = orig_tag
        self.last_score: float | None = None  # mode-adjusted: higher is better
        self.last_result: dict | None = None  # flat result at the last perturbation point
        self.last_checkpoint: str | None = None  # path, while the trial is a top trial
        self.checkpoint_iteration: int | None = None  # iteration that checkpoint belongs to
        self.checkpoint_pending = False  # being saved by a pause (class trainables)
        self.last_perturbation_time: float = 0
        self.last_train_time: float = 0

    def __repr__(self) -> str:
        return (
            f"_TrialState(score={self.last_score}, checkpoint={self.last_checkpoint}, "
            f"train_time={self.last_train_time}, perturbation_time={self.last_perturbation_time})"
        )


# -- explore ------------------------------------------------------------------------------------


def explore(
    config: dict,
    mutations: Mapping,
    resample_probability: float,
    perturbation_factors: tuple[float, ...] | list[float],
    custom_explore_fn: Callable[[dict], dict] | None,
    rng: Any,
) -> tuple[dict, dict]:
    """A perturbed copy of ``config`` and, per mutated key, what was done to it.

    For each key of ``mutations``: a list or tuple is a set of categorical values
    (resampled with ``resample_probability`` or when the current value is not in
    it, otherwise shifted to a neighbouring value); a search-space domain or a
    callable is a continuous distribution (resampled with ``resample_probability``,
    otherwise multiplied by one of ``perturbation_factors``); a dict holds nested
    mutations. Ints stay ints (rounded), bools stay bools. ``custom_explore_fn``
    then gets the new config and returns the final one.
    """
    operations: dict[str, Any] = {}
    new_config = copy.deepcopy(config)
    for key, distribution in mutations.items():
        if isinstance(distribution, dict):
            nested, nested_ops = explore(
                config[key], distribution, resample_probability, perturbation_factors, None, rng
            )
            new_config[key] = nested
            operations[key] = nested_ops
        elif isinstance(distribution, (list, tuple)):
            current = config[key]
            if rng.random() < resample_probability or current not in distribution:
                new_config[key] = rng.choice(distribution)
                operations[key] = "resample"
            else:
                shift = rng.choice([-1, 1])
                old_index = list(distribution).index(current)
                new_index = min(max(old_index + shift, 0), len(distribution) - 1)
                new_config[key] = distribution[new_index]
                direction = "left" if shift == -1 else "right"
                operations[key] = f"shift {direction}{' (noop)' if new_index == old_index else ''}"
        elif isinstance(distribution, space.Domain) or callable(distribution):
            if rng.random() < resample_probability:
                if isinstance(distribution, space.Domain):
                    new_config[key] = distribution.sample(random_state=rng)
                else:
                    new_config[key] = distribution()
                operations[key] = "resample"
            else:
                factor = rng.choice(list(perturbation_factors))
                new_config[key] = config[key] * factor
                operations[key] = f"* {factor}"
            if isinstance(config[key], bool):
                new_config[key] = bool(new_config[key])
            elif isinstance(config[key], int):
                new_config[key] = int(round(new_config[key]))
        else:
            raise ValueError(
                f"hyperparam_mutations[{key!r}] is a {type(distribution).__name__}; expected a "
                "list/tuple of values, a search-space domain (tunekit.uniform, ...), a callable "
                "or a dict of nested mutations."
            )
    if custom_explore_fn is not None:
        new_config = custom_explore_fn(new_config)
        if new_config is None:
            raise ValueError(
                "custom_explore_fn returned None; it must return the (modified) config dict."
            )
    return new_config, operations


def make_experiment_tag(orig_tag: str, config: Mapping, mutations: Mapping) -> str:
    """``"<orig_tag>@perturbed[lr=0.0120,...]"``: the tag of a trial after an exploit."""
    resolved = {("config", key): config[key] for key in mutations if key in config}
    return f"{orig_tag}@perturbed[{space.format_vars(resolved)}]"


def fill_config(config: dict, attr: str, search_space: Any, rng: Any) -> None:
    """Set ``config[attr]`` by sampling ``search_space`` (a missing initial value)."""
    if isinstance(search_space, space.Domain):
        config[attr] = search_space.sample(random_state=rng)
    elif isinstance(search_space, (list, tuple)):
        config[attr] = rng.choice(search_space)
    elif isinstance(search_space, dict):
        config[attr] = {}
        for key, value in search_space.items():
            fill_config(config[attr], key, value, rng)
    elif callable(search_space):
        config[attr] = search_space()


def filter_mutated_params(config: Mapping, mutations: Mapping) -> dict:
    """The part of ``config`` that ``mutations`` mutates (nested dicts filtered too)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key not in mutations:
            continue
        if isinstance(value, dict) and isinstance(mutations[key], dict):
            out[key] = filter_mutated_params(value, mutations[key])
        else:
            out[key] = value
    return out


def summarize_changes(old: Mapping, new: Mapping, operations: Mapping, prefix: str = "") -> str:
    """Lines ``key : old --- (op) --> new`` describing an explore step."""
    lines = ""
    for key, old_value in old.items():
        new_value = new.get(key)
        if isinstance(old_value, dict):
            lines += f"{prefix}{key} :\n"
            lines += summarize_changes(
                old_value, new_value or {}, operations.get(key) or {}, prefix + "    "
            )
        else:
            op = operations.get(key)
            arrow = f"--- ({op}) -->" if op else "----->"
            lines += f"{prefix}{key} : {old_value} {arrow} {new_value}\n"
    return lines


def _json_default(value: Any) -> Any:
    """JSON for numpy scalars/arrays and anything else (as its string)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


def _flat_keys(result: Mapping) -> str:
    return ", ".join(sorted(k for k in result if k != "config"))


def _is_class_trainable(trial: Any) -> bool:
    """Whether ``trial`` runs a class trainable (its pause saves a checkpoint)."""
    experiment = getattr(getattr(trial, "_source", None), "experiment", None)
    return bool(getattr(experiment, "is_class", False))


def _checkpoint_at(trial: Any, iteration: int | None) -> str | None:
    """The path of ``trial``'s kept checkpoint of ``iteration``, if any."""
    if iteration is None:
        return None
    manager = getattr(trial, "checkpoint_manager", None)
    for entry in reversed(getattr(manager, "entries", None) or []):
        if entry.get("iteration") == iteration and os.path.isdir(entry["path"]):
            return entry["path"]
    return None


def _latest_checkpoint(trial: Any) -> tuple[str | None, int | None]:
    manager = getattr(trial, "checkpoint_manager", None)
    latest = getattr(manager, "latest", None)
    if not latest:
        return None, None
    return latest["path"], latest.get("iteration")


# -- the scheduler ----------------------------------------------------------------------------


class PopulationBasedTraining(FIFOScheduler):
    """Population Based Training (Jaderberg et al. 2017), with Ray Tune's semantics.

    Every ``perturbation_interval`` units of ``time_attr`` (after ``burn_in_period``),
    a trial is ranked by its latest ``metric`` among the trials that reached a
    perturbation point. A trial in the bottom ``quantile_fraction`` stops, takes the
    latest checkpoint of a random trial of the top ``quantile_fraction`` and goes on
    from it with that trial's config perturbed by :func:`explore`. Top trials need a
    checkpoint at their perturbation point: function trainables report one with
    ``tunekit.report(..., checkpoint=...)`` (and read it with
    ``tunekit.get_checkpoint()``); class trainables are paused to save one when
    their result did not come with a checkpoint (``save_checkpoint``/
    ``load_checkpoint``; with ``reuse_actors=True`` a worker keeps its instance and
    calls ``reset_config``).

    All trials are one population. When not all fit on the machine, a trial that
    reaches a perturbation point while others wait is paused so that the trials
    take turns, the one with the least training time first.

    Args:
        time_attr: The result field measuring progress; it must increase
            (``"training_iteration"``, ``"time_total_s"``, a step counter...).
        metric: The result field to optimise (else ``tunekit.run``'s metric).
        mode: ``"min"`` or ``"max"`` (else ``tunekit.run``'s mode).
        perturbation_interval: A trial is ranked (and possibly exploits) each time
            this much ``time_attr`` passed since its last perturbation.
        burn_in_period: No perturbation before ``time_attr`` reaches this.
        hyperparam_mutations: Per config key: a list/tuple of values (moved to a
            neighbour or resampled), a search-space domain (``tunekit.uniform``...)
            or a callable returning a value (multiplied by a perturbation factor or
            resampled), or a dict of such for nested keys. Missing initial values
            are sampled from it. ``tunekit.sample_from`` is not accepted.
        quantile_fraction: The fraction of trials that exploit, and of trials
            exploited; between 0 and 0.5.
        resample_probability: Chance of resampling a value instead of perturbing it.
        perturbation_factors: The factors a continuous value is multiplied by.
        custom_explore_fn: ``f(config) -> config`` applied after the mutations.
        log_config: Write ``pbt_global.txt`` and ``pbt_policy_<trial_id>.txt`` in the
            experiment directory (one JSON list per exploit: target tag, donor tag,
            target iteration, donor iteration, donor config, new config).
        require_attrs: Raise when a result lacks ``time_attr`` or ``metric`` (else
            warn once and skip such results).
        synch: Synchronous PBT: trials wait at each perturbation point until all
            reached it, then the whole population is ranked at once.

    The scheduler's random choices use a private generator seeded from Python's
    ``random`` module when the scheduler is created, so ``random.seed(n)`` before
    creating it makes the decisions reproducible; the generator is saved with the
    scheduler's state.
    """

    def __init__(
        self,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        perturbation_interval: float = 60.0,
        burn_in_period: float = 0.0,
        hyperparam_mutations: dict | None = None,
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        perturbation_factors: tuple[float, float] = (1.2, 0.8),
        custom_explore_fn: Callable[[dict], dict] | None = None,
        log_config: bool = True,
        require_attrs: bool = True,
        synch: bool = False,
    ):
        hyperparam_mutations = hyperparam_mutations or {}
        _validate_mutations(hyperparam_mutations)
        if not hyperparam_mutations and custom_explore_fn is None:
            raise ValueError(
                f"{type(self).__name__} needs `hyperparam_mutations` or `custom_explore_fn` (or "
                "both) to know how to explore; got neither."
            )
        if not 0 <= quantile_fraction <= 0.5:
            raise ValueError(
                f"quantile_fraction must be between 0 and 0.5, got {quantile_fraction!r}."
            )
        if not perturbation_interval > 0:
            raise ValueError(
                f"perturbation_interval must be a positive number, got {perturbation_interval!r}."
            )
        if not 0 <= resample_probability <= 1:
            raise ValueError(
                f"resample_probability must be between 0 and 1, got {resample_probability!r}."
            )
        if not perturbation_factors:
            raise ValueError("perturbation_factors must hold at least one factor, e.g. (1.2, 0.8).")
        validate_mode(mode)
        super().__init__()
        self._metric = metric
        self._mode = mode
        self._metric_op: float | None = None
        self._set_metric_op()
        self._time_attr = time_attr
        self._perturbation_interval = perturbation_interval
        self._burn_in_period = burn_in_period
        self._hyperparam_mutations = hyperparam_mutations
        self._quantile_fraction = quantile_fraction
        self._resample_probability = resample_probability
        self._perturbation_factors = tuple(perturbation_factors)
        self._custom_explore_fn = custom_explore_fn
        self._log_config = log_config
        self._require_attrs = require_attrs
        self._synch = synch
        self._next_perturbation_sync = max(perturbation_interval, burn_in_period)
        self.supports_buffered_results = False
        self._rng = space.make_rng(None)
        # trial_id -> state; trial_id -> donor trial_id whose checkpoint is being saved;
        # trial_id -> checkpoint to restore at its next start (kept for resumes)
        self._trial_state: dict[str, _TrialState] = {}
        self._awaiting: dict[str, str] = {}
        self._restore_plan: dict[str, str] = {}
        self._num_checkpoints = 0
        self._num_perturbations = 0
        self._warned: set[str] = set()
        self._trials: dict[str, Any] = {}  # trial_id -> Trial (not saved: rebuilt from the runner)
        self._reporting: str | None = None  # the trial whose result is being decided

    # -- metric and mode ------------------------------------------------------------------
    def _set_metric_op(self) -> None:
        self._metric_op = {"max": 1.0, "min": -1.0}.get(self._mode)

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Take ``metric``/``mode`` from ``tunekit.run`` (Ray Tune's rules).

        Returns False when the scheduler already has a metric and ``metric`` is
        given too (or likewise for the mode). With a mode but no metric, the
        metric is ``"_metric"`` (what ``tunekit.report(value)`` reports).
        """
        validate_mode(mode)
        if self._metric and metric:
            return False
        if self._mode and mode:
            return False
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        self._set_metric_op()
        if self._metric is None and self._mode:
            self._metric = DEFAULT_METRIC
        return True

    # -- bookkeeping ----------------------------------------------------------------------
    def _state(self, trial: Any) -> _TrialState:
        state = self._trial_state.get(trial.trial_id)
        if state is None:
            # A trial created after the last save of a resumed run, or added without
            # on_trial_add: it joins the population now.
            state = self._trial_state[trial.trial_id] = _TrialState(trial.experiment_tag)
        self._trials[trial.trial_id] = trial
        return state

    def _trial(self, runner: Any, trial_id: str) -> Any:
        trial = self._trials.get(trial_id)
        if trial is None:
            for candidate in runner.get_trials():
                self._trials[candidate.trial_id] = candidate
            trial = self._trials.get(trial_id)
        return trial

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    def on_trial_add(self, runner: Any, trial: Any) -> None:
        """Register ``trial`` in the population; sample config keys it lacks."""
        if not self._metric or self._metric_op is None:
            raise ValueError(
                f"{type(self).__name__} has no `metric` ({self._metric!r}) or `mode` "
                f"({self._mode!r}). Pass them to the scheduler, or to tunekit.run(metric=..., "
                "mode=...)."
            )
        keep = getattr(getattr(trial, "checkpoint_manager", None), "keep", None)
        if keep is not None and keep <= 2 and "keep" not in self._warned:
            self._warned.add("keep")
            warnings.warn(
                f"keep_checkpoints_num={keep} with {type(self).__name__}: a checkpoint may be "
                "deleted before the trial exploiting it restores it. Keep more checkpoints "
                "(or None).",
                stacklevel=2,
            )
        self._state(trial)
        for attr, search_space in self._hyperparam_mutations.items():
            if attr not in trial.config:
                fill_config(trial.config, attr, search_space, self._rng)
                trial.evaluated_params[attr] = trial.config[attr]

    def _check_attrs(self, trial: Any, result: dict) -> bool:
        """False (after a warning) when a needed field is missing and require_attrs is off."""
        for what, name, param in (
            ("time attribute", self._time_attr, "time_attr"),
            ("metric", self._metric, "metric"),
        ):
            if name in result:
                continue
            message = (
                f"{type(self).__name__}: the result of trial {trial} has no {what} {name!r} "
                f"(the scheduler's `{param}`). Reported keys: {_flat_keys(result)}. Report "
                f"{name!r} from the trainable or change `{param}`"
            )
            if self._require_attrs:
                raise RuntimeError(
                    message + "; pass require_attrs=False to skip such results with a warning."
                )
            self._warn_once(f"missing-{param}", message + ". Results without it are skipped.")
            return False
        return True

    # -- results ----------------------------------------------------------------------------
    def on_trial_result(self, runner: Any, trial: Any, result: dict) -> str:
        """Rank ``trial`` at its perturbation points; exploit and explore if it is behind."""
        self._reporting = trial.trial_id
        try:
            return self._decide(runner, trial, result)
        finally:
            self._reporting = None

    def _decide(self, runner: Any, trial: Any, result: dict) -> str:
        if result.get("done"):
            return self.CONTINUE  # it ends now: nothing to exploit or to take turns with
        if not self._check_attrs(trial, result):
            return self.CONTINUE
        time = result[self._time_attr]
        state = self._state(trial)
        if time < self._burn_in_period:
            return self.CONTINUE
        if time - state.last_perturbation_time < self._perturbation_interval:
            return self.CONTINUE
        self._save_trial_state(state, time, result, trial)

        if not self._synch:
            state.last_perturbation_time = time
            lower, upper = self._quantiles(runner)
            others_wait = self._others_wait_for_a_turn(runner, trial)
            self._checkpoint_or_exploit(trial, runner, upper, lower)
            if trial.status == _PAUSED:  # exploited: it restarts from the donor's checkpoint
                return self.NOOP
            if state.checkpoint_pending:
                return self.PAUSE  # the pause saves the checkpoint a top trial offers
            return self.PAUSE if others_wait else self.CONTINUE

        # Synchronous: wait until every live trial reached this perturbation point.
        waiting = any(
            other is not trial and self._state(other).last_train_time < self._next_perturbation_sync
            for other in runner.get_live_trials()
        )
        if not waiting:
            self._synch_round(runner, time)
        return self.NOOP if trial.status == _PAUSED else self.PAUSE

    def _synch_round(self, runner: Any, time: float) -> None:
        """Rank the whole population at once (top trials first, then the others)."""
        lower, upper = self._quantiles(runner)
        ranked = {t.trial_id for t in lower} | {t.trial_id for t in upper}
        middle = [t for t in runner.get_live_trials() if t.trial_id not in ranked]
        for other in upper + middle + lower:
            self._state(other).last_perturbation_time = time
            self._checkpoint_or_exploit(other, runner, upper, lower)
        train_times = [self._state(t).last_train_time for t in runner.get_live_trials()]
        self._next_perturbation_sync = max(
            self._next_perturbation_sync + self._perturbation_interval,
            max(train_times, default=0),
        )

    def _synch_if_all_wait(self, runner: Any) -> None:
        """Run the round now if every live trial waits at the point and none runs.

        Only happens when the round was not run on the last arrival (a resumed run).
        """
        live = runner.get_live_trials()
        if not live or any(t.status == _RUNNING for t in live):
            return
        times = [self._state(t).last_train_time for t in live]
        if min(times) >= self._next_perturbation_sync:
            self._synch_round(runner, max(times))

    def _others_wait_for_a_turn(self, runner: Any, trial: Any) -> bool:
        """Whether another trial waits to run (then ``trial`` pauses: trials take turns).

        Trials paused only to save a checkpoint or to switch to a donor's
        checkpoint restart right away and do not count.
        """
        if any(t is not trial for t in runner.get_pending_trials()):
            return True
        for other in runner.get_paused_trials():
            if other is trial:
                continue
            trial_id = other.trial_id
            if trial_id in self._awaiting or trial_id in self._restore_plan:
                continue
            state = self._trial_state.get(trial_id)
            if state is not None and state.checkpoint_pending:
                continue
            return True
        return False

    def _save_trial_state(self, state: _TrialState, time: float, result: dict, trial: Any) -> float:
        score = self._metric_op * result[self._metric]
        state.last_score = score
        state.last_train_time = time
        state.last_result = {k: v for k, v in result.items() if k != "config"}
        return score

    def _quantiles(self, runner: Any) -> tuple[list, list]:
        """The bottom and top ``quantile_fraction`` of the ranked, unfinished trials.

        Trials are sorted by their score at their last perturbation point; ties keep
        creation order (the earlier trial ranks lower).
        """
        ranked = []
        for trial in runner.get_trials():
            state = self._trial_state.get(trial.trial_id)
            if state is None or state.last_score is None or trial.status in _FINISHED:
                continue
            if isinstance(state.last_score, float) and math.isnan(state.last_score):
                continue
            self._trials[trial.trial_id] = trial
            ranked.append(trial)
        ranked.sort(key=lambda t: self._trial_state[t.trial_id].last_score)
        if len(ranked) <= 1:
            return [], []
        size = int(math.ceil(len(ranked) * self._quantile_fraction))
        if size > len(ranked) / 2:
            size = int(math.floor(len(ranked) / 2))
        return ranked[:size], ranked[len(ranked) - size :]

    def _checkpoint_or_exploit(self, trial: Any, runner: Any, upper: list, lower: list) -> None:
        """Top trials record their checkpoint; bottom trials exploit a top trial."""
        state = self._state(trial)
        if any(t is trial for t in upper):
            self._record_checkpoint(runner, trial, state)
            self._num_checkpoints += 1
        else:
            state.last_checkpoint = None
            state.checkpoint_iteration = None
            state.checkpoint_pending = False
        if not any(t is trial for t in lower):
            return
        donor = self._rng.choice(upper)
        donor_state = self._state(donor)
        checkpoint = self._resolve_checkpoint(donor, donor_state)
        if checkpoint is None:
            logger.info(
                "PBT: trial %s has no checkpoint to offer; trial %s does not exploit it now.",
                donor,
                trial,
            )
            return
        self._exploit(runner, trial, donor, checkpoint)

    def _record_checkpoint(self, runner: Any, trial: Any, state: _TrialState) -> None:
        """The checkpoint a top trial offers: the one of its current iteration.

        A class trainable whose result came without one is paused (the reporting
        trial by returning PAUSE), which saves it; trials exploiting it meanwhile
        wait until the checkpoint is there.
        """
        iteration = (state.last_result or {}).get(TRAINING_ITERATION)
        state.checkpoint_iteration = iteration
        state.checkpoint_pending = False
        path = _checkpoint_at(trial, iteration)
        if path is not None:
            state.last_checkpoint = path
            return
        if _is_class_trainable(trial) and trial.status in (_RUNNING, _PAUSED):
            # A running one is paused (which saves it); a paused one is saving already.
            state.last_checkpoint = None
            state.checkpoint_pending = True
            return
        path, latest_iteration = _latest_checkpoint(trial)
        state.last_checkpoint = path
        state.checkpoint_iteration = latest_iteration
        if path is None or latest_iteration != iteration:
            self._warn_once(
                "stale-checkpoint",
                f"PBT: trial {trial} is a top trial at iteration {iteration} but its latest "
                f"checkpoint is {'missing' if path is None else f'of iteration {latest_iteration}'}."
                " Report a checkpoint with every result at a perturbation point "
                "(tunekit.report(..., checkpoint=...)) so that exploiting trials continue from "
                "the current state.",
            )

    def _resolve_checkpoint(self, donor: Any, state: _TrialState) -> Any:
        """The donor's checkpoint path, ``_AWAIT`` while it is being saved, or None."""
        if state.last_checkpoint is not None:
            if os.path.isdir(state.last_checkpoint):
                return state.last_checkpoint
            state.last_checkpoint = None
            return None
        if not state.checkpoint_pending:
            return None
        path = _checkpoint_at(donor, state.checkpoint_iteration)
        if path is not None:
            state.last_checkpoint = path
            state.checkpoint_pending = False
            return path
        if donor.status == _PAUSED or (
            donor.status == _RUNNING and donor.trial_id == self._reporting
        ):
            return _AWAIT  # saving, or about to pause to save (the trial reporting now)
        # The pause ended without that checkpoint (the trial failed, or was resumed).
        state.checkpoint_pending = False
        path, iteration = _latest_checkpoint(donor)
        state.last_checkpoint, state.checkpoint_iteration = path, iteration
        return path

    def _exploit(self, runner: Any, trial: Any, donor: Any, checkpoint: Any) -> None:
        """``trial`` continues from ``donor``'s checkpoint with an explored config."""
        state = self._state(trial)
        donor_state = self._state(donor)
        new_config, operations = self._get_new_config(trial, donor)
        logger.info(
            "PBT: trial %s (score %s) exploits trial %s (score %s).\n%s",
            trial,
            state.last_score,
            donor,
            donor_state.last_score,
            summarize_changes(
                filter_mutated_params(donor.config, self._hyperparam_mutations),
                filter_mutated_params(new_config, self._hyperparam_mutations),
                operations,
            )
            or "No hyperparameters mutated.",
        )
        if self._log_config:
            self._log_config_on_step(runner, state, donor_state, trial, donor, new_config)
        new_tag = make_experiment_tag(state.orig_tag, new_config, self._hyperparam_mutations)
        if trial.status == _RUNNING:
            runner.pause_trial(trial, should_checkpoint=False)
        trial.set_experiment_tag(new_tag)
        trial.set_config(new_config)
        if checkpoint is _AWAIT:
            self._awaiting[trial.trial_id] = donor.trial_id
            self._restore_plan.pop(trial.trial_id, None)
        else:
            self._awaiting.pop(trial.trial_id, None)
            self._restore_plan[trial.trial_id] = checkpoint
            trial.restore_from(checkpoint)
        self._num_perturbations += 1
        state.last_perturbation_time = donor_state.last_perturbation_time
        state.last_train_time = donor_state.last_train_time
        state.last_checkpoint = None
        state.checkpoint_pending = False

    def _get_new_config(self, trial: Any, donor: Any) -> tuple[dict, dict]:
        """The explored config ``trial`` continues with, from ``donor``'s config."""
        return explore(
            donor.config,
            self._hyperparam_mutations,
            self._resample_probability,
            self._perturbation_factors,
            self._custom_explore_fn,
            self._rng,
        )

    def _log_config_on_step(
        self,
        runner: Any,
        state: _TrialState,
        donor_state: _TrialState,
        trial: Any,
        donor: Any,
        new_config: dict,
    ) -> None:
        """Append the exploit to ``pbt_global.txt`` and to the trial's policy file.

        The trial's policy file starts as a copy of the donor's, so it holds the
        whole config schedule that led to the trial's new state.
        """
        directory = getattr(trial, "local_dir", None) or getattr(runner, "experiment_dir", None)
        if not directory:
            return
        donor_iteration = donor_state.checkpoint_iteration
        if donor_iteration is None:
            donor_iteration = (donor_state.last_result or donor.last_result or {}).get(
                TRAINING_ITERATION, 0
            )
        policy = [
            state.orig_tag,
            donor_state.orig_tag,
            (state.last_result or trial.last_result or {}).get(TRAINING_ITERATION, 0),
            donor_iteration,
            donor.config,
            new_config,
        ]
        line = json.dumps(policy, default=_json_default) + "\n"
        try:
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, "pbt_global.txt"), "a") as f:
                f.write(line)
            trial_path = os.path.join(directory, f"pbt_policy_{trial.trial_id}.txt")
            donor_path = os.path.join(directory, f"pbt_policy_{donor.trial_id}.txt")
            if os.path.exists(donor_path):
                shutil.copyfile(donor_path, trial_path)
            with open(trial_path, "a") as f:
                f.write(line)
        except OSError as exc:
            self._warn_once("policy-io", f"PBT: could not write the policy files in {directory}: {exc}")

    # -- choosing what runs ---------------------------------------------------------------------
    def choose_trial_to_run(self, runner: Any) -> Any:
        """The waiting trial with the least training time that fits the free resources.

        Pending and paused trials take turns by ``time_attr`` so the population
        progresses evenly; with ``synch=True`` only trials that have not reached
        the next synchronisation point run. A trial that exploits a checkpoint
        still being saved waits for it.
        """
        if self._synch:
            self._synch_if_all_wait(runner)
        candidates = []
        for trial in (*runner.get_pending_trials(), *runner.get_paused_trials()):
            state = self._state(trial)
            if trial.trial_id in self._awaiting and not self._settle_awaiting(runner, trial):
                continue
            if self._synch and state.last_train_time >= self._next_perturbation_sync:
                continue
            candidates.append(trial)
        candidates.sort(key=lambda t: (self._trial_state[t.trial_id].last_train_time, t.trial_id))
        for trial in candidates:
            if runner.has_resources_for_trial(trial):
                plan = self._restore_plan.pop(trial.trial_id, None)
                if plan is not None:
                    trial.restore_from(plan)
                return trial
        return None

    def _settle_awaiting(self, runner: Any, trial: Any) -> bool:
        """True once the donor's checkpoint that ``trial`` waits for is known."""
        donor = self._trial(runner, self._awaiting[trial.trial_id])
        checkpoint = None
        if donor is not None:
            checkpoint = self._resolve_checkpoint(donor, self._state(donor))
            if checkpoint is _AWAIT:
                return False
        del self._awaiting[trial.trial_id]
        if checkpoint is None:
            logger.warning(
                "PBT: the checkpoint of trial %s that trial %s was to continue from never "
                "appeared; %s continues from its own latest checkpoint with its new config.",
                donor,
                trial,
                trial,
            )
            return True
        self._restore_plan[trial.trial_id] = checkpoint
        trial.restore_from(checkpoint)
        return True

    def on_trial_complete(self, runner: Any, trial: Any, result: dict | None) -> None:
        self._awaiting.pop(trial.trial_id, None)
        self._restore_plan.pop(trial.trial_id, None)

    def on_trial_remove(self, runner: Any, trial: Any) -> None:
        self.on_trial_complete(runner, trial, None)

    def on_trial_error(self, runner: Any, trial: Any) -> None:
        self.on_trial_complete(runner, trial, None)

    def debug_string(self) -> str:
        return (
            f"{type(self).__name__}: {self._num_checkpoints} checkpoints, "
            f"{self._num_perturbations} perturbs"
        )

    # -- state ------------------------------------------------------------------------------------
    _STATE_FIELDS = (
        "_metric",
        "_mode",
        "_metric_op",
        "_next_perturbation_sync",
        "_awaiting",
        "_restore_plan",
        "_num_checkpoints",
        "_num_perturbations",
        "_warned",
    )

    def _get_state(self) -> dict:
        state = {name: getattr(self, name) for name in self._STATE_FIELDS}
        state["trial_state"] = {k: dict(v.__dict__) for k, v in self._trial_state.items()}
        state["rng"] = self._rng.getstate()
        return state

    def _set_state(self, state: dict) -> None:
        for name in self._STATE_FIELDS:
            if name in state:
                setattr(self, name, state[name])
        self._trial_state = {}
        for trial_id, fields in state.get("trial_state", {}).items():
            restored = _TrialState(fields.get("orig_tag", ""))
            restored.__dict__.update(fields)
            self._trial_state[trial_id] = restored
        if "rng" in state:
            self._rng.setstate(state["rng"])
        self._trials = {}
        self._reporting = None

    def save(self, checkpoint_path: str) -> None:
        """Write the population's state (scores, checkpoints, pending exploits, RNG)."""
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self._get_state(), f, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, checkpoint_path: str) -> None:
        """Continue from the state :meth:`save` wrote (the constructor's arguments stay)."""
        with open(checkpoint_path, "rb") as f:
            self._set_state(pickle.load(f))


def _validate_mutations(mutations: Mapping, prefix: str = "") -> None:
    for key, value in mutations.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _validate_mutations(value, f"{name}/")
            continue
        if isinstance(value, space.Function):
            raise ValueError(
                f"hyperparam_mutations[{name!r}] is a tunekit.sample_from domain, which PBT cannot "
                "perturb; use a list of values, tunekit.uniform/loguniform/choice/..., or a "
                "plain callable."
            )
        if not isinstance(value, (list, tuple, space.Domain)) and not callable(value):
            raise TypeError(
                f"hyperparam_mutations[{name!r}] is a {type(value).__name__}; expected a "
                "list/tuple of values, a search-space domain, a callable, or a dict of those."
            )
        if isinstance(value, (list, tuple)) and not value:
            raise ValueError(f"hyperparam_mutations[{name!r}] is an empty list.")


# -- replay -------------------------------------------------------------------------------------


class PopulationBasedTrainingReplay(FIFOScheduler):
    """Replays the config schedule one PBT trial followed (Ray Tune's semantics).

    PBT finds a schedule of configs rather than one config. Given the policy file
    of a trial (``pbt_policy_<trial_id>.txt`` in a PBT experiment directory, written
    with ``log_config=True``), this scheduler trains a single trial that starts with
    the schedule's initial config and switches config at the recorded iterations.
    At a switch the trial is paused (class trainables save a checkpoint; function
    trainables keep the one they reported, so report one each iteration) and
    continues from its checkpoint with the next config.

    Args:
        policy_file: The policy file to replay.
    """

    def __init__(self, policy_file: str | os.PathLike):
        super().__init__()
        path = os.path.expanduser(os.fspath(policy_file))
        if not os.path.exists(path):
            raise ValueError(
                f"Policy file not found: {path}. Pass the pbt_policy_<trial_id>.txt file a "
                "PopulationBasedTraining run (log_config=True) wrote in its experiment directory."
            )
        self.policy_file = path
        self.config, self._policy = self._load_policy(path)
        self.experiment_tag = f"replay_{os.path.basename(path)}"
        self.current_config = self.config
        self.supports_buffered_results = False
        self._trial_id: str | None = None
        self._current_step = 0
        self._num_perturbations = 0
        self._policy_index = 0

    @staticmethod
    def _load_policy(policy_file: str) -> tuple[dict, list[tuple[int, dict]]]:
        """The initial config and the ``(iteration, config)`` changes of the last lineage.

        Read backwards, rows chain while each row's target is the previous row's
        donor; an older row that breaks the chain was overwritten by a later exploit.
        """
        rows = []
        with open(policy_file) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(
                        f"Could not read the PBT policy file {policy_file}: line {number} is not "
                        f"JSON ({exc.msg})."
                    ) from None
                if not isinstance(row, list) or len(row) != 6:
                    raise ValueError(
                        f"Could not read the PBT policy file {policy_file}: line {number} is not "
                        "a list [target_tag, donor_tag, target_iteration, donor_iteration, "
                        "donor_config, new_config]."
                    )
                rows.append(row)
        policy: list[tuple[int, dict]] = []
        last_new_tag = None
        initial: dict = {}
        for old_tag, new_tag, _old_step, new_step, old_conf, new_conf in reversed(rows):
            if last_new_tag is not None and old_tag != last_new_tag:
                break
            last_new_tag = new_tag
            initial = old_conf
            policy.append((new_step, new_conf))
        return initial, list(reversed(policy))

    @property
    def policy(self) -> list[tuple[int, dict]]:
        """The schedule: ``(iteration, config)`` pairs; the config applies after that iteration.

        :attr:`config` is the config the trial starts with.
        """
        return list(self._policy)

    @property
    def _next_policy(self) -> tuple[int, dict] | None:
        if self._policy_index < len(self._policy):
            return self._policy[self._policy_index]
        return None

    def on_trial_add(self, runner: Any, trial: Any) -> None:
        """Give the (single) trial the schedule's initial config."""
        if self._trial_id is not None and self._trial_id != trial.trial_id:
            raise ValueError(
                "More than one trial was added to a PBT replay run, which would train the same "
                "schedule several times. Run it with num_samples=1 and no grid search."
            )
        self._trial_id = trial.trial_id
        if trial.config and self._policy:
            logger.warning(
                "PBT replay: the trial's config is replaced by the policy's initial config. Did "
                "you pass a `config` to tunekit.run by mistake?"
            )
        elif trial.config and not self._policy:
            self.config = trial.config  # no recorded change: train with the given config
        elif not trial.config and not self._policy:
            raise ValueError(
                f"The policy file {self.policy_file} records no config change and the trial has "
                "no config. Pass a `config` to tunekit.run or replay another policy file."
            )
        trial.set_config(copy.deepcopy(self.config))

    def on_trial_result(self, runner: Any, trial: Any, result: dict) -> str:
        """Switch to the next config once the trial reaches its iteration."""
        if TRAINING_ITERATION not in result or result.get("done"):
            return self.CONTINUE
        step = result[TRAINING_ITERATION]
        self._current_step = step
        upcoming = self._next_policy
        if upcoming is None:
            return self.CONTINUE
        change_at, new_config = upcoming
        if step < change_at:
            return self.CONTINUE
        logger.info(
            "PBT replay at iteration %s: the config changes to %s.", step, new_config
        )
        trial.set_experiment_tag(make_experiment_tag(self.experiment_tag, new_config, new_config))
        trial.set_config(copy.deepcopy(new_config))
        self.current_config = new_config
        self._num_perturbations += 1
        self._policy_index += 1
        # The run loop pauses it (a class trainable saves this iteration); it continues
        # from that checkpoint with the new config.
        return self.PAUSE

    def debug_string(self) -> str:
        return (
            f"PopulationBasedTraining replay: Step {self._current_step}, "
            f"perturb {self._num_perturbations}"
        )

    def save(self, checkpoint_path: str) -> None:
        """Write the replay's position in the schedule."""
        state = {
            "trial_id": self._trial_id,
            "current_step": self._current_step,
            "num_perturbations": self._num_perturbations,
            "policy_index": self._policy_index,
            "current_config": self.current_config,
        }
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, checkpoint_path: str) -> None:
        """Continue the schedule from the position :meth:`save` wrote."""
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self._trial_id = state["trial_id"]
        self._current_step = state["current_step"]
        self._num_perturbations = state["num_perturbations"]
        self._policy_index = state["policy_index"]
        self.current_config = state["current_config"]
