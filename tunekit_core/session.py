"""Functions a trainable calls while it runs: ``report`` and trial information.

The worker process installs a session before it runs a trial; outside a trial these
functions raise a clear error.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Mapping
from typing import Any

_session = None  # set by tunekit_core.worker while a trial runs


def _require_session(fn: str):
    if _session is None:
        raise RuntimeError(
            f"tunekit.{fn}() was called outside a trial. Call it from inside a trainable "
            "that tunekit.run() (or a Tuner) is running."
        )
    return _session


def report(*args: Any, checkpoint: Any = None, **kwargs: Any) -> None:
    """Report metrics of one training iteration.

    Both styles work: ``report({"loss": x})`` (Ray 2.x) and ``report(loss=x)``
    (Ray 1.x); a single number is reported as ``_metric``. If the driver has
    decided to stop this trial, the call does not return: the trial ends here.
    """
    session = _require_session("report")
    if args:
        if len(args) > 1:
            raise TypeError(
                "report() takes one positional argument (a dict of metrics), got "
                f"{len(args)}. Use report({{'loss': x, 'acc': y}}) or report(loss=x, acc=y)."
            )
        first = args[0]
        if isinstance(first, Mapping):
            metrics = dict(first)
            if kwargs:
                metrics.update(kwargs)
        elif isinstance(first, numbers.Number):
            metrics = {"_metric": first, **kwargs}
        else:
            raise TypeError(
                f"report() expects a dict of metrics, got {type(first).__name__}: {first!r}."
            )
    else:
        metrics = kwargs
    if checkpoint is not None and not hasattr(checkpoint, "path"):
        raise TypeError(
            "report(..., checkpoint=...) expects a tunekit.Checkpoint, e.g. "
            f"Checkpoint.from_directory(path); got {type(checkpoint).__name__}."
        )
    session.report(metrics, checkpoint)


def get_checkpoint():
    """The checkpoint this trial should resume from, or ``None`` on a fresh start."""
    return _require_session("get_checkpoint").restore_checkpoint


@contextlib.contextmanager
def checkpoint_dir(step: int | None = None):
    """Ray Tune 1.x style: a directory to write a checkpoint into.

    The directory becomes a checkpoint of the trial with the next ``report`` (or,
    if none follows, when the trainable returns)::

        with tunekit.checkpoint_dir(step=epoch) as d:
            save(model, os.path.join(d, "model.pt"))
        tunekit.report(loss=loss)
    """
    session = _require_session("checkpoint_dir")
    path = session.checkpoint_dir(step)
    yield path
    if session.pending_checkpoint is not None and session.pending_checkpoint != path:
        import shutil

        shutil.rmtree(session.pending_checkpoint, ignore_errors=True)
    session.pending_checkpoint = path


def get_trial_id() -> str:
    """The id of the running trial."""
    return _require_session("get_trial_id").trial_id


def get_trial_name() -> str:
    """The name of the running trial."""
    return _require_session("get_trial_name").trial_name


def get_trial_dir() -> str:
    """The directory of the running trial."""
    return _require_session("get_trial_dir").logdir


def get_trial_resources() -> dict:
    """The resources assigned to the running trial, e.g. ``{'CPU': 1.0}``."""
    return dict(_require_session("get_trial_resources").resources)


def is_session_enabled() -> bool:
    """True inside a trial."""
    return _session is not None
