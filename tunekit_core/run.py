"""``tunekit.run``: Ray Tune's ``tune.run`` on tunekit's engine."""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .env import env_flag
from .errors import TuneError
from .experiment import Experiment, budget_seconds
from .resources import PlacementGroupFactory
from .trial import TERMINATED

logger = logging.getLogger("tunekit")

_BLOB_IN_FILE_BYTES = 1 << 20


class Verbosity(enum.IntEnum):
    """How much ``run`` prints (Ray Tune's levels)."""

    V0_MINIMAL = 0
    V1_EXPERIMENT = 1
    V2_TRIAL_NORM = 2
    V3_TRIAL_DETAILS = 3


def run(
    run_or_experiment: Any,
    name: str | None = None,
    metric: str | None = None,
    mode: str | None = None,
    stop: Mapping | Callable | Any | None = None,
    time_budget_s: Any = None,
    config: dict | None = None,
    resources_per_trial: Mapping | PlacementGroupFactory | None = None,
    num_samples: int = 1,
    local_dir: str | None = None,
    search_alg: Any = None,
    scheduler: Any = None,
    keep_checkpoints_num: int | None = None,
    checkpoint_score_attr: str | None = None,
    checkpoint_freq: int = 0,
    checkpoint_at_end: bool = False,
    verbose: int | Verbosity = Verbosity.V3_TRIAL_DETAILS,
    progress_reporter: Any = None,
    log_to_file: bool | str | Sequence[str] = False,
    trial_name_creator: Callable | None = None,
    trial_dirname_creator: Callable | None = None,
    sync_config: Any = None,
    export_formats: Sequence | None = None,
    max_failures: int = 0,
    fail_fast: bool | str = False,
    restore: str | None = None,
    server_port: int | None = None,
    resume: bool | str = False,
    reuse_actors: bool = False,
    trial_executor: Any = None,
    raise_on_failed_trial: bool = True,
    callbacks: Sequence | None = None,
    max_concurrent_trials: int | None = None,
    queue_trials: bool | None = None,
    loggers: Sequence | None = None,
    _remote: bool | None = None,
    *,
    storage_path: str | None = None,
    _resume_trials: tuple[str, str | None] | None = None,
):
    """Run a hyperparameter search and return an :class:`ExperimentAnalysis`.

    Every parameter means what it means in Ray Tune's ``tune.run``; see
    ``docs/run.md`` for the reference, including the parameters that raise
    ``NotImplementedError`` in this version. ``storage_path`` is Ray Tune 2.x's
    name for ``local_dir``. ``_resume_trials`` (internal, used by ``Tuner.restore``):
    ``(unfinished, errored)`` with unfinished ``"resume"``/``"skip"`` and errored
    ``None``/``"resume"``/``"restart"``, the trials a resume continues.
    """
    # First: the arguments as given, for _remote=True (nothing may be defined above).
    remote_kwargs = dict(locals())
    if _remote is None:
        _remote = _ray_client_connected()  # Ray Tune: on by default in Ray client mode
    if _remote:
        return _run_remote(remote_kwargs)
    if queue_trials is not None:
        raise DeprecationWarning(
            "`queue_trials` is deprecated and has no effect: tunekit always queues trials "
            "until resources are free. Remove it from your call to tunekit.run()."
        )
    if mode is not None and mode not in ("min", "max"):
        raise ValueError(
            f"`mode` must be 'min' or 'max', got {mode!r}. Pass mode='min' to minimise the "
            "metric or mode='max' to maximise it."
        )
    if metric is not None and not isinstance(metric, str):
        raise TypeError(f"`metric` must be a string naming a reported result key, got {metric!r}.")
    resume_mode = _resume_mode(resume)
    if server_port is not None:
        if isinstance(server_port, bool) or not isinstance(server_port, int) or not (
            0 <= server_port <= 65535
        ):
            raise ValueError(
                f"server_port must be a port number (0 to 65535; 0 picks a free port), got "
                f"{server_port!r}."
            )
        from .server import settings_from_env

        server_host, server_token = settings_from_env()  # a bad host/token fails here
    if fail_fast not in (True, False, "raise", "RAISE"):
        raise ValueError(f"fail_fast must be True, False or 'raise'; got {fail_fast!r}.")
    if fail_fast == "RAISE":
        fail_fast = "raise"
    if fail_fast and max_failures != 0:
        raise ValueError("max_failures must be 0 if fail_fast is set: a failure ends the run.")
    if isinstance(verbose, bool) or int(verbose) not in (0, 1, 2, 3):
        raise ValueError(f"verbose must be 0, 1, 2 or 3; got {verbose!r}.")
    verbose = int(verbose)
    if local_dir is not None and storage_path is not None and os.path.abspath(
        os.path.expanduser(local_dir)
    ) != os.path.abspath(os.path.expanduser(storage_path)):
        raise ValueError(
            "Both local_dir and storage_path are set, to different directories; pass one of them."
        )
    if max_concurrent_trials is not None and (
        not isinstance(max_concurrent_trials, int) or max_concurrent_trials < 0
    ):
        raise ValueError(
            f"max_concurrent_trials must be a non-negative int (0 or None: no limit), got "
            f"{max_concurrent_trials!r}."
        )
    budget_seconds(time_budget_s)  # validate early

    # -- experiments ---------------------------------------------------------------------
    runs = run_or_experiment if isinstance(run_or_experiment, list) else [run_or_experiment]
    if not runs:
        raise ValueError("run_or_experiment is an empty list; pass at least one trainable.")
    experiments: list[Experiment] = []
    for item in runs:
        if isinstance(item, Experiment):
            experiments.append(item)
        else:
            experiments.append(
                Experiment(
                    name=name,
                    run=item,
                    stop=stop,
                    time_budget_s=time_budget_s,
                    config=config,
                    resources_per_trial=resources_per_trial,
                    num_samples=num_samples,
                    local_dir=local_dir,
                    storage_path=storage_path,
                    trial_name_creator=trial_name_creator,
                    trial_dirname_creator=trial_dirname_creator,
                    log_to_file=log_to_file,
                    checkpoint_freq=checkpoint_freq,
                    checkpoint_at_end=checkpoint_at_end,
                    keep_checkpoints_num=keep_checkpoints_num,
                    checkpoint_score_attr=checkpoint_score_attr,
                    export_formats=export_formats,
                    max_failures=max_failures,
                    restore=restore,
                    sync_config=sync_config,
                )
            )
    for experiment in experiments:
        _prepare_directory(experiment.path)
    experiment_dir = experiments[0].path

    # -- plugins -------------------------------------------------------------------------
    from . import registry, space
    from .searcher import ConcurrencyLimiter, Searcher
    from .stopper import make_stopper

    if isinstance(scheduler, str):
        scheduler = registry.create("scheduler", scheduler)
    if scheduler is None:
        scheduler = registry.create("scheduler", "fifo")
    if not scheduler.set_search_properties(metric, mode):
        raise ValueError(
            "You passed `metric`/`mode` to tunekit.run(), but the scheduler already has its own "
            "metric and mode. Remove them from the scheduler or from the run() call."
        )

    if isinstance(search_alg, str):
        search_alg = registry.create("searcher", search_alg)
    if search_alg is not None and len(experiments) > 1:
        raise ValueError(
            "A search_alg can drive one experiment only; run the experiments separately or "
            "leave search_alg unset to use the variant generator for each."
        )
    if search_alg is not None and not isinstance(search_alg, Searcher):
        raise TypeError(
            f"search_alg must be a tunekit.search.Searcher or a searcher name, got "
            f"{type(search_alg).__name__}."
        )
    if isinstance(search_alg, ConcurrencyLimiter) and max_concurrent_trials:
        if search_alg.max_concurrent != max_concurrent_trials:
            raise ValueError(
                f"max_concurrent_trials={max_concurrent_trials} but search_alg is already a "
                f"ConcurrencyLimiter with max_concurrent={search_alg.max_concurrent}. Set "
                "max_concurrent_trials=None, or unwrap the searcher."
            )
        max_concurrent_trials = None  # already limited

    if isinstance(trial_executor, str):
        trial_executor = registry.create("executor", trial_executor, reuse_actors=reuse_actors)
    if trial_executor is None:
        from .local_executor import LocalExecutor

        trial_executor = LocalExecutor(reuse_actors=reuse_actors)

    callbacks = _default_callbacks(list(callbacks or []), loggers, registry)
    if experiments[0].sync_config is not None:
        from .sync import make_syncer_callback

        syncer = make_syncer_callback(experiments[0].sync_config, experiment_dir, experiments[0].name)
        if syncer is not None:
            callbacks.append(syncer)
    from .hooks import make_plugin_manager

    plugin_manager = make_plugin_manager(callbacks)

    # -- searchers, one per experiment -----------------------------------------------------
    from .runner import RunLoop, TrialSource

    blob_dir: str | None = None
    sources: list[TrialSource] = []
    for experiment in experiments:
        searcher = search_alg
        if searcher is None:
            searcher = registry.create("searcher", "variant_generator")
        if max_concurrent_trials:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent_trials)
        accepted = searcher.set_search_properties(
            metric,
            mode,
            experiment.config,
            num_samples=experiment.num_samples,
            experiment_name=experiment.name,
        )
        if not accepted and experiment.config and space.has_unresolved_values(experiment.config):
            raise ValueError(
                "You passed a `config` with search-space definitions to tunekit.run(), but the "
                "search algorithm already has its own search space. Put the parameter "
                "definitions in one place: the searcher's space or `config`."
            )
        total = getattr(searcher, "total_samples", None)
        if total is None and experiment.num_samples != -1 and search_alg is not None:
            total = experiment.num_samples
        stopper_obj, stop_dict = make_stopper(experiment.stop)
        trainable_ref, blob_dir = _serialise_trainable(experiment, blob_dir)
        source = TrialSource(
            base_config=experiment.config if not accepted and experiment.config else None,
            experiment=experiment,
            searcher=searcher,
            trainable=trainable_ref,
            max_trials=total,
            stop_dict=stop_dict or None,
            searched_paths=space.searched_paths(experiment.config),
        )
        from .runner import _searcher_hook

        source.searcher_on_result = _searcher_hook(searcher, "on_trial_result")
        sources.append(source)

    # A stop dict is checked per trial (each experiment has its own); other stop
    # values (a callable, a Stopper) apply to the whole run, as in Ray Tune.
    stopper, first_dict = make_stopper(experiments[0].stop)
    if first_dict is not None:
        stopper = None
    time_budget = experiments[0].time_budget_s

    # -- progress reporting ----------------------------------------------------------------
    reporter = None
    if verbose >= 1:
        from .progress import detect_reporter

        reporter = progress_reporter or detect_reporter()
        if hasattr(reporter, "set_verbosity"):
            reporter.set_verbosity(verbose)
        if not reporter.set_search_properties(metric, mode):
            raise ValueError(
                "You passed `metric`/`mode` to tunekit.run(), but the progress reporter already "
                "has its own. Remove them from the reporter or from the run() call."
            )

    loop = RunLoop(
        sources=sources,
        scheduler=scheduler,
        executor=trial_executor,
        plugin_manager=plugin_manager,
        stopper=stopper,
        time_budget_s=time_budget,
        fail_fast=fail_fast,
        metric=metric,
        reporter=reporter,
        verbose=verbose,
        reuse_actors=reuse_actors,
        experiment_dir=experiment_dir,
    )
    if reporter is not None:
        reporter.set_total_samples(loop.total_samples)
        if hasattr(reporter, "set_start_time"):
            reporter.set_start_time(loop.start_time)

    from .state_store import StateStore

    resume_state = None
    if resume_mode is not None:
        resume_state = _load_resume_state(resume_mode, experiment_dir, experiments[0])
    if resume_state is not None:
        loop.store = StateStore(experiment_dir, "", path=resume_state["path"])
        # the snapshot keeps the name of the run it continues
        loop._state_timestamp = os.path.basename(resume_state["path"])[len("experiment_state-"):-len(".db")]
        errored = "restart" if resume_mode == "ERRORED_ONLY" else None
        if _resume_trials is not None:
            unfinished, errored = _resume_trials
            if unfinished == "skip":
                _mark_unfinished_terminated(resume_state)
        loop.restore_state(resume_state, errored=errored)
        logger.info("Resumed the experiment in %s (%d trials).", experiment_dir, len(loop.get_trials()))
    else:
        # A fresh run never shares a database with an earlier run (even in the same second).
        base = loop._state_timestamp
        suffix = 0
        while any(
            os.path.exists(os.path.join(experiment_dir, f"experiment_state-{loop._state_timestamp}{ext}"))
            for ext in (".db", ".json")
        ):
            suffix += 1
            loop._state_timestamp = f"{base}_{suffix}"
        loop.store = StateStore(experiment_dir, loop._state_timestamp)

    restore_handler = _install_sigint_handler(loop)
    server = None
    try:
        if server_port is not None:
            server = _start_server(loop, server_port, server_host, server_token, metric, mode, verbose)
        plugin_manager.hook.tunekit_on_experiment_start(
            experiment=experiments[0],
            experiments=experiments,
            total_num_samples=loop.total_samples,
        )
        # A searcher in a process of its own starts on the first suggestion now, while the
        # executor starts its workers.
        loop.start_searcher_processes()
        trial_executor.setup(experiment_dir)
        _warn_unused_gpus(trial_executor, experiments)
        with _driver_gc():
            loop.run()
            loop.finish()
    finally:
        loop.close_searcher_processes(sync_back=False)  # after a failure: just end them
        if server is not None:
            from .server import finish_run_server

            finish_run_server(server)
        if reporter is not None and hasattr(reporter, "close"):
            reporter.close()  # a live table ends even when the run raised
        trial_executor.shutdown()
        restore_handler()
        if blob_dir is not None:
            shutil.rmtree(blob_dir, ignore_errors=True)

    trials = loop.get_trials()
    if loop.interrupted:
        logger.warning(
            "The run was interrupted (SIGINT). Results so far are saved in %s; "
            "running trials were stopped. To continue this experiment, call run() again with "
            "the same name and local_dir and resume=True.",
            experiment_dir,
        )
    incomplete = [t for t in trials if t.status != TERMINATED]
    if incomplete:
        if raise_on_failed_trial and not loop.interrupted:
            raise TuneError("Trials did not complete", incomplete)
        logger.error("Trials did not complete: %s", ", ".join(str(t) for t in incomplete))

    from .analysis import ExperimentAnalysis

    return ExperimentAnalysis(experiment_dir, trials=trials, default_metric=metric, default_mode=mode)


