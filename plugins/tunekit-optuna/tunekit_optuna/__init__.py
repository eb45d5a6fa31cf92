"""Optuna search for tunekit: :class:`OptunaSearch`, with Ray Tune's semantics.

Registered as ``optuna`` in the ``tunekit.searchers`` entry-point group, so
``tunekit.run(train, config=..., search_alg="optuna", metric=..., mode=...)``
works by name; ``from tunekit.search.optuna import OptunaSearch`` gives the
class.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from tunekit_core.searcher import Searcher
from tunekit_core.space import has_unresolved_values

from ._convert import CompiledSpace, SpaceError, compile_space

__all__ = ["OptunaSearch"]

logger = logging.getLogger(__name__)

_DEFAULT_METRIC = "_metric"
# A define-by-run function slower than this is probably doing the training itself.
_DEFINE_BY_RUN_WARN_S = 1.0

try:
    # What Study.tell and Study.optimize both call. Study.tell also returns a deep copy of
    # the finished trial, which this searcher never uses: about 0.1 ms per trial, on the
    # searcher's critical path. Positional arguments: (study, trial, values, state,
    # skip_if_finished) in every Optuna since 3.0.
    from optuna.study._tell import _tell_with_warning as _optuna_tell
except ImportError:  # pragma: no cover - a future Optuna without it: the public API
    _optuna_tell = None


def _tell(study: optuna.study.Study, trial: Any, values: Any = None,
          state: TrialState | None = None, skip_if_finished: bool = False) -> None:
    """``study.tell(...)`` without building the return value."""
    if _optuna_tell is None:
        study.tell(trial, values, state=state, skip_if_finished=skip_if_finished)
    else:
        _optuna_tell(study, trial, values, state, skip_if_finished)


def _suggest(trial: optuna.trial.Trial, name: str, dist: BaseDistribution) -> Any:
    """Ask an Optuna trial for ``name`` with the distribution ``dist`` (public API only)."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    raise TypeError(f"Unsupported Optuna distribution for '{name}': {dist!r}.")


