"""``tunekit dashboard`` and ``tunekit trials``: the web dashboard and the control API
from the shell.

``tunekit dashboard DIR`` serves the dashboard of an experiment directory (running
or finished, read-only). ``tunekit trials list|get|add|stop|stop-experiment``
talk to the control server of a live run (``run(server_port=PORT)``) through
:class:`~tunekit_core.client.TuneClient`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["add_dashboard", "add_trials"]

_ADDRESS_ENV = "TUNEKIT_SERVER_ADDRESS"


# --------------------------------------------------------------------------- dashboard


def add_dashboard(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="serve the web dashboard of an experiment directory",
        description=(
            "Serve a web page for an experiment directory, running or finished: the trials "
            "table, learning curves, best-so-far and parallel coordinates. It updates while "
            "the run is going. Serves until Ctrl+C."
        ),
    )
    parser.add_argument("directory", metavar="DIR", help="the experiment directory")
    parser.add_argument(
        "--host",
        help="address to listen on (default: $TUNEKIT_SERVER_HOST or 127.0.0.1); any "
        "non-loopback address needs a token",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port to listen on (default: 0, a free port)"
    )
    parser.add_argument(
        "--token",
        help="secret every request must carry (default: $TUNEKIT_SERVER_TOKEN); open the "
        "page as URL?token=TOKEN",
    )
    parser.add_argument("--metric", help="the metric the page shows first")
    parser.add_argument("--mode", choices=("min", "max"), help="whether lower or higher is better")
    parser.set_defaults(handler=_dashboard)


def _dashboard(args: argparse.Namespace) -> int:
    from tunekit_core.server import DEFAULT_HOST, HOST_ENV, TOKEN_ENV, serve_directory

    host = args.host or os.environ.get(HOST_ENV) or DEFAULT_HOST
    token = args.token or os.environ.get(TOKEN_ENV) or None
    try:
        server = serve_directory(
            args.directory, host=host, port=args.port, token=token, metric=args.metric,
            mode=args.mode,
        )
    except (ValueError, OSError) as exc:
        print(f"tunekit dashboard: {exc}", file=sys.stderr)
        return 2
    note = " (add ?token=<your token> to the address)" if token else ""
    print(f"Serving the dashboard of {os.path.abspath(args.directory)}", flush=True)
    print(f"Open {server.url}{note}  -- press Ctrl+C to stop.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("Stopped.", flush=True)
    return 0


# --------------------------------------------------------------------------- trials


def add_trials(subparsers: argparse._SubParsersAction) -> None:
    trials = subparsers.add_parser(
        "trials",
        help="list, add and stop the trials of a running experiment",
        description=(
            "Talk to the control server of a running experiment, started with "
            "tunekit.run(..., server_port=PORT)."
        ),
    )
    trials.set_defaults(handler=lambda args: _help(trials))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--address",
        default=os.environ.get(_ADDRESS_ENV),
        help=f"the server, HOST:PORT (default: ${_ADDRESS_ENV})",
    )
    common.add_argument(
        "--token", help="the server's token (default: $TUNEKIT_SERVER_TOKEN)"
    )
    common.add_argument("--json", action="store_true", help="print the server's JSON answer")
    actions = trials.add_subparsers(title="actions", metavar="ACTION")

    listing = actions.add_parser("list", parents=[common], help="list the trials")
    listing.set_defaults(handler=_run(lambda client, args: client.get_all_trials(), _print_trials))

    get = actions.add_parser("get", parents=[common], help="show one trial as JSON")
    get.add_argument("trial_id", metavar="ID")
    get.set_defaults(handler=_run(lambda client, args: client.get_trial(args.trial_id), _print_json))

    add = actions.add_parser(
        "add",
        parents=[common],
        help="add trials with a config",
        description=(
            'Add trials to the run. --config is a JSON object (or @FILE); {"grid_search": '
            "[...]} values expand into one trial per combination."
        ),
    )
    add.add_argument("--config", required=True, help="the config as JSON, or @FILE")
    add.add_argument("--name", help="the experiment to add to (default: the run's first)")
    add.add_argument("--num-samples", type=int, default=1, help="repeat each variant N times")
    add.set_defaults(handler=_run(_add, _print_trials))

    stop = actions.add_parser("stop", parents=[common], help="stop a trial")
    stop.add_argument("trial_id", metavar="ID")
    stop.set_defaults(handler=_run(lambda client, args: client.stop_trial(args.trial_id), _print_trials))

    stop_all = actions.add_parser(
        "stop-experiment", parents=[common], help="end the run (its trials end TERMINATED)"
    )
    stop_all.set_defaults(handler=_run(lambda client, args: client.stop_experiment(), _print_trials))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


class _UsageError(Exception):
    pass


def _add(client: Any, args: argparse.Namespace) -> dict:
    text = args.config
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise _UsageError(f"Cannot read the config file {text[1:]!r}: {exc}") from None
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise _UsageError(f"--config is not valid JSON ({exc}): {args.config!r}") from None
    if not isinstance(config, dict):
        raise _UsageError('--config must be a JSON object, e.g. \'{"lr": 0.1}\'.')
    spec: dict[str, Any] = {"config": config}
    if args.num_samples != 1:
        spec["num_samples"] = args.num_samples
    return client.add_trial(args.name, spec)


def _run(call, show):
    def handler(args: argparse.Namespace) -> int:
        from tunekit_core.client import TuneClient
        from tunekit_core.errors import TuneError

        if not args.address:
            print(
                f"tunekit trials: pass --address HOST:PORT (or set {_ADDRESS_ENV}), the "
                "address run(server_port=...) printed.",
                file=sys.stderr,
            )
            return 2
        try:
            client = TuneClient(args.address, token=args.token)
            answer = call(client, args)
        except _UsageError as exc:
            print(f"tunekit trials: {exc}", file=sys.stderr)
            return 2
        except (TuneError, ValueError) as exc:
            print(f"tunekit trials: {exc}", file=sys.stderr)
            return 1
        if args.json:
            _print_json(answer)
        else:
            show(answer)
        return 0

    return handler


def _print_json(answer: dict) -> None:
    json.dump(answer, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _print_trials(answer: dict) -> None:
    trials = answer.get("trials") or []
    if not trials:
        print("No trials.")
        return
    header = ("ID", "STATUS", "ITER", "NAME", "PARAMS")
    rows = []
    for info in trials:
        result = info.get("result") or {}
        iteration = result.get("training_iteration")
        params = info.get("evaluated_params") or info.get("config") or {}
        rows.append(
            (
                str(info.get("id")),
                str(info.get("status")),
                "" if iteration is None else str(iteration),
                str(info.get("name")),
                ", ".join(f"{k}={_short(v)}" for k, v in params.items()),
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        print("  ".join(cells).rstrip())


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."
