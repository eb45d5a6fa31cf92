"""tunekit's MLflow logger: one MLflow run per trial.

:class:`MLflowLoggerCallback` has the arguments and the behaviour of Ray Tune
2.x's ``MLflowLoggerCallback``: an MLflow run per trial, named after the trial
and tagged with it, the flattened config as params, every numeric result field
as a metric at step ``timesteps_total`` (when non-zero) or
``training_iteration``, optionally the whole trial directory as artifacts, and
the run ended FINISHED or FAILED. In addition it logs each trial's best
checkpoint as the artifact directory ``best_checkpoint``.

It talks to MLflow only through an ``MlflowClient`` with explicit run ids (never
MLflow's global active run), so concurrent trials, and code in the driver that
uses ``mlflow.start_run`` itself, do not interfere. Metrics are buffered per
trial and sent with ``log_batch`` when the run loop flushes its loggers (before
each experiment-state save, about once a second while results arrive), every
``flush_interval_s`` seconds, and when the trial ends: one request per trial and
flush instead of one per metric and result.
"""

from __future__ import annotations

import logging
import numbers
import os
import time
from collections.abc import Mapping
from typing import Any

from tunekit_core.callback import LoggerCallback
from tunekit_core.space import flatten_dict

__all__ = ["BEST_CHECKPOINT_ARTIFACT", "MLflowLoggerCallback"]

logger = logging.getLogger(__name__)

#: The artifact directory holding the files of a trial's best checkpoint.
BEST_CHECKPOINT_ARTIFACT = "best_checkpoint"

# MLflow's limits per log_batch request (mlflow.utils.validation).
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100


def _load_mlflow() -> dict[str, Any]:
    """The parts of MLflow the callback uses (importing MLflow takes seconds)."""
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as error:
        raise ImportError(
            "MLflowLoggerCallback needs MLflow, which is not installed. Install it with "
            "`pip install mlflow-skinny` (or `pip install tunekit[mlflow]`)."
        ) from error
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:  # pragma: no cover - older MLflow
        MAX_PARAM_VAL_LENGTH = 500
    return {
        "MlflowClient": MlflowClient,
        "MlflowException": MlflowException,
        "Metric": Metric,
        "Param": Param,
        "RunTag": RunTag,
        "max_param_length": MAX_PARAM_VAL_LENGTH,
    }


class _TrialRun:
    """The MLflow run of one trial and what is still to be sent to it."""

    __slots__ = ("run_id", "pending", "params")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.pending: list[tuple[str, float, int, int]] = []  # key, value, timestamp ms, step
        self.params: dict[str, str] = {}  # params already logged