@contextlib.contextmanager
def _driver_gc():
    """The run loop allocates many short-lived objects and keeps every trial: Python's cycle
    collector, by default, rescans what the process already holds (modules, the user's data,
    finished trials) every few hundred allocations. For the run, what exists now is set
    aside (``gc.freeze``) and young objects are collected less often; both are undone after.
    ``TUNEKIT_DISABLE_GC_TUNING=1`` leaves the collector alone."""
    if env_flag("TUNEKIT_DISABLE_GC_TUNING"):
        yield
        return
    import gc

    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], _GC_YOUNG_THRESHOLD), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


_GC_YOUNG_THRESHOLD = 10_000


def _ray_client_connected() -> bool:
    """True when this process is a Ray client (``ray.init("ray://...")``); Ray is never
    imported here."""
    ray = sys.modules.get("ray")
    if ray is None:
        return False
    try:
        from ray.util.client import ray as client

        return bool(client.is_connected())
    except Exception:  # noqa: BLE001 - an unusual Ray: not a client
        return False


def _run_remote(kwargs: dict[str, Any]):
    """``run(..., _remote=True)``: the driver runs as a task on the Ray cluster."""
    from . import registry

    executor = kwargs.get("trial_executor")
    if executor is not None and executor != "ray":
        raise ValueError(
            f"_remote=True runs the tuning driver on the Ray cluster with the Ray executor, so it "
            f"cannot use a custom trial_executor (got {executor!r}). Remove trial_executor, or "
            "pass _remote=False to run the driver in this process."
        )
    run_remote = registry.import_plugin_attribute(
        "tunekit_ray", "run_remote", "tunekit-ray", "tunekit_ray"
    )
    kwargs = {k: v for k, v in kwargs.items() if k != "_remote"}
    return run_remote(kwargs.pop("run_or_experiment"), **kwargs)


