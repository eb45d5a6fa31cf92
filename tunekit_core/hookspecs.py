"""Lifecycle hooks of the run loop: the reference for plugin authors.

tunekit uses pluggy (project name ``"tunekit"``). Two kinds of objects receive
these calls:

* callbacks passed to ``tunekit.run(callbacks=[...])``: subclasses of
  :class:`tunekit.Callback` (Ray Tune's method names, forwarded from these
  hooks), or any object whose methods are decorated with :data:`hookimpl`;
* modules (or objects) registered under the entry-point group
  ``tunekit.plugins``, loaded automatically for every run. Set the environment
  variable ``TUNEKIT_DISABLE_PLUGIN_AUTOLOAD=1`` to skip them.

An implementation takes any subset of a hook's arguments, by name::

    from tunekit import hookimpl

    @hookimpl
    def tunekit_on_trial_result(trial, result):
        print(trial, result["training_iteration"])

All hooks are called for every implementation (none is ``firstresult``);
return values are ignored by the run loop. ``iteration`` is the run loop's step
counter and ``trials`` the list of all trials, as in Ray Tune. Exceptions raised
by an implementation propagate to the run loop and end the run, so hooks that
may fail should catch their own errors. Hooks run in the driver's only thread:
keep per-result hooks cheap.
"""

from __future__ import annotations

from typing import Any

import pluggy

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "tunekit"

#: Marks the hook specifications below.
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Marks a hook implementation in a callback or plugin module.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def tunekit_on_experiment_start(experiment: Any, experiments: list, total_num_samples: Any) -> None:
    """The experiment is set up and no trial has started yet.

    ``experiment`` is the first (usually the only) experiment spec,
    ``experiments`` all of them, and ``total_num_samples`` the number of trials
    the searcher will produce (None when unknown). ``Callback.setup`` is called
    from here with ``stop``, ``num_samples`` and ``time_budget_s`` of the
    experiment and ``total_num_samples``.
    """


@hookspec
def tunekit_on_step_begin(iteration: int, trials: list) -> None:
    """A run-loop step begins (before the loop waits for the next event)."""


@hookspec
def tunekit_on_step_end(iteration: int, trials: list) -> None:
    """A run-loop step ended. Loggers use it to flush buffered output now and then."""


@hookspec
def tunekit_on_trial_start(trial: Any, iteration: int, trials: list) -> None:
    """``trial`` started, or restarted after a pause, a failure (retry) or a resume.

    Called once the executor has launched the trial (as Ray Tune calls it), before any of
    its results is handled. The trial directory (``trial.local_path``) exists.
    """


@hookspec
def tunekit_on_trial_restore(trial: Any, iteration: int, trials: list) -> None:
    """``trial`` (re)started from a checkpoint (Ray's ``on_trial_restore``).

    Called right after ``tunekit_on_trial_start`` whenever the trial continues from
    a checkpoint: a retry after a failure, a resumed experiment, a paused trial
    that runs again, a PBT exploit, or ``run(restore=...)``. Not called for a
    start from scratch. The trial's process loads the checkpoint before its first
    step.
    """


@hookspec
def tunekit_on_trial_save(trial: Any, iteration: int, trials: list) -> None:
    """A checkpoint of ``trial`` was persisted and registered (Ray's ``on_trial_save``).

    Called once per checkpoint, right after ``tunekit_on_checkpoint`` (which also
    passes the checkpoint); ``trial.checkpoint`` is the new checkpoint then.
    """


@hookspec
def tunekit_on_trial_result(trial: Any, result: dict, iteration: int, trials: list) -> None:
    """``trial`` reported ``result``, after the scheduler decided what to do with it.

    Called for every result, possibly tens of thousands of times per second:
    implementations must be cheap. ``result`` carries the auto-filled fields
    (``training_iteration``, ``time_total_s``, ``trial_id``, ``config``, ...).
    Do not modify it.
    """


@hookspec
def tunekit_on_checkpoint(trial: Any, checkpoint: Any, iteration: int, trials: list) -> None:
    """A checkpoint of ``trial`` was persisted; ``checkpoint`` describes it."""


@hookspec
def tunekit_on_trial_complete(trial: Any, iteration: int, trials: list) -> None:
    """``trial`` terminated normally (its status is TERMINATED)."""


@hookspec
def tunekit_on_trial_error(trial: Any, error: Any, iteration: int, trials: list) -> None:
    """``trial`` failed; ``error`` is the exception (or its description).

    Called on every failure, including the ones followed by a retry
    (``max_failures``); ``trial.error_file`` points to the traceback.
    """


@hookspec
def tunekit_flush() -> None:
    """Write buffered output to disk now.

    Call it when the files on disk must be current, for example right before
    the experiment state is saved, so the two match. Loggers implement it
    (``LoggerCallback.flush``); they also flush on their own every few seconds
    and when a trial or the experiment ends.
    """


@hookspec
def tunekit_on_experiment_end(trials: list) -> None:
    """The run loop finished (all trials ended, or the run was stopped).

    The last call a run makes; loggers close their files here.
    """