class MLflowLoggerCallback(LoggerCallback):
    """Logs each trial to MLflow as a run (Ray Tune's ``MLflowLoggerCallback``).

    Args:
        tracking_uri: where runs are recorded: a tracking server
            (``http://host:5000``), a database (``sqlite:///mlflow.db``) or a
            local directory (``file:/path/mlruns``). None: MLflow's default
            (``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in recent
            MLflow versions).
        registry_uri: the model registry URI (None: MLflow's default).
        experiment_name: the MLflow experiment; created if it does not exist.
            None: ``$MLFLOW_EXPERIMENT_ID`` (if that experiment exists), else
            ``$MLFLOW_EXPERIMENT_NAME``, else the tunekit experiment's name.
        tags: tags set on every run, in addition to ``trial_name`` and ``trial_id``.
        tracking_token: a token for the tracking server (sets
            ``MLFLOW_TRACKING_TOKEN`` in this process, as Ray Tune does).
        save_artifact: also log the whole trial directory as artifacts when
            the trial ends (result files, checkpoints, ...).
        log_params_on_trial_end: log the config when the trial ends rather
            than when it starts.
        log_best_checkpoint: log the files of the trial's best checkpoint (by
            ``checkpoint_score_attr``, else the latest) as the artifact directory
            ``best_checkpoint`` when the trial ends (not in Ray Tune).

    Each run is named after the trial (``str(trial)``) and tagged ``trial_name``
    and ``trial_id``; its params are the config flattened with "/" (values as
    strings, truncated to MLflow's limit), logged once: a value changed later
    (PBT) is not logged again, MLflow params being immutable. Every numeric
    field of every result except ``config`` (nested dicts flattened with "/")
    is a metric. A trial that restarts keeps its run; a trial resumed by a
    new driver process finds its run again by the ``trial_id`` tag.
    """

    #: Wall-clock seconds after which buffered metrics are sent while results arrive.
    flush_interval_s: float = 5.0

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        registry_uri: str | None = None,
        experiment_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        tracking_token: str | None = None,
        save_artifact: bool = False,
        log_params_on_trial_end: bool = False,
        log_best_checkpoint: bool = True,
    ) -> None:
        self._mlflow = _load_mlflow()
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri
        self.experiment_name = experiment_name
        self.tags = dict(tags or {})
        self.tracking_token = tracking_token
        self.should_save_artifact = save_artifact
        self.log_params_on_trial_end = log_params_on_trial_end
        self.log_best_checkpoint = log_best_checkpoint
        self._client: Any = None
        self._set_up = False
        self._experiment_id: str | None = None  # fixed by the arguments or the environment
        self._experiment_ids: dict[str, str] = {}  # tunekit experiment name -> MLflow id
        self._runs: dict[str, _TrialRun] = {}
        self._rejected: set[str] = set()  # keys MLflow refused
        self._last_flush = time.monotonic()

    # -- MLflow ------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` this callback logs through (created on first use)."""
        if self._client is None:
            if self.tracking_token:
                os.environ["MLFLOW_TRACKING_TOKEN"] = self.tracking_token
            self._client = self._mlflow["MlflowClient"](
                tracking_uri=self.tracking_uri, registry_uri=self.registry_uri
            )
        return self._client

    def setup(self, **info: Any) -> None:
        """Connect to the tracking store and pick the experiment before trials start."""
        client = self.client
        self._set_up = True
        if self._experiment_id is not None:
            return
        experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
        if experiment_id and self.experiment_name is None:
            try:
                experiment = client.get_experiment(experiment_id)
            except self._mlflow["MlflowException"]:
                experiment = None
            if experiment is not None and experiment.lifecycle_stage == "active":
                self._experiment_id = experiment.experiment_id
                return
        name = self.experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME")
        if name:
            self._experiment_id = self._get_or_create_experiment(name)

    def _get_or_create_experiment(self, name: str) -> str:
        client = self.client
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(name)
            except self._mlflow["MlflowException"]:
                experiment = client.get_experiment_by_name(name)  # created meanwhile?
                if experiment is None:
                    raise
        if experiment.lifecycle_stage != "active":
            raise ValueError(
                f"The MLflow experiment {name!r} (id {experiment.experiment_id}) is deleted. "
                "Restore it (`mlflow experiments restore`), delete it for good, or pass "
                "another experiment_name to MLflowLoggerCallback."
            )
        return experiment.experiment_id

    def _experiment_for(self, trial: Any) -> str:
        if not self._set_up:
            self.setup()
        if self._experiment_id is not None:
            return self._experiment_id
        name = getattr(trial, "experiment_name", None) or "tunekit"
        experiment_id = self._experiment_ids.get(name)
        if experiment_id is None:
            experiment_id = self._experiment_ids[name] = self._get_or_create_experiment(name)
        return experiment_id

    def _find_run(self, experiment_id: str, trial: Any) -> str | None:
        """The run an earlier driver process created for ``trial``, if any."""
        trial_id = str(trial.trial_id).replace("'", "\\'")
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.trial_id = '{trial_id}'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return runs[0].info.run_id if runs else None

    def _run_for(self, trial: Any) -> _TrialRun:
        run = self._runs.get(trial.trial_id)
        if run is not None:
            return run
        experiment_id = self._experiment_for(trial)
        run_id = None
        if getattr(trial, "last_result", None):
            # It reported before this process saw it: a resumed experiment.
            run_id = self._find_run(experiment_id, trial)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            run = _TrialRun(run_id)
            run.params = dict(self.client.get_run(run_id).data.params)
        else:
            tags = {str(k): str(v) for k, v in self.tags.items()}
            tags["trial_name"] = str(trial)
            tags["trial_id"] = str(trial.trial_id)
            created = self.client.create_run(experiment_id, tags=tags, run_name=str(trial))
            run = _TrialRun(created.info.run_id)
        self._runs[trial.trial_id] = run
        return run

    # -- LoggerCallback ----------------------------------------------------------------------

    def log_trial_start(self, trial: Any) -> None:
        run = self._run_for(trial)
        if not self.log_params_on_trial_end:
            self._log_params(run, trial.config)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        run = self._runs.get(trial.trial_id)
        if run is None:
            run = self._run_for(trial)
        step = int(result.get("timesteps_total") or result.get("training_iteration") or 0)
        _collect_metrics(result, "", run.pending, int(time.time() * 1000), step, top=True)
        if (
            len(run.pending) >= _MAX_METRICS_PER_BATCH
            or time.monotonic() - self._last_flush >= self.flush_interval_s
        ):
            self.flush()

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        run = self._runs.get(trial.trial_id)
        if run is None:
            run = self._run_for(trial)  # e.g. a trial that failed before it started
        status = "FAILED" if failed else "FINISHED"
        try:
            self._send_metrics(run)
            if self.log_params_on_trial_end:
                self._log_params(run, trial.config)
            if self.log_best_checkpoint:
                self._log_best_checkpoint(run, trial)
            if self.should_save_artifact and trial.local_path and os.path.isdir(trial.local_path):
                self.client.log_artifacts(run.run_id, trial.local_path)
        finally:
            self._runs.pop(trial.trial_id, None)
            self.client.set_terminated(run.run_id, status=status)

    def flush(self) -> None:
        """Send the buffered metrics of every trial."""
        self._last_flush = time.monotonic()
        for run in list(self._runs.values()):
            self._send_metrics(run)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # Runs still open belong to trials that never ended (an interrupted run):
        # KILLED, and found again by their trial_id tag if the experiment is resumed.
        for trial_id in list(self._runs):
            run = self._runs.pop(trial_id)
            try:
                self._send_metrics(run)
            finally:
                self.client.set_terminated(run.run_id, status="KILLED")

    def __getstate__(self) -> dict[str, Any]:
        # The client and the MLflow classes are not picklable; open runs stay with this process.
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(
            state.get("tracking_uri"),
            registry_uri=state.get("registry_uri"),
            experiment_name=state.get("experiment_name"),
            tags=state.get("tags"),
            tracking_token=state.get("tracking_token"),
            save_artifact=state.get("should_save_artifact", False),
            log_params_on_trial_end=state.get("log_params_on_trial_end", False),
            log_best_checkpoint=state.get("log_best_checkpoint", True),
        )
        self.__dict__.update(state)

    # -- sending -----------------------------------------------------------------------------

    def _log_params(self, run: _TrialRun, config: Mapping[str, Any]) -> None:
        limit = self._mlflow["max_param_length"]
        Param = self._mlflow["Param"]
        new = []
        for key, value in flatten_dict(config or {}).items():
            key = str(key)
            if key in run.params or key in self._rejected:
                continue
            text = str(value)
            if len(text) > limit:
                text = text[: limit - 3] + "..."
            run.params[key] = text
            new.append(Param(key, text))
        for start in range(0, len(new), _MAX_PARAMS_PER_BATCH):
            self._log_batch(run.run_id, params=new[start : start + _MAX_PARAMS_PER_BATCH])

    def _send_metrics(self, run: _TrialRun) -> None:
        pending = run.pending
        if not pending:
            return
        run.pending = []
        Metric = self._mlflow["Metric"]
        rejected = self._rejected
        metrics = [Metric(k, v, t, s) for k, v, t, s in pending if k not in rejected]
        for start in range(0, len(metrics), _MAX_METRICS_PER_BATCH):
            self._log_batch(run.run_id, metrics=metrics[start : start + _MAX_METRICS_PER_BATCH])

    def _log_batch(
        self, run_id: str, metrics: list = (), params: list = (), tags: list = ()
    ) -> None:
        """``log_batch``; when MLflow refuses it, the entries one by one, skipping bad keys."""
        if not metrics and not params and not tags:
            return
        error_type = self._mlflow["MlflowException"]
        client = self.client
        try:
            client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
            return
        except error_type as error:
            failure = error
        entries = [("params", p) for p in params]
        entries += [("metrics", m) for m in metrics]
        entries += [("tags", t) for t in tags]
        for group, entity in entries:
            if len(entries) > 1:
                try:
                    client.log_batch(run_id, **{group: [entity]})
                    continue
                except error_type as error:
                    failure = error
            if entity.key not in self._rejected:
                self._rejected.add(entity.key)
                logger.warning(
                    "MLflowLoggerCallback: MLflow refused the %s %r (%s); it is not logged.",
                    group[:-1],
                    entity.key,
                    failure,
                )

    def _log_best_checkpoint(self, run: _TrialRun, trial: Any) -> None:
        manager = getattr(trial, "checkpoint_manager", None)
        best = manager.best() if manager is not None else None
        if best is None or not os.path.isdir(best["path"]):
            return
        self.client.log_artifacts(run.run_id, best["path"], artifact_path=BEST_CHECKPOINT_ARTIFACT)
        RunTag = self._mlflow["RunTag"]
        tags = [RunTag("best_checkpoint_iteration", str(best.get("iteration")))]
        if best.get("score") is not None:
            tags.append(RunTag("best_checkpoint_score", str(best["score"])))
        self._log_batch(run.run_id, tags=tags)


def _collect_metrics(
    data: Mapping, prefix: str, out: list, timestamp: int, step: int, top: bool = False
) -> None:
    """Append ``(key, value, timestamp, step)`` for every numeric field of ``data``."""
    for key, value in data.items():
        cls = type(value)
        if cls is float or cls is int or cls is bool:
            out.append((f"{prefix}{key}", float(value), timestamp, step))
        elif cls is dict or isinstance(value, Mapping):
            if top and key == "config":
                continue
            _collect_metrics(value, f"{prefix}{key}/", out, timestamp, step)
        elif cls is not str and isinstance(value, numbers.Real):
            out.append((f"{prefix}{key}", float(value), timestamp, step))