_RESUME_MODES = {"LOCAL", "AUTO", "PROMPT", "ERRORED_ONLY", "REMOTE"}


def _resume_mode(resume: Any) -> str | None:
    if resume is None or resume is False:
        return None
    if resume is True:
        return "LOCAL"
    if isinstance(resume, str) and resume.upper() in _RESUME_MODES:
        return resume.upper()
    raise ValueError(
        f"resume must be True/False or one of {', '.join(sorted(_RESUME_MODES))}; got {resume!r}."
    )


def _load_resume_state(mode: str, experiment_dir: str, experiment: Experiment):
    from .state_store import load_database

    if mode == "REMOTE":
        from .sync import download_experiment

        if experiment.sync_config is None or not experiment.sync_config.upload_dir:
            raise ValueError(
                "resume='REMOTE' downloads the experiment from sync_config.upload_dir; pass "
                "sync_config=tunekit.SyncConfig(upload_dir=...)."
            )
        download_experiment(experiment.sync_config, experiment_dir, experiment.name)
    state = load_database(experiment_dir)
    if state is None:
        if mode == "AUTO":
            return None
        raise ValueError(
            f"resume={mode!r} but there is no experiment state to resume in {experiment_dir}. "
            "Check name and local_dir (storage_path), or pass resume='AUTO' to start fresh when "
            "there is nothing to resume."
        )
    if mode == "PROMPT":
        answer = input(f"Resume the experiment in {experiment_dir}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            logger.info("Starting a new experiment in %s.", experiment_dir)
            return None
    return state


def _mark_unfinished_terminated(state: dict) -> None:
    """Saved trials that had not finished are resumed as TERMINATED (not run again)."""
    import time

    for record in state["trials"]:
        if record.get("status") in ("PENDING", "RUNNING", "PAUSED"):
            record["status"] = TERMINATED
            record["status_history"] = [*(record.get("status_history") or []), (TERMINATED, time.time())]


def _prepare_directory(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".tunekit-write-test-{uuid.uuid4().hex[:8]}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise ValueError(
            f"Cannot write to the experiment directory {path}: {exc.strerror or exc}. Choose a "
            "writable local_dir (or storage_path), or set TUNEKIT_RESULTS_DIR."
        ) from exc


def _serialise_trainable(experiment: Experiment, blob_dir: str | None):
    import cloudpickle

    from .executor import TrainableRef

    try:
        blob = cloudpickle.dumps(experiment.trainable)
    except Exception as exc:
        raise TypeError(
            f"The trainable {experiment.trainable_name} cannot be serialised for the worker "
            f"processes: {exc}. Pass large or unpicklable objects with tunekit.with_parameters "
            "or create them inside the trainable."
        ) from exc
    ref = TrainableRef(
        key=uuid.uuid4().hex[:12],
        kind="class" if experiment.is_class else "function",
        name=experiment.trainable_name,
    )
    if len(blob) > _BLOB_IN_FILE_BYTES:
        if blob_dir is None:
            blob_dir = tempfile.mkdtemp(prefix="tunekit-trainables-")
        ref.path = os.path.join(blob_dir, f"{ref.key}.pkl")
        with open(ref.path, "wb") as f:
            f.write(blob)
    else:
        ref.blob = blob
    return ref, blob_dir


def _default_callbacks(callbacks: list, loggers: Sequence | None, registry) -> list:
    callbacks = [_resolve_callback(entry, registry) for entry in callbacks]
    if loggers:
        warnings.warn(
            "The `loggers` argument is deprecated: pass LoggerCallback instances in `callbacks` "
            "instead.",
            DeprecationWarning,
            stacklevel=3,
        )
        for entry in loggers:
            if isinstance(entry, str):
                callbacks.append(registry.create("logger", entry))
            elif isinstance(entry, type):
                callbacks.append(entry())
            else:
                callbacks.append(entry)
    if env_flag("TUNEKIT_DISABLE_AUTO_CALLBACK_LOGGERS", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"):
        return callbacks
    for name in ("json", "csv"):
        cls = registry.load("logger", name)
        if not any(isinstance(cb, cls) for cb in callbacks):
            callbacks.append(cls())
    return callbacks


def _resolve_callback(entry: Any, registry) -> Any:
    """An entry of ``run(callbacks=[...])`` as a callback object.

    A string is a plugin name: the ``tunekit.callbacks`` group first, then
    ``tunekit.loggers``; the plugin is created without arguments. A class is
    instantiated without arguments. Anything else is used as it is.
    """
    if isinstance(entry, str):
        callback_names = registry.names("callback")
        if entry in callback_names:
            return registry.create("callback", entry)
        logger_names = registry.names("logger")
        if entry in logger_names:
            return registry.create("logger", entry)
        raise registry.unknown_plugin_error(
            "callback", entry, sorted(set(callback_names) | set(logger_names)), also=("logger",)
        )
    if isinstance(entry, type):
        return entry()
    return entry


def _start_server(loop, port: int, host: str, token: str | None, metric, mode, verbose: int):
    """The control server and dashboard of this run (``server_port``)."""
    from .server import start_run_server

    server = start_run_server(loop, port, host=host, token=token, metric=metric, mode=mode)
    note = " (requests need the token in TUNEKIT_SERVER_TOKEN)" if token else ""
    message = (
        f"tunekit control server and dashboard: {server.url}{note}; "
        f"tunekit.TuneClient({server.address!r}) talks to it."
    )
    if verbose >= 1:
        print(message, flush=True)
    else:
        logger.info(message)
    return server


def _warn_unused_gpus(executor, experiments: list[Experiment]) -> None:
    has_gpus = getattr(executor, "has_gpus", None)
    if has_gpus is None or not has_gpus():
        return
    for experiment in experiments:
        pgf = experiment.resources_per_trial
        if pgf is not None and pgf.required_resources.get("GPU"):
            return
        if experiment.is_class and experiment.trainable.default_resource_request(experiment.config):
            return
    logger.warning(
        "This machine has GPUs, but no trial asks for one. To give each trial a GPU, pass "
        "resources_per_trial={'gpu': 1} (or a fraction such as 0.5)."
    )


def _install_sigint_handler(loop) -> Callable[[], None]:
    if env_flag("TUNEKIT_DISABLE_SIGINT_HANDLER", "TUNE_DISABLE_SIGINT_HANDLER"):
        return lambda: None
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    original = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        # Restore first: a second Ctrl+C raises KeyboardInterrupt at once.
        signal.signal(signal.SIGINT, original)
        # os.write, not logging: a signal handler must not take the logging lock.
        os.write(
            2,
            b"\ntunekit: SIGINT received, stopping the running trials and saving results. "
            b"Press Ctrl+C again to exit at once.\n",
        )
        loop.interrupt()

    signal.signal(signal.SIGINT, handler)

    def restore() -> None:
        if signal.getsignal(signal.SIGINT) is handler:
            signal.signal(signal.SIGINT, original)

    return restore
