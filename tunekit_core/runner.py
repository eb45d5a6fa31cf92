"""The run loop: one thread, driven by executor events.

It asks searchers for configs, starts trials when the scheduler picks them and the
executor has room, routes each result through stop criteria, scheduler, searcher
and hooks, and ends the experiment when nothing is left to run.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import pickle
import re
import shutil
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import space
from .checkpoint import CHECKPOINT_KEY, Checkpoint, TrialCheckpoints, remove_partial_checkpoints
from .env import env_flag
from .errors import TuneError
from .executor import Executor, TrainableRef, TrialLaunch
from .experiment import Experiment
from .result_files import truncate_results
from .searcher_process import SearcherProcess, replay, wants_own_process
from .trainable import date_str
from .trial import ERROR, PAUSED, PENDING, RUNNING, TERMINATED, Trial

logger = logging.getLogger("tunekit")

CONTINUE = "CONTINUE"
PAUSE = "PAUSE"
STOP = "STOP"

_intern = sys.intern
_MAX_DIRNAME = 130
_IDLE_WAKEUP_S = 5.0
_UNSAFE = re.compile(r"[^\w.=,+\-]")


@dataclass
class TrialSource:
    """One experiment and the searcher producing its configs."""

    experiment: Experiment
    searcher: Any
    trainable: TrainableRef
    max_trials: int | None  # None: until the searcher says FINISHED
    stop_dict: dict | None = None
    searched_paths: list = field(default_factory=list)
    searcher_on_result: Any = None
    base_config: dict | None = None  # constants merged into a self-contained searcher's configs
    created: int = 0
    # Trials added through the control API belong to a source of their own (its searcher
    # is a no-op), beside the experiment's: this is that experiment's index.
    added_to: int | None = None


def _searcher_hook(searcher: Any, name: str) -> Any:
    """The bound method, or None when it is the base class's no-op (skipped per result)."""
    from .searcher import Searcher

    method = getattr(type(searcher), name, None)
    if method is None or method is getattr(Searcher, name, None):
        return None
    return getattr(searcher, name)


