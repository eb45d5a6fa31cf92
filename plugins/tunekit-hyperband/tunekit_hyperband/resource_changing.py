"""Changing the resources of live trials: Ray Tune's ``ResourceChangingScheduler``."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from tunekit_core.resources import PlacementGroupFactory
from tunekit_core.scheduler import TrialScheduler, apply_search_properties

from ._common import CONTINUE, PAUSE

__all__ = ["DistributeResources", "ResourceChangingScheduler"]

_KEYS = ("CPU", "GPU")

_DEFAULT = object()  # "use DistributeResources()" (None means: never change anything)

AllocationFunction = Callable[[Any, Any, dict, "ResourceChangingScheduler"],
                              "PlacementGroupFactory | dict | None"]


def _total_resources(runner: Any) -> dict[str, float]:
    executor = getattr(runner, "trial_executor", None)
    total = getattr(executor, "total_resources", None)
    if total is not None:
        return dict(total())
    return {"CPU": float(os.cpu_count() or 1), "GPU": 0.0}


class DistributeResources:
    """The default allocation: spread the CPUs (and GPUs) evenly over the live trials.

    Called as ``allocation(runner, trial, result, scheduler)`` after each result
    of a trial that goes on. Every live trial (running, pending or paused) gets
    the base resources of the first trial plus an equal share, in units of
    ``increase_by``, of what the others leave; a trial grows only into free
    resources and shrinks when more is in use than there is. Returns the new
    :class:`PlacementGroupFactory`, or None to keep the current one.

    Args:
        add_bundles: grow by adding bundles of ``increase_by`` (True) or by
            enlarging the single bundle (False, the default).
        increase_by: the unit of growth, e.g. ``{"CPU": 1}`` (default: one GPU if
            the base resources have GPUs, else one CPU).
        increase_by_times: at most this many units are added (< 1: no limit).
        reserve_resources: resources never handed out, e.g. ``{"CPU": 1}``.
    """

    def __init__(
        self,
        add_bundles: bool = False,
        increase_by: Mapping[str, float] | None = None,
        increase_by_times: int = -1,
        reserve_resources: Mapping[str, float] | None = None,
    ) -> None:
        self.add_bundles = add_bundles
        self.increase_by = {k.upper(): float(v) for k, v in (increase_by or {}).items() if v}
        self.increase_by_times = increase_by_times
        self.reserve_resources = {k.upper(): float(v) for k, v in (reserve_resources or {}).items()}

    def _unit(self, base: PlacementGroupFactory) -> dict[str, float]:
        if self.increase_by:
            return dict(self.increase_by)
        if self.add_bundles:
            return {k: v for k, v in base.bundles[-1].items() if k in _KEYS and v}
        if base.required_resources.get("GPU"):
            return {"GPU": 1.0}
        return {"CPU": 1.0}

    @staticmethod
    def _units_in(amounts: Mapping[str, float], unit: Mapping[str, float]) -> int:
        """How many whole ``unit``s ``amounts`` holds (negative if it is negative)."""
        return min(math.floor(amounts.get(k, 0.0) / v + 1e-9) for k, v in unit.items())

    def __call__(self, runner: Any, trial: Any, result: dict,
                 scheduler: ResourceChangingScheduler) -> PlacementGroupFactory | None:
        base = scheduler.base_trial_resources or PlacementGroupFactory([{"CPU": 1.0}])
        if not self.add_bundles and len(base.bundles) > 1:
            raise ValueError(
                "DistributeResources(add_bundles=False) grows a single bundle, but the trials "
                f"ask for {len(base.bundles)} bundles; use add_bundles=True."
            )
        if result.get("training_iteration", 0) < 1:
            return None
        unit = self._unit(base)
        if not unit:
            return None
        totals = _total_resources(runner)
        available = {k: totals.get(k, 0.0) - self.reserve_resources.get(k, 0.0) for k in unit}
        live = list(runner.get_live_trials()) if hasattr(runner, "get_live_trials") else [
            t for t in runner.get_trials() if t.status in ("RUNNING", "PENDING", "PAUSED")
        ]
        if trial not in live:
            live.append(trial)
        base_req = base.required_resources
        used = {k: sum(t.placement_group_factory.required_resources.get(k, 0.0) for t in live)
                for k in unit}
        spare = {k: available[k] - base_req.get(k, 0.0) * len(live) for k in unit}
        share = max(0, math.ceil(max(0, self._units_in(spare, unit)) / len(live)))
        if self.increase_by_times >= 1:
            share = min(share, self.increase_by_times)
        current_extra = {
            k: trial.placement_group_factory.required_resources.get(k, 0.0) - base_req.get(k, 0.0)
            for k in unit
        }
        current = max(0, self._units_in(current_extra, unit))
        free = self._units_in({k: available[k] - used[k] for k in unit}, unit)
        if free > 0:
            target = min(current + free, max(share, current))
        elif free < 0:
            target = max(0, current + free)
        else:
            target = current
        if target == current:
            return None
        if self.add_bundles:
            bundles = [dict(b) for b in base.bundles] + [dict(unit) for _ in range(target)]
        else:
            bundle = dict(base.bundles[0])
            for k, v in unit.items():
                bundle[k] = bundle.get(k, 0.0) + v * target
            bundles = [bundle]
        return PlacementGroupFactory(bundles, base.strategy)


class _NewResourcesView:
    """The run loop as a wrapped scheduler sees it: a trial waiting for new resources
    is checked against those."""

    def __init__(self, runner: Any, new_resources: Mapping[str, PlacementGroupFactory]):
        self._runner = runner
        self._new_resources = new_resources

    def has_resources_for_trial(self, trial: Any) -> bool:
        new = self._new_resources.get(trial.trial_id)
        if new is None:
            return self._runner.has_resources_for_trial(trial)
        old = trial.placement_group_factory
        trial.placement_group_factory = new
        try:
            return self._runner.has_resources_for_trial(trial)
        finally:
            trial.placement_group_factory = old

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)


class ResourceChangingScheduler(TrialScheduler):
    """Wraps another scheduler and changes the resources of trials as they run.

    After each result the wrapped scheduler decides as usual; when it says
    CONTINUE, ``resources_allocation_function(runner, trial, result, scheduler)``
    may return new resources (a :class:`PlacementGroupFactory` or a
    ``resources_per_trial``-style dict; None keeps them). If they differ, the
    trial is PAUSED (it checkpoints) and restarts from its checkpoint with the
    new resources as soon as they are free; inside the trial (function or
    class trainable) ``tunekit.get_trial_resources()`` tells what it got.
    Trials should checkpoint every iteration, or they restart from scratch.

    Args:
        base_scheduler: the scheduler deciding CONTINUE/PAUSE/STOP (default FIFO).
        resources_allocation_function: the callable described above (default
            :class:`DistributeResources`: free CPUs spread evenly). None never
            changes anything.

    All trials must start with the same resources. It cannot be used with
    ``reuse_actors=True`` (as in Ray Tune).
    """

    def __init__(
        self,
        base_scheduler: TrialScheduler | None = None,
        resources_allocation_function: AllocationFunction | None | object = _DEFAULT,
    ) -> None:
        super().__init__()
        if resources_allocation_function is _DEFAULT:
            resources_allocation_function = DistributeResources()
        elif resources_allocation_function is None:
            warnings.warn(
                "ResourceChangingScheduler(resources_allocation_function=None) never changes "
                "any trial's resources; pass an allocation function (or leave the default).",
                stacklevel=2,
            )
        if base_scheduler is None:
            from tunekit_fifo import FIFOScheduler

            base_scheduler = FIFOScheduler()
        self._base_scheduler = base_scheduler
        self._resources_allocation_function = resources_allocation_function
        self._base_trial_resources: PlacementGroupFactory | None = None
        self._to_reallocate: dict[str, PlacementGroupFactory] = {}
        self._reallocated: set[str] = set()

    # -- delegation --------------------------------------------------------------------------
    @property
    def base_scheduler(self) -> TrialScheduler:
        return self._base_scheduler

    @property
    def base_trial_resources(self) -> PlacementGroupFactory | None:
        """The resources every trial started with (those of the first trial)."""
        return self._base_trial_resources

    @property
    def metric(self) -> str | None:
        return self._base_scheduler.metric

    @property
    def mode(self) -> str | None:
        return getattr(self._base_scheduler, "mode", None)

    @property
    def supports_buffered_results(self) -> bool:
        return getattr(self._base_scheduler, "supports_buffered_results", True)

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return apply_search_properties(self._base_scheduler, metric, mode, **spec)

    def on_trial_add(self, runner: Any, trial: Any) -> None:
        resources = trial.placement_group_factory
        if self._base_trial_resources is None:
            self._base_trial_resources = resources
        elif trial.trial_id not in self._reallocated and resources != self._base_trial_resources:
            raise ValueError(
                "ResourceChangingScheduler needs every trial to start with the same resources: "
                f"the first trial had {self._base_trial_resources}, trial {trial} has "
                f"{resources}. Use one resources_per_trial for the whole run."
            )
        self._base_scheduler.on_trial_add(runner, trial)

    def on_trial_error(self, runner: Any, trial: Any) -> None:
        self._to_reallocate.pop(trial.trial_id, None)
        self._base_scheduler.on_trial_error(runner, trial)

    def on_trial_complete(self, runner: Any, trial: Any, result: dict | None) -> None:
        self._to_reallocate.pop(trial.trial_id, None)
        self._base_scheduler.on_trial_complete(runner, trial, result)

    def on_trial_remove(self, runner: Any, trial: Any) -> None:
        self._to_reallocate.pop(trial.trial_id, None)
        self._base_scheduler.on_trial_remove(runner, trial)

    def on_trial_result(self, runner: Any, trial: Any, result: dict) -> str:
        """The wrapped scheduler's decision; a CONTINUE becomes PAUSE when resources change."""
        decision = self._base_scheduler.on_trial_result(runner, trial, result)
        if decision != CONTINUE:
            return decision
        new = self.reallocate_trial_resources_if_needed(runner, trial, result)
        if new is None:
            return decision
        self._to_reallocate[trial.trial_id] = new
        return PAUSE

    def reallocate_trial_resources_if_needed(self, runner: Any, trial: Any,
                                             result: dict) -> PlacementGroupFactory | None:
        """The new resources for ``trial`` if the allocation function changes them, else None."""
        function = self._resources_allocation_function
        if function is None:
            return None
        new = function(runner, trial, result, self)
        if not new:
            return None
        if not isinstance(new, PlacementGroupFactory):
            from tunekit_core.resources import to_placement_group_factory

            new = to_placement_group_factory(new)
        if new == trial.placement_group_factory:
            return None
        return new

    def choose_trial_to_run(self, runner: Any) -> Any:
        """The wrapped scheduler's choice, started with its new resources if it has some.

        The new resources replace the old ones only when the trial is about to
        start again (its previous process has ended) and they fit; otherwise
        nothing starts until they do.
        """
        if getattr(runner, "_reuse_actors", False):
            raise ValueError(
                "ResourceChangingScheduler cannot be used with reuse_actors=True: a trial that "
                "changes resources must restart in a new process. Pass reuse_actors=False to "
                "tunekit.run()."
            )
        # The wrapped scheduler asks whether a trial fits with the resources it restarts
        # with, so an executor never sets resources aside for the old ones (the Ray
        # executor would reserve a placement group of the old shape and give back the
        # new one while the trial waits).
        trial = self._base_scheduler.choose_trial_to_run(_NewResourcesView(runner, self._to_reallocate))
        if trial is None:
            return None
        new = self._to_reallocate.pop(trial.trial_id, None)
        if new is not None:
            trial.placement_group_factory = new
            self._reallocated.add(trial.trial_id)
        return trial

    def set_trial_resources(self, trial: Any, new_resources: Any) -> bool:
        """Give ``trial`` ``new_resources`` now (it must not be running). True if set."""
        if not new_resources:
            return False
        if not isinstance(new_resources, PlacementGroupFactory):
            from tunekit_core.resources import to_placement_group_factory

            new_resources = to_placement_group_factory(new_resources)
        trial.placement_group_factory = new_resources
        self._reallocated.add(trial.trial_id)
        return True

    def debug_string(self) -> str:
        return f"(ResourceChangingScheduler) {self._base_scheduler.debug_string()}"

    def save(self, checkpoint_path: str) -> None:
        """Save the wrapper's and the wrapped scheduler's state."""
        import cloudpickle

        base_blob = None
        base_save = getattr(self._base_scheduler, "save", None)
        if base_save is not None:
            tmp = checkpoint_path + ".base"
            try:
                base_save(tmp)
                with open(tmp, "rb") as f:
                    base_blob = f.read()
            except NotImplementedError:
                base_blob = None
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        state = {
            "base_trial_resources": self._base_trial_resources,
            "to_reallocate": self._to_reallocate,
            "reallocated": self._reallocated,
            "allocation_function": self._resources_allocation_function,
            "base": base_blob,
        }
        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        """Restore what :meth:`save` wrote, the wrapped scheduler's state included."""
        import cloudpickle

        with open(checkpoint_path, "rb") as f:
            state = cloudpickle.load(f)
        self._base_trial_resources = state["base_trial_resources"]
        self._to_reallocate = state["to_reallocate"]
        self._reallocated = state["reallocated"]
        self._resources_allocation_function = state["allocation_function"]
        if state["base"] is not None:
            tmp = checkpoint_path + ".base"
            try:
                with open(tmp, "wb") as f:
                    f.write(state["base"])
                self._base_scheduler.restore(tmp)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
