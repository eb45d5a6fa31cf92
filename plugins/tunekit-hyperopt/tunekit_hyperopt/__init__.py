"""Hyperopt search for tunekit: :class:`HyperOptSearch`, with Ray Tune's semantics.

Registered as ``hyperopt`` in the ``tunekit.searchers`` entry-point group, so
``tunekit.run(train, config=..., search_alg="hyperopt", metric=..., mode=...)``
works by name; ``from tunekit.search.hyperopt import HyperOptSearch`` gives the
class.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import pickle
from collections.abc import Mapping
from typing import Any

import hyperopt as hpo
import numpy as np
from hyperopt.pyll.base import Apply

from tunekit_core.searcher import Searcher
from tunekit_core.space import Domain, has_unresolved_values

from ._convert import CompiledSpace, SpaceError, compile_space

__all__ = ["HyperOptSearch", "SpaceError"]

logger = logging.getLogger(__name__)
# Hyperopt logs every TPE step at INFO ("build_posterior_wrapper took ...").
logging.getLogger("hyperopt").setLevel(logging.WARNING)

_DEFAULT_METRIC = "_metric"
# Finished trial documents are pickled in chunks of (at least) this many, once.
_CHUNK = 32
_FINISHED = (hpo.JOB_STATE_DONE, hpo.JOB_STATE_ERROR)


def _is_native(space: Any) -> bool:
    """Whether ``space`` holds Hyperopt (pyll) expressions."""
    if isinstance(space, Apply):
        return True
    if isinstance(space, Mapping):
        return any(_is_native(v) for v in space.values())
    if isinstance(space, (list, tuple)):
        return any(_is_native(v) for v in space)
    return False


class HyperOptSearch(Searcher):
    """Suggest configs with `Hyperopt <https://hyperopt.github.io/hyperopt>`_'s TPE.

    Ray Tune's ``HyperOptSearch`` semantics: every suggestion is one Hyperopt
    trial proposed by ``tpe.suggest`` from the trials so far; the trial is
    told ``metric`` (negated for ``mode="max"``, Hyperopt minimises) when the
    tunekit trial completes.

    Args:
        space: The search space: a tunekit config (nested dicts, lists and
            conditional ``choice`` categories included), or a native Hyperopt
            space (``{"lr": hp.loguniform("lr", -10, -1), "model":
            hp.choice("model", [...])}``, nested ``hp.choice`` included).
            Leave it None to take the ``config`` of ``tunekit.run``.
        metric: The result key to optimise.
        mode: ``"min"`` or ``"max"``.
        points_to_evaluate: Complete configs to evaluate first, in order.
            ``choice`` parameters are given by value (not index).
        n_initial_points: Random suggestions before TPE takes over (Hyperopt's
            ``n_startup_jobs``; points_to_evaluate count towards them).
        random_state_seed: Seed making the suggestions reproducible.
        gamma: TPE's split between good and bad trials (default 0.25).

    Parameters of a tunekit space that Hyperopt cannot express
    (``grid_search``, ``sample_from``) raise ValueError naming the parameter.
    """

    # Suggestions cost milliseconds of Python: the run loop serves this searcher from a
    # process of its own, so they are computed while the driver does its bookkeeping
    # (tunekit_core.searcher_process; TUNEKIT_SEARCHER_PROCESS=0 keeps it in the driver).
    run_in_own_process = True

    def __init__(
        self,
        space: dict | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict] | None = None,
        n_initial_points: int = 20,
        random_state_seed: int | None = None,
        gamma: float = 0.25,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        if points_to_evaluate is not None and (
            not isinstance(points_to_evaluate, (list, tuple))
            or not all(isinstance(p, Mapping) for p in points_to_evaluate)
        ):
            raise ValueError(
                f"points_to_evaluate must be a list of config dicts, got {points_to_evaluate!r}."
            )
        if n_initial_points is not None and (
            isinstance(n_initial_points, bool)
            or not isinstance(n_initial_points, int)
            or n_initial_points < 0
        ):
            raise ValueError(f"n_initial_points must be an int >= 0, got {n_initial_points!r}.")
        if gamma is not None and not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}.")
        self._points = [copy.deepcopy(dict(p)) for p in points_to_evaluate or []]
        self._n_initial_points = n_initial_points
        self._gamma = gamma
        self._seed = random_state_seed
        self.rstate = np.random.RandomState(random_state_seed)

        self._native: Any = None  # a native Hyperopt space
        self._compiled: CompiledSpace | None = None  # a converted tunekit space
        self._hp_trials: hpo.Trials | None = None
        self._docs: list[dict] = []  # every trial document, in tid order
        self._live: dict[str, dict] = {}  # tunekit trial id -> its document
        self._pending_points: list[dict] = []  # vals of points not suggested yet
        self._next_tid = 0
        self._transient_reset()
        if isinstance(space, Mapping) and space:
            self._set_space(space, "space")
        elif space is not None and not (isinstance(space, Mapping) and not space):
            if isinstance(space, Apply):
                raise ValueError(
                    "HyperOptSearch `space` must be a dict (of Hyperopt expressions or tunekit "
                    "domains), so that suggestions are configs; wrap it: {'params': space}."
                )
            raise ValueError(
                f"HyperOptSearch `space` must be a dict, got {type(space).__name__}."
            )

    def _transient_reset(self) -> None:
        self._domain: hpo.Domain | None = None
        self._chunks: list[bytes] = []
        self._chunked = 0

    # -- space --------------------------------------------------------------

    def _set_space(self, space: Mapping, argument: str) -> None:
        if _is_native(space):
            if _has_domains(space):
                raise ValueError(
                    f"HyperOptSearch `{argument}` mixes Hyperopt expressions with tunekit search "
                    f"domains; use one kind for the whole space."
                )
            self._native = dict(space)
        else:
            compiled = compile_space(space)
            if compiled.empty:
                raise ValueError(
                    f"HyperOptSearch got a `{argument}` without any search domain "
                    f"(tunekit.uniform, tunekit.choice, ...): there is nothing to optimise. Add a "
                    f"domain, or use the default search algorithm for fixed configs."
                )
            self._compiled = compiled
        self._setup()

    @staticmethod
    def convert_search_space(spec: dict) -> dict:
        """The Hyperopt space (``{label: hp node}``) of a tunekit config.

        Labels are the parameters' paths joined with ``/``; parameters inside a
        conditional ``choice`` category sit in that choice's options. Raises
        ValueError, naming the parameter, for what Hyperopt cannot express.
        """
        return dict(compile_space(spec).expr)

    def _setup(self) -> None:
        self._hp_trials = hpo.Trials()
        self._docs = []
        self._live = {}
        self._next_tid = 0
        self._pending_points = [
            self._encode_point(point, f"points_to_evaluate[{i}]")
            for i, point in enumerate(self._points)
        ]

    def _expr(self) -> Any:
        return self._native if self._native is not None else self._compiled.expr

    def _get_domain(self) -> hpo.Domain:
        if self._domain is None:
            self._domain = hpo.Domain(_identity, self._expr())
        return self._domain

    def _algo(self):
        kwargs: dict[str, Any] = {}
        if self._n_initial_points is not None:
            kwargs["n_startup_jobs"] = self._n_initial_points
        if self._gamma is not None:
            kwargs["gamma"] = self._gamma
        return functools.partial(hpo.tpe.suggest, **kwargs)

    def _encode_point(self, point: Mapping, where: str) -> dict:
        if self._compiled is not None:
            return self._compiled.encode(point, where)
        vals: dict = {}
        _native_vals(self._native, point, vals, where)
        try:
            hpo.space_eval(self._native, vals)
        except Exception as exc:  # noqa: BLE001 - pyll raises many kinds
            raise ValueError(
                f"{where} does not give a value for every parameter of the Hyperopt space that "
                f"it activates ({type(exc).__name__}: {exc}). Include every searched key."
            ) from None
        return vals

    # -- Searcher API -------------------------------------------------------

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """Take the search space, metric and mode from ``tunekit.run``.

        Returns False (and keeps its own space) when created with a ``space``;
        it still adopts ``metric``/``mode`` if it has none.
        """
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min', 'max' or None, got {mode!r}.")
        if self._hp_trials is not None:
            if self._metric is None and metric is not None:
                self._metric = metric
            if self._mode is None and mode is not None:
                self._mode = mode
            return False
        self._set_space(config or {}, "config")
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def _check_ready(self) -> None:
        if self._hp_trials is None:
            raise RuntimeError(
                "HyperOptSearch has no search space: pass `space=` to HyperOptSearch or a "
                "`config` with search domains to tunekit.run()."
            )
        if self._mode is None:
            raise RuntimeError(
                f"HyperOptSearch needs `metric` and `mode` (got metric={self._metric!r}, "
                f"mode={self._mode!r}): pass them to HyperOptSearch or to tunekit.run()."
            )
        if self._metric is None:
            self._metric = _DEFAULT_METRIC

    def suggest(self, trial_id: str) -> dict | None:
        """Propose the next config (a points_to_evaluate entry first, then TPE)."""
        self._check_ready()
        trials = self._hp_trials
        assert trials is not None
        tid = self._next_tid
        self._next_tid += 1
        if self._pending_points:
            new_docs = [self._point_doc(tid, self._pending_points.pop(0))]
        else:
            trials.refresh()
            new_docs = self._algo()(
                [tid], self._get_domain(), trials, self.rstate.randint(2**31 - 1)
            )
        trials.insert_trial_docs(new_docs)
        trials.refresh()
        doc = trials.trials[-1]
        assert doc["tid"] == tid
        doc["book_time"] = hpo.utils.coarse_utcnow()
        self._docs.append(doc)
        self._live[trial_id] = doc
        vals = {k: v[0] for k, v in doc["misc"]["vals"].items() if v}
        if self._compiled is not None:
            return self._compiled.build(vals)
        config = hpo.space_eval(self._native, vals)
        return copy.deepcopy(config)

    def _point_doc(self, tid: int, vals: dict) -> dict:
        """A new trial document holding the given ``vals`` (inactive labels left empty)."""
        trials = self._hp_trials
        domain = self._get_domain()
        misc = {
            "tid": tid,
            "cmd": domain.cmd,
            "workdir": domain.workdir,
            "idxs": {label: ([tid] if label in vals else []) for label in domain.params},
            "vals": {label: ([vals[label]] if label in vals else []) for label in domain.params},
        }
        return trials.new_trial_docs([tid], [None], [domain.new_result()], [misc])[0]

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Record the trial's loss (``metric``, negated for ``mode="max"``) in Hyperopt.

        An errored trial, or one that ended without any result, is recorded as failed.
        """
        doc = self._live.pop(trial_id, None)
        if doc is None:
            return
        doc["refresh_time"] = hpo.utils.coarse_utcnow()
        if error or not result:
            doc["state"] = hpo.JOB_STATE_ERROR
            doc["misc"]["error"] = ("TrialError", "the trial failed" if error else "no result")
        else:
            if self._metric not in result:
                raise ValueError(
                    f"HyperOptSearch optimises {self._metric!r}, but the last result of trial "
                    f"{trial_id} has no such key (keys: {', '.join(sorted(result))}). Report "
                    f"it with tunekit.report({{{self._metric!r}: value}}), or fix `metric`."
                )
            value = float(result[self._metric])
            doc["state"] = hpo.JOB_STATE_DONE
            doc["result"] = {
                "loss": -value if self._mode == "max" else value,
                "status": hpo.STATUS_OK,
            }
        self._hp_trials.refresh()

    # -- checkpointing ------------------------------------------------------
    #
    # The run loop saves the searcher whenever trials are created or completed. Trial
    # documents hold numpy scalars, which are slow to pickle, and finished documents never
    # change: they are pickled once, in chunks, reused by every later save.

    def get_state(self) -> dict:
        """Settings, space, RNG state and the trial documents (finished ones in chunks)."""
        state = {
            k: v for k, v in self.__dict__.items()
            if k not in ("_domain", "_chunks", "_chunked", "_hp_trials", "_docs", "_live", "rstate")
        }
        docs = self._docs
        fresh_end = self._chunked
        while fresh_end < len(docs) and docs[fresh_end]["state"] in _FINISHED:
            fresh_end += 1
        if fresh_end - self._chunked >= _CHUNK:
            self._chunks.append(
                pickle.dumps(docs[self._chunked:fresh_end], protocol=pickle.HIGHEST_PROTOCOL)
            )
            self._chunked = fresh_end
        state["_state_chunks"] = list(self._chunks)
        state["_state_tail"] = docs[self._chunked:]
        state["_state_live"] = {tid: doc["tid"] for tid, doc in self._live.items()}
        state["_state_has_trials"] = self._hp_trials is not None
        state["_state_rstate"] = self.rstate.get_state()
        return state

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned (rebuilds the Hyperopt Trials)."""
        state = dict(state)
        chunks = state.pop("_state_chunks")
        tail = state.pop("_state_tail")
        live = state.pop("_state_live")
        has_trials = state.pop("_state_has_trials")
        rstate = state.pop("_state_rstate")
        self.__dict__.update(state)
        self._transient_reset()
        self.rstate = np.random.RandomState()
        self.rstate.set_state(rstate)
        docs = [d for chunk in chunks for d in pickle.loads(chunk)] + list(tail)
        self._hp_trials = None
        self._docs = []
        self._live = {}
        if not has_trials:
            return
        trials = hpo.Trials()
        trials.insert_trial_docs(docs)
        trials.refresh()
        # insert_trial_docs may copy the documents: keep references to the stored ones.
        by_tid = {d["tid"]: d for d in trials.trials}
        self._docs = [by_tid.get(d["tid"], d) for d in docs]
        self._hp_trials = trials
        self._chunks = list(chunks)
        self._chunked = len(docs) - len(tail)
        for trial_id, tid in live.items():
            if tid in by_tid:
                self._live[trial_id] = by_tid[tid]

    def save(self, checkpoint_path: str) -> None:
        """Write the state to ``checkpoint_path`` (atomically)."""
        state = self.get_state()
        try:
            data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError):
            import cloudpickle  # noqa: PLC0415 - a space holding lambdas (pyll scope functions)

            data = cloudpickle.dumps(state)
        tmp = f"{checkpoint_path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        """Load the state written by :meth:`save`; the search continues where it was."""
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    @property
    def trials(self) -> hpo.Trials | None:
        """The Hyperopt ``Trials`` object (None until the searcher has a space)."""
        return self._hp_trials


def _identity(config: Any) -> Any:
    return config


def _has_domains(space: Any) -> bool:
    if isinstance(space, Domain):
        return True
    if isinstance(space, Mapping):
        return has_unresolved_values(dict(space))
    if isinstance(space, (list, tuple)):
        return any(_has_domains(v) for v in space)
    return False


# --------------------------------------------------------------------------- #
# points_to_evaluate for native Hyperopt spaces: config values -> {label: value}
# --------------------------------------------------------------------------- #


def _unwrap(node: Any) -> Any:
    while isinstance(node, Apply) and node.name in ("float", "int") and node.pos_args:
        node = node.pos_args[0]
    return node


def _label(param: Apply) -> str:
    return param.arg["label"].obj


def _children(node: Apply) -> Any:
    """A pyll dict/list node as a Python dict/list of nodes (None for other nodes)."""
    if node.name == "dict":
        return dict(node.named_args)
    if node.name == "pos_args":
        return list(node.pos_args)
    return None


def _native_matches(space: Any, value: Any) -> bool:
    if isinstance(space, Mapping):
        return isinstance(value, Mapping) and not (set(value) - set(space)) and all(
            _native_matches(space[k], v) for k, v in value.items()
        )
    if isinstance(space, (list, tuple)):
        return isinstance(value, (list, tuple)) and len(value) == len(space) and all(
            _native_matches(s, v) for s, v in zip(space, value)
        )
    if not isinstance(space, Apply):
        try:
            return bool(space == value)
        except Exception:  # noqa: BLE001
            return False
    node = _unwrap(space)
    if node.name == "literal":
        try:
            return bool(node.obj == value)
        except Exception:  # noqa: BLE001
            return False
    if node.name == "switch":
        return any(_native_matches(o, value) for o in node.pos_args[1:])
    children = _children(node)
    if children is not None:
        return _native_matches(children, value)
    return True  # a distribution or an expression: any value may come from it


def _native_vals(space: Any, value: Any, out: dict, where: str) -> None:
    if isinstance(space, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a dict, got {value!r}.")
        for key, sub in space.items():
            if key in value:
                _native_vals(sub, value[key], out, where)
        return
    if isinstance(space, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(space):
            raise ValueError(f"{where}: expected {len(space)} values, got {value!r}.")
        for sub, v in zip(space, value):
            _native_vals(sub, v, out, where)
        return
    if not isinstance(space, Apply):
        return
    node = _unwrap(space)
    if node.name == "hyperopt_param":
        out[_label(node)] = value
        return
    if node.name == "switch":
        label = _label(_unwrap(node.pos_args[0]))
        for index, option in enumerate(node.pos_args[1:]):
            if _native_matches(option, value):
                out[label] = index
                _native_vals(option, value, out, where)
                return
        raise ValueError(
            f"{where}: {value!r} is not one of the options of the hp.choice '{label}'. "
            f"Give choice parameters by value."
        )
    children = _children(node)
    if children is not None:
        _native_vals(children, value, out, where)
        return
    if node.name == "literal":
        return
    raise ValueError(
        f"{where}: cannot tell which Hyperopt parameter gives the value {value!r} (it comes "
        f"from a '{node.name}' expression). Use plain hp.* distributions for points_to_evaluate."
    )