class RunLoop:
    """Drives one tuning run to its end. Schedulers receive it as ``runner``."""

    def __init__(
        self,
        *,
        sources: list[TrialSource],
        scheduler: Any,
        executor: Executor,
        plugin_manager: Any,
        stopper: Any,
        time_budget_s: float | None,
        fail_fast: bool | str,
        metric: str | None,
        reporter: Any,
        verbose: int,
        reuse_actors: bool,
        experiment_dir: str,
    ):
        self._sources = sources
        self._source_index = 0
        self._scheduler = scheduler
        self.trial_executor = executor
        self._hook = plugin_manager.hook
        self._stopper = stopper
        self._time_budget_s = time_budget_s
        self._fail_fast = fail_fast
        self._metric = metric
        self._reporter = reporter
        # the trials the run will create, as the progress reporter is told (None: unknown)
        self.total_samples = sum(s.max_trials or 0 for s in sources) or None
        self._verbose = verbose
        self._reuse_actors = reuse_actors
        self.experiment_dir = experiment_dir

        self._trials: list[Trial] = []
        self._pending: dict[Trial, None] = {}
        self._paused: dict[Trial, None] = {}
        self._running: dict[Trial, None] = {}
        self._search_finished = False
        self._search_waiting = False
        self._stop_requested: str | None = None  # why the whole run is ending
        self._raise: BaseException | None = None
        self._iteration = 0
        self._id_prefix = uuid.uuid4().hex[:5] + "_"
        self._counter = 0
        self._id_holes: set[int] = set()
        self._window = 10_000 if getattr(scheduler, "supports_buffered_results", True) else 1
        env_window = os.environ.get("TUNEKIT_RESULT_BUFFER_LENGTH")
        if env_window and self._window != 1:
            self._window = max(1, int(env_window))
        self._strict_metric = metric is not None and not env_flag(
            "TUNEKIT_DISABLE_STRICT_METRIC_CHECKING", "TUNE_DISABLE_STRICT_METRIC_CHECKING"
        )
        self._last_detail_print: dict[Trial, float] = {}
        self._state_period = float(os.environ.get("TUNEKIT_STATE_SAVE_PERIOD_S", "10"))
        self._state_timestamp = date_str()
        # the state database: trials that changed since the last commit
        self.store = None
        self._dirty: dict[Trial, None] = {}
        self._sink = self._status_changed  # one bound method shared by every trial
        self._urgent = False  # a status or checkpoint changed: commit at the end of this step
        self._searchers_dirty = True
        self._searcher_processes: list[SearcherProcess] = []
        self._searcher_state_written: dict[int, bytes | None] = {}  # source index -> blob
        self._prune_after_commit: list[str] = []
        self._snapshot = None  # the final snapshot's writer (see write_snapshot)
        # trials to retry whose failed attempt's process may have left half-written checkpoints
        self._leftovers: set[Trial] = set()
        self._last_commit = 0.0
        self._last_scheduler_save = 0.0
        self.start_time = time.time()
        self.interrupted = False
        # The control server's queue of requests, run on this thread once per step
        # (None without a server: the loop then never looks at it).
        self.commands = None
        self._added_sources: dict[int, TrialSource] = {}

    # -- the scheduler-facing API (Ray Tune's TrialRunner names) -------------------------
    def get_trials(self) -> list[Trial]:
        return self._trials

    def experiment_names(self) -> list[str]:
        """The names of this run's experiments, in order."""
        return [source.experiment.name for source in self._sources]

    def get_pending_trials(self):
        return list(self._pending)

    def get_paused_trials(self):
        return list(self._paused)

    def get_live_trials(self) -> list[Trial]:
        return [*self._running, *self._pending, *self._paused]

    def has_resources_for_trial(self, trial: Trial) -> bool:
        return self.trial_executor.has_resources_for_trial(trial)

    def stop_trial(self, trial: Trial) -> None:
        """End ``trial`` as TERMINATED (used by schedulers and the control API)."""
        if trial.status == RUNNING:
            self._complete(trial, stop_worker=True)
        elif trial.status in (PENDING, PAUSED):
            self._pending.pop(trial, None)
            self._paused.pop(trial, None)
            trial.set_status(TERMINATED)
            self._scheduler.on_trial_remove(self, trial)
            self._searcher_of(trial).on_trial_complete(trial.trial_id, result=None, error=False)

    def add_trials(
        self, config: dict, experiment: str | None = None, num_samples: int = 1
    ) -> list[Trial]:
        """Queue new trials of ``experiment`` (default: the first) with ``config``.

        Its ``grid_search`` entries expand into variants as for ``run(config=...)``, each
        repeated ``num_samples`` times. The trials run the experiment's trainable but
        belong to a source whose searcher is a no-op, so the experiment's searcher never
        hears of trial ids it did not suggest. Called on the run-loop thread (the control
        server queues it there); raises ``ValueError`` for a request it cannot honour.
        """
        if self._stop_requested:
            raise ValueError("The run is ending; it accepts no new trials.")
        names = self.experiment_names()
        if experiment is None:
            index = 0
        elif experiment in names:
            index = names.index(experiment)
        else:
            raise ValueError(
                f"This run has no experiment named {experiment!r}; its experiments: "
                f"{', '.join(repr(n) for n in names)}."
            )
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        variants = []
        for _ in range(num_samples):
            for resolved, variant in space.generate_variants(config):
                variants.append((resolved, variant))
                if len(variants) > _MAX_ADDED_TRIALS:
                    raise ValueError(
                        f"The request expands into more than {_MAX_ADDED_TRIALS} trials; add "
                        "fewer at a time."
                    )
        source = self._added_source_for(index)
        trials = []
        for resolved, variant in variants:
            number = self._free_trial_number()
            self._use_trial_number(number)
            trials.append(self._add_trial(source, self._trial_id(number), variant, resolved))
        if self.total_samples is not None and self._reporter is not None:
            self.total_samples += len(trials)  # the progress table's "N/total" counts them
            self._reporter.set_total_samples(self.total_samples)
        return trials

    def _added_source_for(self, index: int) -> TrialSource:
        """The source of trials added to experiment ``index`` through the control API."""
        from .searcher import Searcher

        source = self._added_sources.get(index)
        if source is None:
            base = self._sources[index]
            source = TrialSource(
                experiment=base.experiment,
                searcher=Searcher(),
                trainable=base.trainable,
                max_trials=None,
                stop_dict=base.stop_dict,
                added_to=index,
            )
            self._added_sources[index] = source
        return source

    def stop_experiment(self) -> None:
        """End the run gracefully: running and queued trials end as TERMINATED."""
        self._end_run("stop_experiment")

    def pause_trial(self, trial: Trial, should_checkpoint: bool = True) -> None:
        """Pause a running trial: it checkpoints (class trainables), frees its resources,
        and continues from its latest checkpoint when the scheduler picks it again.

        With ``should_checkpoint=False`` it is stopped without saving (PBT, which then
        points it at another trial's checkpoint with ``trial.restore_from``).
        """
        if trial.status != RUNNING:
            return
        if should_checkpoint:
            self.trial_executor.pause_trial(trial)
        else:
            self.trial_executor.stop_trial(trial)
        self._running.pop(trial, None)
        trial.set_status(PAUSED)
        self._paused[trial] = None

    def unpause_trial(self, trial: Trial) -> None:
        """Put a paused trial back in the queue (PAUSED -> PENDING)."""
        if trial.status == PAUSED:
            self._paused.pop(trial, None)
            trial.set_status(PENDING)
            self._pending[trial] = None

    # -- trial creation ----------------------------------------------------------------
    def _searcher_of(self, trial: Trial) -> Any:
        return trial._source.searcher

    def _create_trial(self) -> bool:
        """Ask the current searcher for one more trial; False if none is available now."""
        self._search_waiting = False
        while self._source_index < len(self._sources):
            source = self._sources[self._source_index]
            if source.max_trials is not None and source.created >= source.max_trials:
                self._source_index += 1
                continue
            trial_id = None
            if isinstance(source.searcher, SearcherProcess):
                # A suggestion asked of the searcher's process keeps the id it was asked for.
                trial_id = source.searcher.pending_trial_id()
            if trial_id is None:
                trial_id = self._trial_id(self._free_trial_number())
            config = source.searcher.suggest(trial_id)
            if config is None:
                self._search_waiting = True
                return False
            if isinstance(config, str):  # Searcher.FINISHED
                self._source_index += 1
                continue
            self._use_trial_number(self._trial_number(trial_id))
            if source.base_config:
                # A searcher with its own space: the constants of `config` still apply.
                config = space.deep_merge(copy.deepcopy(source.base_config), config)
            self._add_trial(source, trial_id, config)
            return True
        self._search_finished = True
        return False

    def _add_trial(
        self, source: TrialSource, trial_id: str, config: dict, resolved: dict | None = None
    ) -> Trial:
        experiment = source.experiment
        index = source.created
        source.created += 1
        evaluated: dict[str, Any] = {}
        if resolved is None:
            resolved = {}
            for path in source.searched_paths:
                try:
                    value = space.get_path(config, path)
                except (KeyError, IndexError, TypeError):
                    continue
                resolved[path] = value
        for path, value in resolved.items():
            evaluated[_intern("/".join(str(p) for p in path))] = value
        tag = f"{index}_{space.format_vars(resolved)}" if resolved else str(index)
        trial = Trial(
            trainable_name=experiment.trainable_name,
            config=config,
            trial_id=trial_id,
            experiment_tag=tag,
            evaluated_params=evaluated,
            resources=experiment.resources_for(config),
            stopping_criterion=source.stop_dict,
            experiment_name=experiment.name,
            local_dir=experiment.path,
            max_failures=experiment.max_failures,
            log_to_file=experiment.log_to_file or (None, None),
        )
        trial._source = source
        trial.checkpoint_manager = TrialCheckpoints(
            experiment.keep_checkpoints_num, experiment.checkpoint_score_attr
        )
        trial.restore_path = experiment.restore
        if experiment.trial_name_creator is not None:
            trial.custom_trial_name = str(experiment.trial_name_creator(trial))
        check = getattr(self.trial_executor, "check_fits", None)
        if check is not None:
            check(trial)
        trial._source_index = (
            self._sources.index(source) if source.added_to is None else source.added_to
        )
        self._track(trial)
        self._trials.append(trial)
        self._pending[trial] = None
        self._scheduler.on_trial_add(self, trial)
        self._searchers_dirty = True
        return trial

    def _track(self, trial: Trial) -> None:
        trial._state_sink = self._sink
        self._dirty[trial] = None
        self._urgent = True

    def _status_changed(self, trial: Trial) -> None:
        self._dirty[trial] = None
        self._urgent = True

    def _trial_dir(self, trial: Trial) -> str:
        experiment = trial._source.experiment
        if experiment.trial_dirname_creator is not None:
            dirname = str(experiment.trial_dirname_creator(trial))
            if not dirname or os.sep in dirname or (os.altsep and os.altsep in dirname):
                raise ValueError(
                    f"trial_dirname_creator returned {dirname!r} for {trial}; it must return a "
                    "plain directory name, not a path."
                )
        else:
            dirname = _UNSAFE.sub("_", f"{trial}_{trial.experiment_tag}")[:_MAX_DIRNAME]
            dirname = f"{dirname}_{date_str()}"
        path = os.path.join(experiment.path, dirname)
        try:
            os.makedirs(path)
        except FileExistsError:
            if experiment.trial_dirname_creator is not None:
                raise ValueError(
                    f"trial_dirname_creator returned {dirname!r} for {trial}, but that "
                    "directory already exists; return a name unique to each trial (include "
                    "trial.trial_id)."
                ) from None
            path = f"{path}_{trial.trial_id}"
            os.makedirs(path, exist_ok=True)
        return path

    # -- starting ------------------------------------------------------------------------
    def _fill_slots(self) -> None:
        while not self._stop_requested:
            if not self._pending and not self._search_finished:
                self._create_trial()
            trial = self._scheduler.choose_trial_to_run(self)
            if trial is None:
                return
            self._start(trial)

    def _start(self, trial: Trial) -> None:
        self._pending.pop(trial, None)
        self._paused.pop(trial, None)
        if self._searcher_processes:
            self._ask_early()  # the queue is empty again: the next suggestion is asked now
        if trial.local_path is None:
            trial.local_path = self._trial_dir(trial)
        restore = self._restore_point(trial)
        if trial._restore_override is not None:
            trial._restore_override = None  # restored from elsewhere: keep the rows so far
        elif trial.results_seen or trial.num_failures or trial._resumed or trial.status == PAUSED:
            # A restart: results after the restored iteration are about to be produced
            # again, so the files keep only what precedes it (each iteration once).
            self._hook.tunekit_flush()
            truncate_results(trial.local_path, restore["iteration"] if restore else 0)
            if trial._resumed or trial in self._leftovers:
                # half-written by a killed driver's or a failed attempt's process: a
                # checkpoint being copied, a checkpoint_dir() never reported
                remove_partial_checkpoints(trial.local_path)
                self._leftovers.discard(trial)
            trial._resumed = False
        trial.set_status(RUNNING)
        trial.start_time = time.time()
        self._running[trial] = None
        source = trial._source
        log_to_file = None
        if source.experiment.log_to_file:
            out, err = source.experiment.log_to_file
            log_to_file = (os.path.join(trial.local_path, out), os.path.join(trial.local_path, err))
        self.trial_executor.start_trial(
            trial,
            TrialLaunch(
                trainable=source.trainable,
                config=trial.config,
                stop=trial.stopping_criterion or None,
                window=self._window,
                log_to_file=log_to_file,
                reuse_actors=self._reuse_actors,
                restore=restore,
                checkpoint={
                    "freq": source.experiment.checkpoint_freq,
                    "at_end": source.experiment.checkpoint_at_end,
                },
                export_formats=source.experiment.export_formats,
            ),
        )
        trial._location = self.trial_executor.trial_location(trial)
        # After the launch, as in Ray Tune: the loggers create the trial's files while its
        # process starts (no result is handled before this returns).
        self._hook.tunekit_on_trial_start(trial=trial, iteration=self._iteration, trials=self._trials)
        if restore is not None:
            # It continues from a checkpoint (retry, resume, unpause, exploit, restore=):
            # Ray's on_trial_restore. Its process loads the checkpoint before the first step.
            self._hook.tunekit_on_trial_restore(trial=trial, iteration=self._iteration, trials=self._trials)

    def _restore_point(self, trial: Trial) -> dict | None:
        """Where a (re)started trial continues: its latest checkpoint, or ``restore=``."""
        latest = trial.checkpoint_manager.latest
        if trial._restore_override is not None:
            path, latest = trial._restore_override, None
        else:
            path = latest["path"] if latest is not None else trial.restore_path
        if path is None:
            return None
        metadata = Checkpoint(path).get_metadata()
        return {
            "path": path,
            "iteration": metadata.get("iteration", latest["iteration"] if latest else 0),
            "time_total_s": metadata.get("time_total_s", 0.0),
        }

    def _register_checkpoint(self, trial: Trial, path: str, iteration: int, result: dict | None) -> None:
        self._dirty[trial] = None
        self._urgent = True
        stale = trial.checkpoint_manager.add(path, iteration, result)
        if self.store is None:
            for old in stale:
                shutil.rmtree(old, ignore_errors=True)
        else:
            # Deleted once the saved state no longer lists them, so a resume after a
            # crash never points at a checkpoint that is gone.
            self._prune_after_commit.extend(stale)
        self._hook.tunekit_on_checkpoint(
            trial=trial, checkpoint=Checkpoint(path), iteration=self._iteration, trials=self._trials
        )
        # Ray calls on_trial_save once a save of the trial is processed, after on_checkpoint.
        self._hook.tunekit_on_trial_save(trial=trial, iteration=self._iteration, trials=self._trials)

    # -- events --------------------------------------------------------------------------
    def _on_results(self, trial: Trial, batch: list[dict]) -> None:
        if trial.status != RUNNING:
            return
        pid, hostname, node_ip = trial._location
        scheduler_on_result = self._scheduler.on_trial_result
        searcher_on_result = trial._source.searcher_on_result
        hook = self._hook.tunekit_on_trial_result
        stopper = self._stopper
        criteria = trial.stopping_criterion
        metric = self._metric if self._strict_metric else None
        verbose = self._verbose
        processed = 0
        for result in batch:
            processed += 1
            try:
                result["trial_id"] = trial.trial_id
                result["experiment_tag"] = trial.experiment_tag
                result["pid"] = pid
                result["hostname"] = hostname
                result["node_ip"] = node_ip
                # Decisions read a flat view ("val/loss"); loggers, callbacks and
                # last_result keep the result as reported, nested dicts included.
                flat = result
                for value in result.values():
                    if type(value) is dict:
                        flat = space.flatten_dict(result, delimiter="/")
                        break
                result["config"] = trial.config
                if flat is not result:
                    flat["config"] = trial.config
                worker_done = result.get("done", False)
                checkpoint_path = result.pop(CHECKPOINT_KEY, None)
                if checkpoint_path is not None:
                    flat.pop(CHECKPOINT_KEY, None)
                    self._register_checkpoint(trial, checkpoint_path, result["training_iteration"], flat)
                if metric is not None and metric not in flat and not worker_done:
                    raise ValueError(
                        f"Trial {trial} reported a result without the metric {metric!r} that "
                        f"tunekit.run() was told to optimise. Reported keys: "
                        f"{', '.join(sorted(k for k in flat if k != 'config'))}. Report it with "
                        f"tunekit.report({{{metric!r}: value}}), fix the `metric` argument, or set "
                        "TUNEKIT_DISABLE_STRICT_METRIC_CHECKING=1."
                    )
                decision = CONTINUE
                if criteria and not worker_done:
                    for key, bound in criteria.items():
                        if key not in flat:
                            raise TuneError(
                                f"Stopping criterion {key!r} is not in the results of trial "
                                f"{trial}. Reported keys: "
                                f"{', '.join(sorted(k for k in flat if k != 'config'))}."
                            )
                        if flat[key] >= bound:
                            decision = STOP
                if stopper is not None and decision != STOP and stopper(trial.trial_id, flat):
                    decision = STOP
                if decision != STOP:
                    decision = scheduler_on_result(self, trial, flat)
                if decision == STOP:
                    result["done"] = flat["done"] = True
                elif searcher_on_result is not None:
                    searcher_on_result(trial.trial_id, flat)
                trial.last_result = result
                trial.results_seen += 1
                hook(trial=trial, result=result, iteration=self._iteration, trials=self._trials)
                if verbose >= 3:
                    self._print_detail(trial, result)
            except Exception as exc:
                self._on_error(trial, traceback.format_exc(), exc, from_driver=True)
                return
            if decision == STOP or result["done"]:
                self._complete(trial, stop_worker=not worker_done)
                return
            if decision == PAUSE:
                self.pause_trial(trial)
                return
            if trial.status != RUNNING:
                return  # the scheduler paused or stopped it itself (NOOP): no ack, no more rows
        self._dirty[trial] = None
        self.trial_executor.ack(trial, processed)

    def _on_done(self, trial: Trial, info: Any) -> None:
        if info and info.get("checkpoint"):
            # checkpoint_at_end of a stopped class trainable, or a checkpoint_dir()
            # written after the last report: it belongs to the trial's last iteration.
            self._register_checkpoint(trial, info["checkpoint"], info["iteration"], trial.last_result)
        if trial.status != RUNNING:
            return
        if trial.last_result:
            trial.last_result["done"] = True
        self._complete(trial, stop_worker=False)

    def _complete(self, trial: Trial, stop_worker: bool) -> None:
        if stop_worker:
            self.trial_executor.stop_trial(trial)
        # A finished trial keeps its last result for good: share the key strings.
        trial.last_result = {_intern(k): v for k, v in trial.last_result.items()}
        self._running.pop(trial, None)
        trial.set_status(TERMINATED)
        self._last_detail_print.pop(trial, None)
        result = trial.last_result
        self._searchers_dirty = True
        trial._source.searcher.on_trial_complete(trial.trial_id, result=result, error=False)
        if self._searcher_processes:
            self._ask_early(after_news=True)
        self._scheduler.on_trial_complete(self, trial, result)
        self._hook.tunekit_on_trial_complete(trial=trial, iteration=self._iteration, trials=self._trials)
        if self._verbose >= 2:
            self._print_done(trial)
        # its entry of the final snapshot, encoded now (off the searcher's critical path)
        # rather than all at the end
        self._snapshot_writer().prime(trial)

    def _on_error(self, trial: Trial, text: str, exc: BaseException | None, from_driver: bool = False) -> None:
        if trial.status not in (RUNNING, PENDING, PAUSED):
            return
        if from_driver:
            self.trial_executor.stop_trial(trial)
        self._running.pop(trial, None)
        self._pending.pop(trial, None)
        self._paused.pop(trial, None)
        trial.num_failures += 1
        if trial.local_path is None:
            trial.local_path = self._trial_dir(trial)
        trial.error_file = os.path.join(trial.local_path, "error.txt")
        with open(trial.error_file, "a") as f:
            f.write(f"Failure # {trial.num_failures} (occurred at {date_str()})\n{text}\n")
        lines = [line for line in text.strip().splitlines() if line.strip()]
        trial.error_msg = lines[-1] if lines else text
        trial.set_status(ERROR)
        logger.error("Trial %s errored (failure %d): %s", trial, trial.num_failures, trial.error_msg)
        # Hooks hear of every failure, retried or not (loggers close the trial's files).
        self._hook.tunekit_on_trial_error(
            trial=trial, error=exc if exc is not None else text, iteration=self._iteration, trials=self._trials
        )
        retries = trial.max_failures
        if (retries == -1 or trial.num_failures <= retries) and not self._fail_fast and not self._stop_requested:
            # Retry: back to the queue, to continue from the latest checkpoint (or from scratch).
            if not from_driver:
                # Its process raised (and exits) or died: the retry removes what it left
                # half-written. (After an error found by the driver the process may still be
                # stopping, writing: that is left alone.)
                self._leftovers.add(trial)
            trial.set_status(PENDING)
            self._pending[trial] = None
            return
        self._scheduler.on_trial_error(self, trial)
        self._searchers_dirty = True
        trial._source.searcher.on_trial_complete(trial.trial_id, result=None, error=True)
        if self._verbose >= 2:
            self._print_done(trial)
        if self._fail_fast:
            if self._fail_fast == "raise":
                if exc is None:
                    exc = TuneError(f"Trial {trial} failed:\n{text}")
                else:
                    exc.add_note(f"Raised in trial {trial}; its traceback:\n{text}")
                self._raise = exc
            self._end_run("fail_fast")

    # -- ending --------------------------------------------------------------------------
    def _end_run(self, why: str) -> None:
        """Stop everything that runs and create nothing more."""
        if self._stop_requested:
            return
        self._stop_requested = why
        self._search_finished = True
        if why == "interrupted":
            # Interrupted trials keep their status so that a resume continues them.
            for trial in list(self._running):
                self.trial_executor.stop_trial(trial)
            return
        for trial in list(self._running):
            self._complete(trial, stop_worker=True)
        for trial in list(self._pending) + list(self._paused):
            # Queued trials end too, and their searcher and scheduler hear of it.
            self.stop_trial(trial)

    def interrupt(self) -> None:
        """Called from the SIGINT handler: end gracefully at the next loop step."""
        self.interrupted = True
        self.trial_executor.wakeup()

    def _is_finished(self) -> bool:
        if self._stop_requested:
            return True
        return self._search_finished and not self._running and not self._pending and not self._paused

    # -- main loop -----------------------------------------------------------------------
    def run(self) -> None:
        executor = self.trial_executor
        deadline = None if self._time_budget_s is None else self.start_time + self._time_budget_s
        stopper = self._stopper
        stop_all = getattr(stopper, "stop_all", None) if stopper is not None else None
        report_period = getattr(self._reporter, "_max_report_frequency", 5) if self._reporter else None
        commands = self.commands
        self._maybe_report(force=True)
        while True:
            if self.interrupted:
                self._end_run("interrupted")
            if commands is not None and commands.pending:
                commands.run_pending()
            if self._is_finished():
                break
            self._iteration += 1
            self._hook.tunekit_on_step_begin(iteration=self._iteration, trials=self._trials)
            self._fill_slots()
            if self._is_finished():
                break
            timeout = None
            now = time.time()
            if deadline is not None:
                timeout = max(0.0, deadline - now)
            if report_period and self._verbose >= 1:
                timeout = report_period if timeout is None else min(timeout, report_period)
            # Wake at least every few seconds so step-end hooks (logger flushes) run
            # while trials compute silently.
            timeout = _IDLE_WAKEUP_S if timeout is None else min(timeout, _IDLE_WAKEUP_S)
            if self._dirty:
                # results not yet in the state database: commit within the period
                left = max(0.0, self._last_commit + _RESULT_COMMIT_PERIOD_S - time.monotonic())
                timeout = min(timeout, left)
            if self._search_waiting and not self._running:
                # The searcher has nothing to offer and nothing runs that could change that:
                # ask again shortly (a Searcher that returns None without live trials).
                timeout = 0.05 if timeout is None else min(timeout, 0.05)
            for proxy in self._searcher_processes:
                proxy.flush()  # notifications of this step, in one write
            events = executor.wait(timeout)
            for event in events:
                kind = event[0]
                if kind == "results":
                    self._on_results(event[1], event[2])
                elif kind == "done":
                    self._on_done(event[1], event[2])
                elif kind == "error":
                    self._on_error(event[1], event[2], event[3])
            if stop_all is not None and not self._stop_requested and stop_all():
                self._end_run("stopper")
            if deadline is not None and not self._stop_requested and time.time() >= deadline:
                logger.info("Time budget of %.1f s reached: stopping all trials.", self._time_budget_s)
                self._end_run("time_budget")
            self._hook.tunekit_on_step_end(iteration=self._iteration, trials=self._trials)
            self._maybe_report()
            self._maybe_save_state()
        self._drain()
        # Nothing reaches the searchers any more: their processes pickle their final state
        # while the workers exit and the snapshot is written.
        for proxy in self._searcher_processes:
            proxy.request_final()
        executor.retire_idle()  # workers exit while the final state is saved

    def _drain(self) -> None:
        """Let stopped trials' processes finish (or be killed after the grace period).

        Events that arrive now belong to trials that already ended; they are dropped.
        """
        executor = self.trial_executor
        while executor.num_busy():
            for event in executor.wait(1.0):
                if event[0] != "done":
                    continue
                trial, info = event[1], event[2]
                if self.interrupted and trial.status == RUNNING:
                    # Interrupted, not finished: it stays RUNNING so a resume continues it;
                    # only a last checkpoint it saved is kept.
                    if info and info.get("checkpoint"):
                        self._register_checkpoint(trial, info["checkpoint"], info["iteration"], None)
                    continue
                self._on_done(trial, info)

    def finish(self) -> None:
        """Save the final state, then tell the hooks (loggers close, syncers upload it all)."""
        self.write_snapshot()
        self._maybe_save_state(force=True)
        self.close_searcher_processes()
        self._hook.tunekit_on_experiment_end(trials=self._trials)
        if self.store is not None:
            self.store.close()
        self._maybe_report(force=True, done=True)
        if self._raise is not None:
            raise self._raise

    # -- reporting and state ---------------------------------------------------------------
    def _maybe_report(self, force: bool = False, done: bool = False) -> None:
        reporter = self._reporter
        if reporter is None or self._verbose < 1:
            return
        if force or reporter.should_report(self._trials, done=done):
            reporter.report(self._trials, done, self._resources_line())

    def _resources_line(self) -> str:
        totals = self.trial_executor.total_resources()
        used: dict[str, float] = {}
        for trial in self._running:
            for key, value in trial.resources.items():
                used[key] = used.get(key, 0.0) + value
        parts = [f"{used.get('CPU', 0):g}/{totals.get('CPU', 0):g} CPUs"]
        parts.append(f"{used.get('GPU', 0):g}/{totals.get('GPU', 0):g} GPUs")
        for key in sorted(k for k in used if k not in ("CPU", "GPU", "memory")):
            parts.append(f"{used[key]:g}/{totals.get(key, 0):g} {key}")
        return "Resources requested: " + ", ".join(parts)

    def _print_detail(self, trial: Trial, result: dict) -> None:
        now = time.time()
        if not result.get("done") and now - self._last_detail_print.get(trial, 0.0) < 5.0:
            return
        self._last_detail_print[trial] = now
        from .progress import format_trial_result_detailed

        sys.stdout.write(format_trial_result_detailed(trial, result) + "\n")

    def _print_done(self, trial: Trial) -> None:
        from .progress import format_trial_result_brief

        sys.stdout.write(format_trial_result_brief(trial, trial.last_result, metric=self._metric) + "\n")

    def runner_data(self) -> dict:
        open_numbers = self._open_numbers()
        return {
            "start_time": self.start_time,
            "iteration": self._iteration,
            "id_prefix": self._id_prefix,
            # Numbers of open suggestion requests are not given out again after a resume:
            # the saved searcher state may hold their suggestions.
            "trial_counter": max([self._counter, *(n + 1 for n in open_numbers)]),
            "trial_id_holes": sorted(self._id_holes - open_numbers),
            "source_index": self._source_index,
            "created": [source.created for source in self._sources],
            "search_finished": self._search_finished,
            "stop_reason": self._stop_requested,
            "interrupted": self.interrupted,
        }

    def _maybe_save_state(self, force: bool = False) -> None:
        """Commit what changed to the state database.

        At the end of every loop step in which a trial changed status or gained a
        checkpoint (so a killed driver neither loses nor repeats a finished trial),
        and at most every second for new results otherwise. Result files are
        flushed first, so the database never refers to rows that are not on disk.
        """
        store = self.store
        if store is None:
            return
        now = time.monotonic()
        if not force and not self._urgent and (
            not self._dirty or now - self._last_commit < _RESULT_COMMIT_PERIOD_S
        ):
            return
        self._hook.tunekit_flush()
        kv: dict[str, Any] = {"runner_data": json.dumps(self.runner_data())}
        written: dict[int, bytes | None] = {}
        log_rows: list[tuple[int, int, bytes]] = []
        log_trim: dict[int, int | None] = {}
        logged: dict[SearcherProcess, list] = {}
        if self._searchers_dirty or force or self._searcher_processes:
            for index, source in enumerate(self._sources):
                if isinstance(source.searcher, SearcherProcess):
                    proxy = source.searcher
                    blob, state_seq, calls = proxy.snapshot()
                    logged[proxy] = calls
                    # Only the calls since the last commit are written. The state (a whole
                    # study, for Optuna) changes only when the log is compacted; when it
                    # does, the rows it holds go (at this run's first commit: every row,
                    # as they may be an earlier run's, and the older one-blob log too).
                    if not force and self._searcher_state_written.get(index) is blob:
                        blob = None
                    else:
                        first = index not in self._searcher_state_written
                        log_trim[index] = None if first else state_seq
                        if first:
                            kv[f"searcher_log/{index}"] = b""
                        written[index] = blob
                    log_rows += [
                        (index, seq, pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL))
                        for seq, *call in calls
                    ]
                else:
                    blob = _saved_state(source.searcher, self.experiment_dir)
                if blob is not None:
                    kv[f"searcher/{index}"] = blob
            self._searchers_dirty = False
        if force or now - self._last_scheduler_save >= self._state_period:
            blob = _saved_state(self._scheduler, self.experiment_dir)
            if blob is not None:
                kv["scheduler"] = blob
            self._last_scheduler_save = now
        dirty = list(self._dirty)
        try:
            store.save(dirty, kv, log_rows, log_trim)
        except Exception as exc:  # noqa: BLE001 - a failed save must not end the run
            logger.warning("Could not save the experiment state in %s: %s", store.path, exc)
            return
        self._searcher_state_written.update(written)
        for proxy, calls in logged.items():
            proxy.saved(calls)
        self._dirty.clear()
        self._urgent = False
        self._last_commit = now
        if self._prune_after_commit:
            for old in self._prune_after_commit:
                shutil.rmtree(old, ignore_errors=True)
            self._prune_after_commit.clear()
        store.maybe_backup(_BACKUP_PERIOD_S, force=force)

    def write_snapshot(self) -> None:
        """The Ray-style ``experiment_state-<timestamp>.json`` (at the end and on Ctrl+C)."""
        try:
            self._snapshot_writer().save(self._trials, self.runner_data())
        except OSError as exc:
            logger.warning("Could not save the experiment state in %s: %s", self.experiment_dir, exc)

    def _snapshot_writer(self):
        writer = self._snapshot
        if writer is None or writer.timestamp_str != self._state_timestamp:
            from .experiment_state import ExperimentStateWriter

            writer = self._snapshot = ExperimentStateWriter(
                self.experiment_dir, self._state_timestamp, max_cached=_SNAPSHOT_CACHED_TRIALS
            )
        return writer

    # -- searchers in processes of their own ---------------------------------------------
    def start_searcher_processes(self) -> None:
        """Move model-based searchers into processes of their own (see searcher_process).

        Only with the local executor on Linux, and not with TUNEKIT_SEARCHER_PROCESS=0.
        """
        from .local_executor import LocalExecutor

        if not env_flag("TUNEKIT_SEARCHER_PROCESS", default=True):
            return
        if not sys.platform.startswith("linux") or not isinstance(self.trial_executor, LocalExecutor):
            return
        for source in self._sources:
            if source.max_trials == 0 or not wants_own_process(source.searcher):
                continue
            proxy = SearcherProcess(
                source.searcher,
                functools.partial(_saved_state, experiment_dir=self.experiment_dir),
                self.trial_executor.watch,
                self.trial_executor.unwatch,
            )
            source.searcher = proxy
            if source.searcher_on_result is not None:
                source.searcher_on_result = proxy.on_trial_result
            self._searcher_processes.append(proxy)
        if self._searcher_processes:
            self._ask_early()  # the first suggestion is computed while the run sets up

    def _ask_early(self, after_news: bool = False) -> None:
        """A slot is about to free: let a searcher process start on the next suggestion.

        The run loop asks for it at its next step anyway (it keeps one trial queued);
        asking now lets the searcher compute while this step commits and writes files.
        """
        if self._pending or self._search_finished or self._stop_requested:
            return
        if self._source_index >= len(self._sources):
            return
        source = self._sources[self._source_index]
        if not isinstance(source.searcher, SearcherProcess):
            return
        proxy = source.searcher
        if source.max_trials is not None and source.created + proxy.outstanding() >= source.max_trials:
            return
        proxy.ask_early(self._trial_id(self._free_trial_number()), after_news)

    # -- trial ids ------------------------------------------------------------------------
    # Ids are <prefix><number>, numbered in creation order. A searcher process may hold a
    # request for a later number while an earlier one got "nothing now": that earlier
    # number becomes a hole, given to the next trial, so the numbers have no gaps.
    def _trial_id(self, number: int) -> str:
        return f"{self._id_prefix}{number:05d}"

    def _trial_number(self, trial_id: str) -> int:
        return int(trial_id[len(self._id_prefix):])

    def _open_numbers(self) -> set[int]:
        """The numbers of suggestions asked of searcher processes and not yet taken."""
        return {
            self._trial_number(trial_id)
            for source in self._sources
            if isinstance(source.searcher, SearcherProcess)
            for trial_id in source.searcher.outstanding_ids()
        }

    def _free_trial_number(self) -> int:
        """The lowest number no trial and no open suggestion request holds."""
        reserved = self._open_numbers()
        for number in sorted(self._id_holes):
            if number not in reserved:
                return number
        number = self._counter
        while number in reserved:
            number += 1
        return number

    def _use_trial_number(self, number: int) -> None:
        if number in self._id_holes:
            self._id_holes.discard(number)
        elif number >= self._counter:
            self._id_holes.update(range(self._counter, number))
            self._counter = number + 1

    def close_searcher_processes(self, sync_back: bool = True) -> None:
        """End the searchers' processes; their final state goes back into the user's objects."""
        for source in self._sources:
            if isinstance(source.searcher, SearcherProcess):
                proxy = source.searcher
                source.searcher = proxy.local
                proxy.close(sync_back=sync_back)
        self._searcher_processes = []

    # -- resume ------------------------------------------------------------------------
    def restore_state(self, state: dict, errored: str | None) -> None:
        """Continue the experiment saved in ``state`` (from :func:`load_database`).

        Finished trials stay finished; unfinished ones continue from their latest
        checkpoint; errored ones stay errored, unless ``errored`` is "restart" (from
        scratch) or "resume" (from their latest checkpoint).
        """
        kv = state["kv"]
        runner = json.loads(kv.get("runner_data") or "{}")
        self._id_prefix = runner.get("id_prefix", self._id_prefix)
        self._counter = runner.get("trial_counter", 0)
        self._id_holes = set(runner.get("trial_id_holes", ()))
        self._source_index = runner.get("source_index", 0)
        for source, created in zip(self._sources, runner.get("created", [])):
            source.created = created
        for index, source in enumerate(self._sources):
            blob = kv.get(f"searcher/{index}")
            if blob is not None:
                _restore_state(source.searcher, blob, self.experiment_dir)
                # What the searcher did in its own process after that state was taken: rows
                # of the searcher_log table (and, from tunekit versions before it, one blob).
                log = kv.get(f"searcher_log/{index}")
                calls = pickle.loads(log) if log else []
                calls += [pickle.loads(row) for row in state.get("searcher_logs", {}).get(index, ())]
                if calls:
                    replay(source.searcher, calls)
        if kv.get("scheduler") is not None:
            _restore_state(self._scheduler, kv["scheduler"], self.experiment_dir)
            scheduler_restored = True
        else:
            scheduler_restored = False
        for record in state["trials"]:
            trial = self._trial_from_record(record)
            if trial.status == ERROR and errored:
                if errored == "restart":
                    trial.checkpoint_manager.entries = []
                    trial.restore_path = None
                trial.set_status(PENDING)
            elif trial.status in (RUNNING, PAUSED):
                trial.set_status(PENDING)
            if trial.status == PENDING:
                trial._resumed = True
                self._pending[trial] = None
                limiter_live = getattr(trial._source.searcher, "live_trials", None)
                if isinstance(limiter_live, set):
                    limiter_live.add(trial.trial_id)
                    if hasattr(trial._source.searcher, "num_unfinished_live_trials"):
                        trial._source.searcher.num_unfinished_live_trials += 1
                if not scheduler_restored:
                    self._scheduler.on_trial_add(self, trial)
            self._trials.append(trial)
            trial._state_sink = self._sink
            self._dirty[trial] = None
        self._urgent = True
        if self.store is not None:
            self.store.adopt(state["trials"])
            for trial in self._trials:
                self.store.remember_config(trial)

    def _trial_from_record(self, record: dict) -> Trial:
        from .resources import PlacementGroupFactory

        index = record.get("source_index", 0)
        if index >= len(self._sources):
            raise ValueError(
                f"The saved trial {record['trial_id']} belongs to experiment #{index}, but this "
                f"run defines {len(self._sources)} experiment(s); resume with the same experiments."
            )
        source = self._sources[index]
        if record.get("added_by_api"):
            source = self._added_source_for(index)
        experiment = source.experiment
        blob = record.get("config_blob")
        config = pickle.loads(blob) if blob is not None else record.get("config") or {}
        resources = record.get("resources") or {}
        trial = Trial(
            trainable_name=record.get("trainable_name") or experiment.trainable_name,
            config=config,
            trial_id=record["trial_id"],
            experiment_tag=record.get("experiment_tag") or "",
            evaluated_params=record.get("evaluated_params") or {},
            resources=PlacementGroupFactory(
                resources.get("bundles") or [{"CPU": 1.0}], resources.get("strategy", "PACK")
            ),
            stopping_criterion=source.stop_dict,
            experiment_name=experiment.name,
            local_dir=experiment.path,
            max_failures=experiment.max_failures,
            log_to_file=experiment.log_to_file or (None, None),
        )
        trial._source = source
        trial._source_index = index
        trial.status = record.get("status", PENDING)
        trial.status_history = [tuple(step) for step in record.get("status_history") or []]
        trial.last_result = record.get("last_result") or {}
        trial.results_seen = record.get("results_seen", 0)
        trial.error_msg = record.get("error_msg")
        trial.num_failures = record.get("num_failures", 0)
        trial.custom_trial_name = record.get("custom_trial_name")
        trial.restore_path = record.get("restore_path")
        trial.local_path = self._absolute(record.get("relative_logdir") or record.get("local_path"))
        trial.error_file = self._absolute(record.get("error_file"))
        trial.checkpoint_manager = TrialCheckpoints(
            experiment.keep_checkpoints_num, experiment.checkpoint_score_attr
        )
        entries = [{**e, "path": self._absolute(e["path"])} for e in record.get("checkpoints") or []]
        missing = [e["path"] for e in entries if not os.path.isdir(e["path"])]
        if missing:
            logger.warning(
                "Trial %s: %d saved checkpoint(s) no longer exist (%s); continuing from the "
                "latest one that does.", record["trial_id"], len(missing), ", ".join(missing)
            )
        trial.checkpoint_manager.load_state([e for e in entries if os.path.isdir(e["path"])])
        return trial

    def _absolute(self, path: str | None) -> str | None:
        if not path:
            return None
        return path if os.path.isabs(path) else os.path.join(self.experiment_dir, path)


