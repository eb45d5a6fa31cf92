"""The TensorBoard logger (tunekit-tensorboard) on real runs, read back with TensorBoard's reader."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

import tunekit as tune
from tunekit_core.registry import UnknownPluginError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch):
    monkeypatch.setenv("TUNEKIT_STOP_GRACE_S", "2")


def run(trainable, tmp_path, **kwargs):
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("storage_path", str(tmp_path))
    return tune.run(trainable, **kwargs)


# -- trainables (module level: workers import this module) ---------------------------------


def curves(config):
    for step in range(1, 4):
        tune.report(
            loss=config["x"] / step,
            nested={"acc": step * 0.25, "count": step},
            weights=[config["x"], step, 2.0 * step],
            note="text is not a scalar",
            maybe=float("nan") if step == 2 else 1.5,
        )


def fails_at_three(config):
    for step in range(1, 4):
        if step == 3:
            raise RuntimeError("fails at the third iteration")
        tune.report(loss=float(step))


def retried(config):
    marker = Path(config["marker_dir"]) / f"attempt-{config['i']}"
    first = not marker.exists()
    marker.touch()
    for step in range(1, 4):
        tune.report(loss=100.0 + step if first else float(step))
        if first and step == 2:
            raise RuntimeError("first attempt fails")


# -- helpers ----------------------------------------------------------------------------------


def event_files(trial) -> list[str]:
    return sorted(n for n in os.listdir(trial.local_path) if "tfevents" in n)


def read(trial) -> EventAccumulator:
    accumulator = EventAccumulator(trial.local_path, size_guidance={"scalars": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def hparams_content(accumulator: EventAccumulator) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    return {
        tag: plugin_data_pb2.HParamsPluginData.FromString(content)
        for tag, content in accumulator.PluginTagToContent("hparams").items()
    }


def session_hparams(content) -> dict[str, object]:
    values = {}
    for name, value in content["_hparams_/session_start_info"].session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        values[name] = getattr(value, kind)
    return values


# -- tests ------------------------------------------------------------------------------------


def test_scalars_histograms_and_hparams_per_trial(tmp_path):
    analysis = run(
        curves,
        tmp_path,
        config={
            "x": tune.grid_search([2.0, 6.0]),
            "model": {"layers": 3, "act": "relu", "bn": True},
            "shape": [64, 32],
            "skip": None,
        },
        callbacks=[tune.logger.TBXLoggerCallback()],
    )
    assert len(analysis.trials) == 2
    for trial in analysis.trials:
        x = trial.config["x"]
        assert len(event_files(trial)) == 1
        accumulator = read(trial)
        tags = set(accumulator.Tags()["scalars"])
        assert {
            "ray/tune/loss",
            "ray/tune/nested/acc",
            "ray/tune/nested/count",
            "ray/tune/maybe",
            "ray/tune/time_this_iter_s",
            "ray/tune/done",
        } <= tags
        # Ray Tune leaves these out; strings are no scalars.
        for left_out in (
            "training_iteration",
            "time_total_s",
            "timestamp",
            "pid",
            "note",
            "config/x",
        ):
            assert f"ray/tune/{left_out}" not in tags
        assert not any(tag.startswith("ray/tune/config") for tag in tags)

        loss = scalars(accumulator, "ray/tune/loss")
        assert [step for step, _ in loss] == [1, 2, 3]
        assert [value for _, value in loss] == pytest.approx([x / 1, x / 2, x / 3], rel=1e-6)
        assert scalars(accumulator, "ray/tune/nested/acc") == [(1, 0.25), (2, 0.5), (3, 0.75)]
        assert scalars(accumulator, "ray/tune/nested/count") == [(1, 1.0), (2, 2.0), (3, 3.0)]
        # the NaN at step 2 is skipped
        assert scalars(accumulator, "ray/tune/maybe") == [(1, 1.5), (3, 1.5)]

        # lists of numbers are histograms
        assert accumulator.Tags()["histograms"] == ["ray/tune/weights"]
        histograms = accumulator.Histograms("ray/tune/weights")
        assert [h.step for h in histograms] == [1, 2, 3]
        last = histograms[-1].histogram_value
        assert (last.num, last.min, last.max) == (3, min(x, 3.0), max(x, 6.0))
        assert last.sum == pytest.approx(x + 3 + 6)

        content = hparams_content(accumulator)
        assert set(content) == {
            "_hparams_/experiment",
            "_hparams_/session_start_info",
            "_hparams_/session_end_info",
        }
        assert session_hparams(content) == {
            "x": x,
            "model/layers": 3.0,
            "model/act": "relu",
            "model/bn": True,
            "shape": "[64, 32]",
        }
        metrics = {m.name.tag for m in content["_hparams_/experiment"].experiment.metric_infos}
        assert "ray/tune/loss" in metrics and "ray/tune/nested/acc" in metrics
        assert "ray/tune/maybe" in metrics
        assert "ray/tune/training_iteration" not in metrics
        status = content["_hparams_/session_end_info"].session_end_info.status
        assert status == api_pb2.STATUS_SUCCESS


def test_failed_trial_keeps_its_scalars_and_reports_failure(tmp_path):
    analysis = run(
        fails_at_three,
        tmp_path,
        config={"lr": 0.1},
        callbacks=["tensorboard"],
        raise_on_failed_trial=False,
    )
    (trial,) = analysis.trials
    assert trial.status == "ERROR"
    accumulator = read(trial)
    assert scalars(accumulator, "ray/tune/loss") == [(1, 1.0), (2, 2.0)]
    content = hparams_content(accumulator)
    assert session_hparams(content) == {"lr": pytest.approx(0.1)}
    status = content["_hparams_/session_end_info"].session_end_info.status
    assert status == api_pb2.STATUS_FAILURE


def test_retried_trial_appends_to_its_event_file(tmp_path):
    analysis = run(
        retried,
        tmp_path,
        config={"marker_dir": str(tmp_path), "i": tune.grid_search([0, 1])},
        max_failures=1,
        callbacks=["tensorboard"],
    )
    for trial in analysis.trials:
        assert trial.status == "TERMINATED" and trial.num_failures == 1
        assert len(event_files(trial)) == 1
        # The retry starts again at iteration 1: TensorBoard drops the first
        # attempt's points from there on, as for any restarted writer.
        assert scalars(read(trial), "ray/tune/loss") == [(1, 1.0), (2, 2.0), (3, 3.0)]


def test_names_and_classes_resolve_in_callbacks(tmp_path):
    from tunekit_tensorboard import TBXLoggerCallback

    assert tune.logger.TBXLoggerCallback is TBXLoggerCallback
    for name, entry in (("by-name", "tensorboard"), ("by-class", TBXLoggerCallback)):
        analysis = run(curves, tmp_path, name=name, config={"x": 1.0}, callbacks=[entry])
        (trial,) = analysis.trials
        assert [value for _, value in scalars(read(trial), "ray/tune/loss")] == pytest.approx(
            [1.0, 0.5, 1 / 3], rel=1e-6
        )


def test_tuner_run_config_callbacks_by_name(tmp_path):
    tuner = tune.Tuner(
        curves,
        param_space={"x": 4.0},
        run_config=tune.RunConfig(
            name="tuner", storage_path=str(tmp_path), callbacks=["tensorboard"], verbose=0
        ),
    )
    (result,) = list(tuner.fit())
    accumulator = EventAccumulator(result.path)
    accumulator.Reload()
    assert [step for step, _ in scalars(accumulator, "ray/tune/loss")] == [1, 2, 3]


def test_unknown_callback_name_is_a_clear_error(tmp_path):
    with pytest.raises(UnknownPluginError) as caught:
        run(curves, tmp_path, config={"x": 1.0}, callbacks=["tensorbord"])
    message = str(caught.value)
    assert "Unknown callback 'tensorbord'" in message
    assert "tensorboard" in message and "json" in message  # the installed names, both groups
    assert "Did you mean 'tensorboard'?" in message


def test_missing_plugin_names_its_distribution(monkeypatch):
    import sys

    import tunekit.logger

    monkeypatch.delitem(tunekit.logger.__dict__, "TBXLoggerCallback", raising=False)
    monkeypatch.setitem(sys.modules, "tunekit_tensorboard", None)
    with pytest.raises(ImportError, match="tunekit-tensorboard"):
        tunekit.logger.TBXLoggerCallback  # noqa: B018


def test_logger_survives_pickling():
    from tunekit_tensorboard import TBXLoggerCallback

    callback = TBXLoggerCallback()
    callback.flush_interval_s = 1.0
    copy = pickle.loads(pickle.dumps(callback))
    assert isinstance(copy, TBXLoggerCallback) and copy.flush_interval_s == 1.0
    assert math.isclose(TBXLoggerCallback.flush_interval_s, 5.0)