def _flatten(d: Mapping, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in d.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _unflatten(flat: Mapping) -> dict:
    """``{"a/b": 1, "c": 2}`` -> ``{"a": {"b": 1}, "c": 2}`` (Optuna names to a config)."""
    out: dict = {}
    for key, value in flat.items():
        if not isinstance(key, str) or "/" not in key:
            out[key] = value
            continue
        parts = key.split("/")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(
                    f"Parameter {key!r} nests under {part!r}, which is already a value; rename "
                    f"one of them."
                )
            node = child
        node[parts[-1]] = value
    return out


def _check_modes(metric: Any, mode: Any) -> None:
    modes = mode if isinstance(mode, (list, tuple)) else [mode]
    for m in modes:
        if m not in (None, "min", "max"):
            raise ValueError(f"`mode` must be 'min', 'max' (or a list of them), got {mode!r}.")
    if isinstance(mode, (list, tuple)) or isinstance(metric, (list, tuple)):
        if not isinstance(metric, (list, tuple)) or not isinstance(mode, (list, tuple)):
            raise ValueError(
                "For multi-objective search pass `metric` and `mode` as lists of the same "
                f"length (metric={metric!r}, mode={mode!r})."
            )
        if len(metric) != len(mode) or not metric:
            raise ValueError(
                f"`metric` and `mode` must have the same (non-zero) length, got {len(metric)} "
                f"metrics and {len(mode)} modes."
            )
        if not all(isinstance(m, str) for m in metric):
            raise ValueError(f"`metric` must be a list of result keys, got {metric!r}.")
    elif metric is not None and not isinstance(metric, str):
        raise ValueError(f"`metric` must be a string (or a list of them), got {metric!r}.")


class OptunaSearch(Searcher):
    """Suggest configs with `Optuna <https://optuna.org>`_ (TPE by default).

    Ray Tune's ``OptunaSearch`` semantics: one Optuna study is asked for a
    trial per suggestion (``study.ask``) and told its result when the tunekit
    trial completes (``study.tell``); intermediate results are reported to the
    Optuna trial with ``trial.report(value, training_iteration)``.

    Args:
        space: The search space, one of
            - a tunekit config (``{"lr": tunekit.loguniform(1e-4, 1e-1), ...}``),
              nested dicts, lists and conditional ``choice`` categories included;
            - a dict of Optuna distributions (``{"lr": FloatDistribution(1e-4,
              1e-1, log=True)}``); names with ``/`` become nested config keys;
            - a define-by-run function ``space(trial)`` that calls
              ``trial.suggest_*`` and returns None or a dict of constants to add.
            Leave it None to take the ``config`` of ``tunekit.run``.
        metric: The result key to optimise, or a list of keys (multi-objective).
        mode: ``"min"`` or ``"max"``, or a list of them, one per metric.
        points_to_evaluate: Configs to evaluate first (enqueued in the study).
            Keys left out are sampled.
        sampler: Any ``optuna.samplers.BaseSampler`` instance (TPESampler,
            CmaEsSampler, NSGAIISampler, GPSampler, ...). Default: ``TPESampler(seed=seed)``.
        study_name: Name of the Optuna study (default ``"optuna"``).
        storage: An Optuna storage (instance or URL); default: in memory.
        seed: Seed of the default TPE sampler (ignored, with a warning, when
            ``sampler`` is given: seed that sampler instead).
        evaluated_rewards: The results of ``points_to_evaluate`` if they were
            already evaluated: they are added to the study as completed trials
            instead of being run (one value per point; a list of values per
            point for multi-objective studies).

    Parameters of a tunekit space that Optuna cannot express (``grid_search``,
    ``sample_from``, ``randn``, log sampling with a step) raise ValueError
    naming the parameter.
    """

    # Suggestions cost milliseconds of Python: the run loop serves this searcher from a
    # process of its own, so they are computed while the driver does its bookkeeping
    # (tunekit_core.searcher_process; TUNEKIT_SEARCHER_PROCESS=0 keeps it in the driver).
    run_in_own_process = True

    def __init__(
        self,
        space: dict | Callable[[optuna.trial.Trial], dict | None] | None = None,
        metric: str | list[str] | None = None,
        mode: str | list[str] | None = None,
        points_to_evaluate: list[dict] | None = None,
        sampler: optuna.samplers.BaseSampler | None = None,
        study_name: str | None = None,
        storage: Any = None,
        seed: int | None = None,
        evaluated_rewards: list | None = None,
    ) -> None:
        _check_modes(metric, mode)
        super().__init__(metric=None, mode=None)
        self._metric = metric
        self._mode = mode
        if sampler is not None and not isinstance(sampler, optuna.samplers.BaseSampler):
            raise ValueError(
                f"`sampler` must be an optuna.samplers.BaseSampler instance (e.g. "
                f"optuna.samplers.TPESampler()), got {sampler!r}."
            )
        if sampler is not None and seed is not None:
            logger.warning(
                "OptunaSearch got both a sampler and a seed; the seed is ignored. Pass the seed "
                "to the sampler instead (e.g. TPESampler(seed=%r)).",
                seed,
            )
        if points_to_evaluate is not None and (
            not isinstance(points_to_evaluate, (list, tuple))
            or not all(isinstance(p, Mapping) for p in points_to_evaluate)
        ):
            raise ValueError(
                f"points_to_evaluate must be a list of config dicts, got {points_to_evaluate!r}."
            )
        self._points = [dict(p) for p in points_to_evaluate or []]
        if evaluated_rewards is not None:
            if not isinstance(evaluated_rewards, (list, tuple)):
                raise ValueError(
                    f"evaluated_rewards must be a list, got {type(evaluated_rewards).__name__}."
                )
            if len(evaluated_rewards) != len(self._points):
                raise ValueError(
                    f"evaluated_rewards has {len(evaluated_rewards)} values but "
                    f"points_to_evaluate has {len(self._points)} points; give one reward per "
                    f"point."
                )
        self._evaluated_rewards = list(evaluated_rewards) if evaluated_rewards else None
        self._sampler = sampler
        self._seed = seed
        self._study_name = study_name or "optuna"
        self._storage = storage

        # The space in one of three forms (None until known).
        self._kind: str | None = None  # "tunekit", "distributions" or "define_by_run"
        self._compiled: CompiledSpace | None = None
        self._distributions: dict[str, BaseDistribution] | None = None
        self._define_by_run: Callable | None = None

        self._ot_study: optuna.study.Study | None = None
        self._ot_trials: dict[str, optuna.trial.Trial] = {}
        self._last_step: dict[str, int] = {}
        if space is not None and not (isinstance(space, Mapping) and not space):
            self._set_space(space, "space")
            if self._mode is not None:
                self._setup_study()

    # -- space --------------------------------------------------------------

    def _set_space(self, space: Any, argument: str) -> None:
        if callable(space) and not isinstance(space, Mapping):
            self._kind = "define_by_run"
            self._define_by_run = space
            return
        if not isinstance(space, Mapping):
            raise ValueError(
                f"OptunaSearch `{argument}` must be a tunekit config dict, a dict of Optuna "
                f"distributions, or a define-by-run function; got {type(space).__name__}."
            )
        flat = _flatten(space)
        has_dists = any(isinstance(v, BaseDistribution) for v in flat.values())
        if has_dists:
            if has_unresolved_values(space):
                raise ValueError(
                    f"OptunaSearch `{argument}` mixes Optuna distributions with tunekit search "
                    f"domains; use one kind for the whole space."
                )
            others = [k for k, v in flat.items() if not isinstance(v, BaseDistribution)]
            if others:
                raise ValueError(
                    f"OptunaSearch `{argument}` is a dict of Optuna distributions, but "
                    f"{others[0]!r} is {flat[others[0]]!r}. Put constants in the tunekit.run "
                    f"config instead."
                )
            self._kind = "distributions"
            self._distributions = flat
            return
        compiled = compile_space(space)
        if not compiled.distributions:
            raise ValueError(
                f"OptunaSearch got a `{argument}` without any search domain (tunekit.uniform, "
                f"tunekit.choice, ...): there is nothing to optimise. Add a domain, or use the "
                f"default search algorithm for fixed configs."
            )
        self._kind = "tunekit"
        self._compiled = compiled

    @staticmethod
    def convert_search_space(spec: dict) -> dict[str, BaseDistribution]:
        """The Optuna distributions (``{"a/b": distribution}``) of a tunekit config.

        Raises ValueError, naming the parameter, for what Optuna cannot express,
        and for conditional spaces (a choice() over sub-spaces), which only
        OptunaSearch itself can drive: pass such a config as ``space`` or as
        the ``tunekit.run`` config.
        """
        compiled = compile_space(spec)
        if compiled.conditional:
            raise SpaceError(
                "The space has choice() categories that contain search domains (a conditional "
                "space), which a flat dict of Optuna distributions cannot express. Pass the "
                "tunekit config to OptunaSearch(space=...) or tunekit.run(config=...) instead."
            )
        return dict(compiled.distributions)

    # -- study --------------------------------------------------------------

    @property
    def _multi(self) -> bool:
        return isinstance(self._metric, (list, tuple))

    def _setup_study(self) -> None:
        if self._metric is None and self._mode is not None:
            if isinstance(self._mode, (list, tuple)):
                raise ValueError("With a list of modes (multi-objective), `metric` must be a list.")
            self._metric = _DEFAULT_METRIC
        sampler = self._sampler or optuna.samplers.TPESampler(seed=self._seed)
        if isinstance(self._mode, (list, tuple)):
            directions = {"directions": ["minimize" if m == "min" else "maximize" for m in self._mode]}
        else:
            directions = {"direction": "minimize" if self._mode == "min" else "maximize"}
        self._ot_study = optuna.create_study(
            storage=self._storage,
            sampler=sampler,
            pruner=optuna.pruners.NopPruner(),
            study_name=self._study_name,
            load_if_exists=True,
            **directions,
        )
        if self._evaluated_rewards is not None:
            for point, reward in zip(self._points, self._evaluated_rewards):
                self.add_evaluated_point(point, reward)
        else:
            for index, point in enumerate(self._points):
                self._ot_study.enqueue_trial(self._encode_point(point, f"points_to_evaluate[{index}]")[0])

    def _encode_point(self, point: Mapping, where: str) -> tuple[dict, dict]:
        if self._kind == "tunekit":
            assert self._compiled is not None
            return self._compiled.encode(point, where)
        flat = _flatten(point)
        if self._kind == "distributions":
            assert self._distributions is not None
            unknown = [k for k in flat if k not in self._distributions]
            if unknown:
                raise ValueError(
                    f"{where}: {unknown[0]!r} is not a parameter of the search space "
                    f"({', '.join(self._distributions)})."
                )
            return flat, {k: self._distributions[k] for k in flat}
        return flat, {}

    def _check_ready(self) -> None:
        if self._kind is None:
            raise RuntimeError(
                "OptunaSearch has no search space: pass `space=` to OptunaSearch or a `config` "
                "with search domains to tunekit.run()."
            )
        if self._metric is None or self._mode is None:
            raise RuntimeError(
                f"OptunaSearch needs `metric` and `mode` (got metric={self._metric!r}, "
                f"mode={self._mode!r}): pass them to OptunaSearch or to tunekit.run()."
            )
        if self._ot_study is None:
            self._setup_study()

    # -- Searcher API -------------------------------------------------------

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """Take the search space, metric and mode from ``tunekit.run``.

        Returns False (and keeps its own space) when the searcher was created
        with a ``space``; it still adopts ``metric``/``mode`` if it has none.
        """
        if self._kind is not None:
            if self._ot_study is None:
                if self._metric is None and metric is not None:
                    _check_modes(metric, self._mode if self._mode is not None else mode)
                    self._metric = metric
                if self._mode is None and mode is not None:
                    self._mode = mode
                self._setup_study_early()
            return False
        if metric is not None or mode is not None:
            _check_modes(metric or self._metric, mode or self._mode)
        self._set_space(config or {}, "config")
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        self._setup_study_early()
        return True

    def _setup_study_early(self) -> None:
        """Create the study once space, metric and mode are known (as Ray Tune's OptunaSearch
        does), so that a run serving this searcher from a process of its own forks it with
        the sampler built and its modules imported. Not with a ``storage``: its database
        connections are opened where the searcher runs, at the first suggestion."""
        if (
            self._ot_study is None
            and self._storage is None
            and self._kind is not None
            and self._mode is not None
        ):
            self._setup_study()

    def suggest(self, trial_id: str) -> dict | None:
        """Ask the study for a trial and return its config."""
        self._check_ready()
        study = self._ot_study
        assert study is not None
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            # Asked again for the same trial: the same config.
            return self._config_from_params(ot_trial.params)
        kind = self._kind
        if kind == "tunekit":
            compiled = self._compiled
            assert compiled is not None
            if compiled.conditional:
                ot_trial = study.ask()
                trial = ot_trial
                config = compiled.build(lambda name, dist: _suggest(trial, name, dist))
            else:
                ot_trial = study.ask(compiled.distributions)
                params = ot_trial.params
                config = compiled.build(lambda name, dist: params[name])
        elif kind == "distributions":
            ot_trial = study.ask(self._distributions)
            config = _unflatten(ot_trial.params)
        else:
            ot_trial = study.ask()
            config = self._run_define_by_run(ot_trial)
        self._ot_trials[trial_id] = ot_trial
        return config

    def _config_from_params(self, params: dict) -> dict:
        if self._kind == "tunekit":
            assert self._compiled is not None
            return self._compiled.build(lambda name, dist: params[name])
        return _unflatten(params)

    def _run_define_by_run(self, ot_trial: optuna.trial.Trial) -> dict:
        func = self._define_by_run
        assert func is not None
        start = time.monotonic()
        extra = func(ot_trial)
        took = time.monotonic() - start
        if took > _DEFINE_BY_RUN_WARN_S:
            warnings.warn(
                f"The define-by-run function passed as OptunaSearch(space=...) took {took:.1f} s. "
                f"It should only define the search space; do the training in the trainable.",
                stacklevel=3,
            )
        if extra is not None:
            if not isinstance(extra, Mapping) or not all(isinstance(k, str) for k in extra):
                raise TypeError(
                    "The define-by-run function passed as OptunaSearch(space=...) must return "
                    f"None or a dict with string keys (constants to add), got {extra!r}."
                )
            return _unflatten({**ot_trial.params, **extra})
        return _unflatten(ot_trial.params)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Report ``result[metric]`` at step ``training_iteration`` to the Optuna trial.

        Multi-objective studies take no intermediate values (as in Ray Tune).
        Steps already reported (a trial restarted from a checkpoint) are skipped.
        """
        if self._multi:
            return
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return
        value = result.get(self._metric)
        step = result.get("training_iteration")
        if value is None or step is None:
            return
        if step <= self._last_step.get(trial_id, -1):
            return
        self._last_step[trial_id] = step
        try:
            ot_trial.report(float(value), int(step))
        except (TypeError, ValueError) as exc:
            logger.warning("Could not report %r=%r of trial %s to Optuna: %s",
                           self._metric, value, trial_id, exc)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Tell the study the trial's final metric value(s).

        COMPLETE with the value of ``metric`` in the last result; FAIL if the
        trial errored; PRUNED if the last result lacks the metric.
        """
        ot_trial = self._ot_trials.pop(trial_id, None)
        self._last_step.pop(trial_id, None)
        if ot_trial is None or self._ot_study is None:
            return
        values: Any = None
        if result and not error:
            if self._multi:
                values = [result.get(m) for m in self._metric]
                if any(v is None for v in values):
                    values = None
            else:
                values = result.get(self._metric)
        if error:
            state = TrialState.FAIL
        elif values is None:
            state = TrialState.PRUNED
        else:
            state = TrialState.COMPLETE
        target = ot_trial.number if isinstance(ot_trial, _LiveTrial) else ot_trial
        try:
            if self._multi and state == TrialState.COMPLETE:
                values = [float(v) for v in values]
            elif state == TrialState.COMPLETE:
                values = float(values)
            _tell(self._ot_study, target, values if state == TrialState.COMPLETE else None, state)
        except Exception as exc:  # noqa: BLE001 - e.g. a NaN or non-numeric metric
            logger.warning("Optuna could not record the result of trial %s: %s", trial_id, exc)
            try:
                _tell(self._ot_study, target, None, TrialState.FAIL, skip_if_finished=True)
            except Exception:  # noqa: BLE001
                pass

    def add_evaluated_point(
        self,
        parameters: dict,
        value: float | Sequence[float] | None,
        error: bool = False,
        pruned: bool = False,
        intermediate_values: list[float] | None = None,
    ) -> None:
        """Add a config evaluated elsewhere to the study as a finished Optuna trial.

        ``value`` is the metric value (a list of values for multi-objective
        studies); ``error``/``pruned`` record a failed/pruned trial instead.
        """
        self._check_ready()
        if self._kind == "define_by_run":
            raise TypeError(
                "add_evaluated_point and evaluated_rewards need a search space of "
                "distributions, not a define-by-run function: pass a tunekit config or a dict "
                "of Optuna distributions as `space`."
            )
        params, distributions = self._encode_point(parameters, "add_evaluated_point")
        if error:
            state = TrialState.FAIL
        elif pruned:
            state = TrialState.PRUNED
        else:
            state = TrialState.COMPLETE
        kwargs: dict[str, Any] = {}
        if state == TrialState.COMPLETE:
            if value is None:
                raise ValueError("add_evaluated_point needs a value for a completed evaluation.")
            if self._multi:
                if not isinstance(value, (list, tuple)) or len(value) != len(self._metric):
                    raise ValueError(
                        f"This study has {len(self._metric)} objectives ({self._metric}); give "
                        f"one value per objective, got {value!r}."
                    )
                kwargs["values"] = [float(v) for v in value]
            else:
                kwargs["value"] = float(value)
        if intermediate_values:
            kwargs["intermediate_values"] = {
                step: float(v) for step, v in enumerate(intermediate_values)
                if v is not None and not (isinstance(v, float) and math.isnan(v))
            }
        trial = optuna.trial.create_trial(
            state=state, params=params, distributions=distributions, **kwargs
        )
        assert self._ot_study is not None
        self._ot_study.add_trial(trial)

    # -- checkpointing ------------------------------------------------------
    #
    # The run loop saves the searcher whenever trials are created or completed, so saving
    # must stay cheap as the study grows. An in-memory study is saved as its trials
    # (FrozenTrial objects) plus the sampler; finished trials never change, so they are
    # pickled once, in chunks, and the chunks are reused by every later save.

    def get_state(self) -> dict:
        """The searcher's state: settings, space, the study's trials and sampler (RNG included)."""
        state = {k: v for k, v in self.__dict__.items() if k not in _TRANSIENT}
        state["_ot_trials"] = {tid: t.number for tid, t in self._ot_trials.items()}
        study = self._ot_study
        if study is None:
            state["_study_state"] = None
        elif self._storage is not None:
            # The study lives in the user's storage; only the sampler is ours to keep.
            state["_study_state"] = {"external": True, "sampler": study.sampler}
        else:
            state["_study_state"] = self._compact_study(study)
        return state

    def _compact_study(self, study: optuna.study.Study) -> dict:
        trials = study.get_trials(deepcopy=False)
        chunks: list[bytes] = self.__dict__.setdefault("_chunks", [])
        chunked: set[int] = self.__dict__.setdefault("_chunked", set())
        fresh = [t for t in trials if t.number not in chunked and t.state.is_finished()]
        if len(fresh) >= _CHUNK:
            chunks.append(pickle.dumps(fresh, protocol=pickle.HIGHEST_PROTOCOL))
            chunked.update(t.number for t in fresh)
        tail = [t for t in trials if t.number not in chunked] if chunked else trials
        return {
            "external": False,
            "sampler": study.sampler,
            "directions": [d.name.lower() for d in study.directions],
            "user_attrs": study.user_attrs,
            "chunks": list(chunks),
            "tail": tail,
        }

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned (rebuilds the Optuna study)."""
        state = dict(state)
        study_state = state.pop("_study_state", None)
        numbers: dict[str, int] = state.pop("_ot_trials", {})
        self.__dict__.update(state)
        self._chunks = []
        self._chunked = set()
        self._ot_trials = {}
        if study_state is None:
            self._ot_study = None
            return
        sampler = study_state["sampler"]
        if study_state["external"]:
            study = optuna.load_study(
                study_name=self._study_name, storage=self._storage, sampler=sampler,
                pruner=optuna.pruners.NopPruner(),
            )
        else:
            study = optuna.create_study(
                sampler=sampler,
                pruner=optuna.pruners.NopPruner(),
                study_name=self._study_name,
                directions=study_state["directions"],
            )
            for key, value in study_state["user_attrs"].items():
                study.set_user_attr(key, value)
            trials = [t for chunk in study_state["chunks"] for t in pickle.loads(chunk)]
            self._chunked = {t.number for t in trials}
            trials.extend(study_state["tail"])
            trials.sort(key=lambda t: t.number)
            study.add_trials(trials)
            self._chunks = list(study_state["chunks"])
        self._ot_study = study
        if numbers:
            by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
            for tid, number in numbers.items():
                frozen = by_number.get(number)
                if frozen is not None and not frozen.state.is_finished():
                    self._ot_trials[tid] = _LiveTrial(study, frozen)

    def save(self, checkpoint_path: str) -> None:
        """Write the state to ``checkpoint_path`` (atomically)."""
        state = self.get_state()
        func = state.get("_define_by_run")
        if func is not None:
            import cloudpickle  # noqa: PLC0415 - lambdas and closures need it

            state["_define_by_run"] = _Pickled(cloudpickle.dumps(func))
        try:
            data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError):
            import cloudpickle  # noqa: PLC0415 - e.g. a sampler holding a lambda

            data = cloudpickle.dumps(state)
        tmp = f"{checkpoint_path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        """Load the state written by :meth:`save`; the study continues where it was."""
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        func = state.get("_define_by_run")
        if isinstance(func, _Pickled):
            state["_define_by_run"] = pickle.loads(func.data)
        self.set_state(state)

    @property
    def study(self) -> optuna.study.Study | None:
        """The Optuna study (None until the searcher has a space, metric and mode)."""
        return self._ot_study


_TRANSIENT = frozenset({"_ot_study", "_chunks", "_chunked"})
# Finished trials are pickled in chunks of (at least) this many, once.
_CHUNK = 32


class _Pickled:
    """Bytes already pickled with cloudpickle (a define-by-run function)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


class _LiveTrial:
    """A running Optuna trial of a restored study: reports and tells by trial number."""

    def __init__(self, study: optuna.study.Study, frozen: optuna.trial.FrozenTrial) -> None:
        self.study = study
        self.number = frozen.number
        self._trial_id = getattr(frozen, "_trial_id", frozen.number)
        self._trial: optuna.trial.Trial | None = None

    def report(self, value: float, step: int) -> None:
        if self._trial is None:
            self._trial = optuna.trial.Trial(self.study, self._trial_id)
        self._trial.report(value, step)

    @property
    def params(self) -> dict:
        return self.study.get_trials(deepcopy=False)[self.number].params