_RESULT_COMMIT_PERIOD_S = 1.0
_MAX_ADDED_TRIALS = 10_000
_BACKUP_PERIOD_S = 60.0
# Finished trials whose snapshot entry (about 1-2 KB) the driver keeps encoded until the end
# of the run (under 1 MB); the final snapshot encodes the others then, so the driver's memory
# per trial is what it was without this (W5: peak RSS from 500 to 2,000 trials).
_SNAPSHOT_CACHED_TRIALS = 500


def _saved_state(obj: Any, experiment_dir: str) -> bytes | None:
    """What ``obj.save(path)`` writes, as bytes (searchers' and schedulers' plugin API).

    Searchers save at every commit that follows a new or finished trial, so this is on
    the per-trial path: a searcher with the base class's ``save`` (the pickled
    ``get_state()``) is serialised in memory, and other ``save`` methods write to a
    RAM-backed scratch directory where the system has one.
    """
    from .searcher import ConcurrencyLimiter, Searcher, dumps_state

    save = getattr(obj, "save", None)
    if save is None:
        return None
    target = obj
    while type(target).save is ConcurrencyLimiter.save:  # it saves the wrapped searcher
        target = target.searcher
    if type(target).save is Searcher.save:
        try:
            return dumps_state(target.get_state())
        except NotImplementedError:
            return None
    path = os.path.join(_scratch_dir(experiment_dir), f".tunekit-state-{uuid.uuid4().hex[:8]}.tmp")
    try:
        save(path)
        with open(path, "rb") as f:
            return f.read()
    except NotImplementedError:
        return None
    finally:
        try:
            os.remove(path)
        except OSError:
            pass


_scratch: str | None = None


def _scratch_dir(experiment_dir: str) -> str:
    """Where state files that live for a moment go: /dev/shm (memory) if usable."""
    global _scratch
    if _scratch is None:
        shm = "/dev/shm"
        _scratch = shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else ""
    return _scratch or experiment_dir


def _restore_state(obj: Any, blob: bytes, experiment_dir: str) -> None:
    path = os.path.join(_scratch_dir(experiment_dir), f".tunekit-state-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(path, "wb") as f:
            f.write(blob)
        obj.restore(path)
    finally:
        try:
            os.remove(path)
        except OSError:
            pass
