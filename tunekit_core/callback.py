"""Ray Tune style callbacks on top of tunekit's pluggy hooks.

:class:`Callback` has Ray Tune's method names and signatures; every method is a
no-op by default. When a callback is registered (see
:func:`tunekit_core.hooks.make_plugin_manager`), only the methods a subclass
overrides become hook implementations, and where a method's signature lets
pluggy call it directly it is registered as it is, so a callback costs nothing
for the hooks it does not implement and almost nothing for those it does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Callback", "LoggerCallback"]


def _public_spec(experiment: Any) -> dict[str, Any]:
    """The keys of an experiment spec that Ray passes to ``Callback.setup``."""
    spec = getattr(experiment, "public_spec", None)
    if callable(spec):
        spec = spec()
    if isinstance(spec, Mapping):
        return dict(spec)
    if isinstance(experiment, Mapping):
        source: Mapping[str, Any] = experiment
    else:
        source = {k: getattr(experiment, k) for k in _PUBLIC_KEYS if hasattr(experiment, k)}
    return {k: source[k] for k in _PUBLIC_KEYS if k in source}


_PUBLIC_KEYS = ("stop", "num_samples", "time_budget_s")


# Keyword-forwarding adapters, used when a method's signature does not let pluggy
# call it directly (``**kwargs`` only, other parameter names, keyword-only...).
# Each takes exactly the hook arguments the Ray method receives.
def _kw_step(method: Callable[..., Any]) -> Callable[..., Any]:
    def impl(iteration, trials):
        return method(iteration=iteration, trials=trials)

    return impl


def _kw_trial(method: Callable[..., Any]) -> Callable[..., Any]:
    def impl(iteration, trials, trial):
        return method(iteration=iteration, trials=trials, trial=trial)

    return impl


def _kw_result(method: Callable[..., Any]) -> Callable[..., Any]:
    def impl(iteration, trials, trial, result):
        return method(iteration=iteration, trials=trials, trial=trial, result=result)

    return impl


def _kw_checkpoint(method: Callable[..., Any]) -> Callable[..., Any]:
    def impl(iteration, trials, trial, checkpoint):
        return method(iteration=iteration, trials=trials, trial=trial, checkpoint=checkpoint)

    return impl


def _kw_trials(method: Callable[..., Any]) -> Callable[..., Any]:
    def impl(trials):
        return method(trials=trials)

    return impl


def _pos_log_trial(method: Callable[..., Any]) -> Callable[..., Any]:
    def impl(trial):
        return method(trial)

    return impl


def _pos_log_result(method: Callable[..., Any]) -> Callable[..., Any]:
    def impl(iteration, trial, result):
        return method(iteration, trial, result)

    return impl


def _kw_none(method: Callable[..., Any]) -> Callable[..., Any]:
    def impl():
        return method()

    return impl


# hook name -> (Callback method, arguments Ray passes to it, keyword adapter)
_CALLBACK_METHODS: dict[str, tuple[str, tuple[str, ...], Callable[..., Any]]] = {
    "tunekit_on_step_begin": ("on_step_begin", ("iteration", "trials"), _kw_step),
    "tunekit_on_step_end": ("on_step_end", ("iteration", "trials"), _kw_step),
    "tunekit_on_trial_start": ("on_trial_start", ("iteration", "trials", "trial"), _kw_trial),
    "tunekit_on_trial_restore": ("on_trial_restore", ("iteration", "trials", "trial"), _kw_trial),
    "tunekit_on_trial_save": ("on_trial_save", ("iteration", "trials", "trial"), _kw_trial),
    "tunekit_on_trial_result": (
        "on_trial_result",
        ("iteration", "trials", "trial", "result"),
        _kw_result,
    ),
    "tunekit_on_checkpoint": (
        "on_checkpoint",
        ("iteration", "trials", "trial", "checkpoint"),
        _kw_checkpoint,
    ),
    "tunekit_on_trial_complete": (
        "on_trial_complete",
        ("iteration", "trials", "trial"),
        _kw_trial,
    ),
    "tunekit_on_trial_error": ("on_trial_error", ("iteration", "trials", "trial"), _kw_trial),
    "tunekit_on_experiment_end": ("on_experiment_end", ("trials",), _kw_trials),
}

# The arguments of each hook (see tunekit_core.hookspecs).
_HOOK_ARGS: dict[str, frozenset[str]] = {
    "tunekit_on_experiment_start": frozenset({"experiment", "experiments", "total_num_samples"}),
    "tunekit_on_step_begin": frozenset({"iteration", "trials"}),
    "tunekit_on_step_end": frozenset({"iteration", "trials"}),
    "tunekit_on_trial_start": frozenset({"trial", "iteration", "trials"}),
    "tunekit_on_trial_restore": frozenset({"trial", "iteration", "trials"}),
    "tunekit_on_trial_save": frozenset({"trial", "iteration", "trials"}),
    "tunekit_on_trial_result": frozenset({"trial", "result", "iteration", "trials"}),
    "tunekit_on_checkpoint": frozenset({"trial", "checkpoint", "iteration", "trials"}),
    "tunekit_on_trial_complete": frozenset({"trial", "iteration", "trials"}),
    "tunekit_on_trial_error": frozenset({"trial", "error", "iteration", "trials"}),
    "tunekit_flush": frozenset(),
    "tunekit_on_experiment_end": frozenset({"trials"}),
}


def _overridden(obj: object, method_name: str, base: type) -> Callable[..., Any] | None:
    """``obj``'s bound ``method_name`` when it differs from ``base``'s, else None."""
    bound = getattr(obj, method_name, None)
    if bound is None:
        return None
    function = getattr(bound, "__func__", bound)
    if function is base.__dict__.get(method_name):
        return None
    return bound


def _bind(
    method: Callable[..., Any],
    expected: tuple[str, ...],
    hook_args: frozenset[str],
    keyword_adapter: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> Callable[..., Any]:
    """``method`` itself when pluggy can call it by its parameter names, else an adapter.

    pluggy passes a hook implementation the hook arguments named by its
    required positional parameters. That matches Ray's keyword call exactly when
    those parameters are Ray's arguments (plus, optionally, other arguments of
    the same hook), so the method is registered as it is: no wrapper frame.
    """
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):
        return keyword_adapter(method)
    required = []
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:
            continue
        if parameter.kind is parameter.VAR_POSITIONAL:
            return keyword_adapter(method)
        if parameter.default is parameter.empty:
            if parameter.kind is not parameter.POSITIONAL_OR_KEYWORD:
                return keyword_adapter(method)
            required.append(parameter.name)
    names = set(required)
    if len(names) == len(required) and set(expected) <= names <= hook_args:
        return method
    return keyword_adapter(method)


class Callback:
    """Base class for tunekit callbacks, with Ray Tune's ``Callback`` interface.

    Subclass it, override the methods you need and pass instances to
    ``tunekit.run(callbacks=[...])``. Each method receives its arguments by
    keyword and ``**info`` for future additions; the defaults do nothing. The
    methods are driven by the hooks in :mod:`tunekit_core.hookspecs`; a
    subclass may also define ``@hookimpl`` methods named after those hooks.

    Example::

        class PrintLoss(tunekit.Callback):
            def on_trial_result(self, iteration, trials, trial, result, **info):
                print(f"{trial}: loss={result['loss']}")
    """

    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        """Called once before the first trial starts.

        ``stop`` and ``num_samples`` come from the experiment, ``total_num_samples``
        is the number of trials the searcher produces (None when unknown).
        """

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        """Called at the start of each run-loop step."""

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Called at the end of each run-loop step."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Called when ``trial`` starts (or restarts)."""

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Called when ``trial`` (re)starts from a checkpoint, after ``on_trial_start``.

        A retry, a resumed experiment, an unpaused trial, a PBT exploit or
        ``restore=``; not for a start from scratch.
        """

    def on_trial_save(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Called after a checkpoint of ``trial`` was persisted, after ``on_checkpoint``."""

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        """Called for every result ``trial`` reports. Keep it cheap."""

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Called when ``trial`` terminated normally."""

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Called when ``trial`` failed (also for failures that are retried)."""

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        """Called after a checkpoint of ``trial`` was persisted."""

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Called once after the run loop finished."""

    def _tunekit_hookimpls(self) -> dict[str, Callable[..., Any]]:
        """The hook implementations this callback needs: hook name -> callable.

        Only overridden methods appear. Used by ``make_plugin_manager``.
        """
        impls: dict[str, Callable[..., Any]] = {}
        setup = _overridden(self, "setup", Callback)
        if setup is not None:

            def tunekit_on_experiment_start(experiment, total_num_samples):
                spec = _public_spec(experiment)
                spec["total_num_samples"] = total_num_samples
                return setup(**spec)

            impls["tunekit_on_experiment_start"] = tunekit_on_experiment_start
        for hook, (method_name, expected, adapter) in _CALLBACK_METHODS.items():
            method = _overridden(self, method_name, Callback)
            if method is not None:
                impls[hook] = _bind(method, expected, _HOOK_ARGS[hook], adapter)
        return impls


class LoggerCallback(Callback):
    """Base class for result loggers, with Ray Tune's ``LoggerCallback`` interface.

    Override ``log_trial_start``, ``log_trial_result`` and ``log_trial_end``
    (and ``flush`` if you buffer output). They are wired to the trial hooks:
    start and restart call ``log_trial_start``, every result
    ``log_trial_result``, completion ``log_trial_end(trial, failed=False)`` and
    an error ``log_trial_end(trial, failed=True)``. The run loop calls ``flush``
    through the ``tunekit_flush`` hook.
    """

    def log_trial_start(self, trial: Any) -> None:
        """``trial`` started or restarted: open its outputs."""

    def log_trial_restore(self, trial: Any) -> None:
        """``trial`` (re)started from a checkpoint."""

    def log_trial_save(self, trial: Any) -> None:
        """A checkpoint of ``trial`` was persisted."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        """Record one result of ``trial``."""

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        """``trial`` ended (``failed`` tells whether by an error): close its outputs."""

    def flush(self) -> None:
        """Write buffered output to disk."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.log_trial_start(trial)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.log_trial_restore(trial)

    def on_trial_save(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.log_trial_save(trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self.log_trial_result(iteration, trial, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.log_trial_end(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.log_trial_end(trial, failed=True)

    def _tunekit_hookimpls(self) -> dict[str, Callable[..., Any]]:
        impls = super()._tunekit_hookimpls()
        # Where a subclass keeps LoggerCallback's forwarding on_* method, register
        # the log_* method it forwards to instead (or nothing when that is a no-op).
        for hook, on_name, log_name, expected, adapter in _LOGGER_FORWARDS:
            if _overridden(self, on_name, LoggerCallback) is not None:
                continue
            impls.pop(hook, None)
            log_method = _overridden(self, log_name, LoggerCallback)
            if log_method is not None:
                impls[hook] = _bind(log_method, expected, _HOOK_ARGS[hook], adapter)
        log_end = _overridden(self, "log_trial_end", LoggerCallback)
        for hook, on_name, failed in _LOGGER_ENDS:
            if _overridden(self, on_name, LoggerCallback) is not None:
                continue
            impls.pop(hook, None)
            if log_end is not None:
                impls[hook] = _log_end_adapter(log_end, failed)
        flush = _overridden(self, "flush", LoggerCallback)
        if flush is not None:
            impls["tunekit_flush"] = _bind(flush, (), _HOOK_ARGS["tunekit_flush"], _kw_none)
        return impls


def _log_end_adapter(log_end: Callable[..., Any], failed: bool) -> Callable[..., Any]:
    def impl(trial):
        return log_end(trial, failed=failed)

    return impl


# hook, LoggerCallback forwarding method, log method, its Ray arguments, adapter.
# Ray's LoggerCallback calls the log methods positionally, so do the adapters.
_LOGGER_FORWARDS = (
    ("tunekit_on_trial_start", "on_trial_start", "log_trial_start", ("trial",), _pos_log_trial),
    (
        "tunekit_on_trial_restore",
        "on_trial_restore",
        "log_trial_restore",
        ("trial",),
        _pos_log_trial,
    ),
    ("tunekit_on_trial_save", "on_trial_save", "log_trial_save", ("trial",), _pos_log_trial),
    (
        "tunekit_on_trial_result",
        "on_trial_result",
        "log_trial_result",
        ("iteration", "trial", "result"),
        _pos_log_result,
    ),
)

# hook, LoggerCallback forwarding method, the ``failed`` flag it passes to log_trial_end
_LOGGER_ENDS = (
    ("tunekit_on_trial_complete", "on_trial_complete", False),
    ("tunekit_on_trial_error", "on_trial_error", True),
)
