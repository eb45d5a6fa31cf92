"""The ``tunekit`` command line.

``tunekit plugins list [--json] [--kind KIND] [--import]`` lists the installed
plugins from distribution metadata, importing none of them (unless ``--import``
asks to check that they import). Run it as ``tunekit ...`` or
``python -m tunekit_core.cli ...``.

Each command is a function ``_add_<command>(subparsers)`` that adds its parser
and sets ``handler`` (a function taking the parsed arguments and returning the
exit status); add a command by writing one and listing it in ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from tunekit_core import cli_results, cli_server, registry

__all__ = ["build_parser", "main"]


def _add_plugins(subparsers: argparse._SubParsersAction) -> None:
    plugins = subparsers.add_parser(
        "plugins",
        help="inspect installed plugins",
        description="Inspect the plugins installed through tunekit's entry-point groups.",
    )
    plugins.set_defaults(handler=lambda args: _print_help(plugins))
    actions = plugins.add_subparsers(title="actions", metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="list installed plugins",
        description=(
            "List installed plugins (name, kind, distribution, version, whether it loads). "
            "Nothing is imported unless --import is given: 'loads' then means the plugin "
            "imports, otherwise that its module is found and its requirements are installed."
        ),
    )
    listing.add_argument("--json", action="store_true", help="print the records as JSON")
    listing.add_argument(
        "--kind",
        choices=registry.KINDS,
        help="only plugins of this kind",
    )
    listing.add_argument(
        "--import",
        dest="import_plugins",
        action="store_true",
        help="import each plugin to check it loads (exit status 1 if one fails)",
    )
    listing.set_defaults(handler=_plugins_list)


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_plugins,
    cli_results.add_ls,
    cli_results.add_best,
    cli_server.add_dashboard,
    cli_server.add_trials,
]


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def build_parser() -> argparse.ArgumentParser:
    """The ``tunekit`` argument parser with every command."""
    parser = argparse.ArgumentParser(
        prog="tunekit",
        description="tunekit: hyperparameter tuning with Ray Tune's semantics.",
    )
    parser.set_defaults(handler=lambda args: _print_help(parser))
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add_command in _COMMANDS:
        add_command(subparsers)
    return parser


def _plugins_list(args: argparse.Namespace) -> int:
    records = registry.list_plugins(args.kind, import_plugins=args.import_plugins)
    if args.json:
        json.dump([r.to_dict() for r in records], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_plugin_table(records, args.kind)
    if args.import_plugins and any(not r.loads for r in records):
        return 1
    return 0


def _print_plugin_table(records: Sequence[registry.PluginInfo], kind: str | None) -> None:
    if not records:
        what = f"{kind} plugins" if kind else "tunekit plugins"
        print(
            f"No {what} are installed. Install the standard ones with "
            f"`pip install tunekit[standard]`."
        )
        return
    header = ("NAME", "KIND", "DISTRIBUTION", "VERSION", "LOADS")
    rows = []
    for record in records:
        loads = "yes" if record.loads else "no"
        if not record.active:
            loads += " (shadowed)"
        rows.append((record.name, record.kind, record.distribution, record.version, loads))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    notes = [r for r in records if r.problem or not r.active]
    if notes:
        print()
    for record in notes:
        label = f"{record.kind} {record.name!r} ({record.distribution} {record.version})"
        if record.problem:
            print(f"{label}: does not load: {record.problem}")
        if not record.active:
            print(f"{label}: shadowed by another distribution registering the same name")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tunekit`` command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:  # e.g. `tunekit plugins list | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
