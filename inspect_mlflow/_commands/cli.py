"""The ``inspect-mlflow`` command line.

Each subcommand lives in a ``register_<name>(subparsers)`` function that adds its parser
and sets ``handler`` (``(args) -> exit code``) as a default, so a new command is one
function plus one line in :data:`COMMANDS`. :func:`main` never lets a traceback reach the
user: an unexpected failure prints one line and exits 2.

Exit codes: 0 success, 1 the input is invalid (for ``check``: the mapping has problems),
2 the command itself failed (bad usage, unexpected error).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "COMMANDS",
    "build_parser",
    "main",
    "register_check",
    "register_compare",
    "register_demo",
    "register_import",
    "register_replay",
]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_ERROR = 2


def _effective_yaml(effective: Any) -> str:
    """The merged mapping as YAML, keys in mapping order, long strings kept on one line."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump(
        effective,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=10_000,
    )


def _summary(compiled: Any) -> str:
    """One line: run kinds and how many rules each lifecycle point has."""
    rules = compiled.rules
    total = sum(len(point_rules) for point_rules in rules.values())
    per_point = ", ".join(f"{point} {len(point_rules)}" for point, point_rules in rules.items())
    kinds = ", ".join(compiled.runs)
    return f"{total} rules ({per_point or 'none'}); run kinds: {kinds}"


def _run_check(args: argparse.Namespace) -> int:
    from inspect_mlflow._mapping import MappingInvalid, load_mapping, resolve_mapping_path

    if args.format == "json":
        return _run_check_json(args)
    targets: list[Path | None] = list(args.files) or [None]
    status = EXIT_OK
    for target in targets:
        shown = str(target) if target is not None else str(resolve_mapping_path(None))
        try:
            compiled = load_mapping(target)
        except MappingInvalid as invalid:
            for error in invalid.errors:
                print(error)
            count = len(invalid.errors)
            print(f"{shown}: INVALID, {count} problem{'s' if count != 1 else ''}")
            status = EXIT_INVALID
            continue
        if args.print_effective:
            if len(targets) > 1:
                print(f"# {shown}")
            sys.stdout.write(_effective_yaml(compiled.effective))
        label = " + ".join(compiled.files) if len(compiled.files) > 1 else shown
        # Keep stdout pure YAML when it carries the effective mapping.
        out = sys.stderr if args.print_effective else sys.stdout
        print(f"{label}: OK, {_summary(compiled)}", file=out)
        if args.log is not None:
            report = _dry_run(compiled, args.log)
            print(file=out)
            out.write(report.to_text())
            status = max(status, EXIT_INVALID if report.failed else EXIT_OK)
    return status


def _dry_run(compiled: Any, log: Path) -> Any:
    """Replay ``log`` through ``compiled`` with the environment's artifact/trace switches."""
    from inspect_mlflow._commands.dryrun import dry_run
    from inspect_mlflow._config import Settings, SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError:
        settings = Settings(tracking_uri=None)
    return dry_run(
        compiled,
        log,
        log_artifacts=settings.log_artifacts,
        traces=settings.traces,
        max_spans=settings.trace_max_spans,
    )


def _run_check_json(args: argparse.Namespace) -> int:
    """``check --format json``: one JSON document on stdout, one entry per mapping file."""
    import json

    from inspect_mlflow._mapping import MappingInvalid, load_mapping, resolve_mapping_path

    entries: list[dict[str, Any]] = []
    status = EXIT_OK
    for target in list(args.files) or [None]:
        shown = str(target) if target is not None else str(resolve_mapping_path(None))
        entry: dict[str, Any] = {"file": shown}
        try:
            compiled = load_mapping(target)
        except MappingInvalid as invalid:
            entry.update(valid=False, errors=[str(e) for e in invalid.errors])
            entries.append(entry)
            status = EXIT_INVALID
            continue
        entry.update(valid=True, errors=[], files=list(compiled.files), summary=_summary(compiled))
        if args.print_effective:
            entry["effective"] = compiled.effective
        if args.log is not None:
            report = _dry_run(compiled, args.log)
            entry["dry_run"] = report.to_dict()
            status = max(status, EXIT_INVALID if report.failed else EXIT_OK)
        entries.append(entry)
    json.dump({"mappings": entries}, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")
    return status


def register_check(subparsers: Any) -> None:
    """Add ``inspect-mlflow check``."""
    parser = subparsers.add_parser(
        "check",
        help="validate mapping files",
        description=(
            "Validate mapping files: strict YAML, the mapping schema, layering (extends/"
            "remove) and every JMESPath expression (syntax, function names, argument "
            "counts, declared counters, series and run kinds, MLflow-safe fixed keys). "
            "Every problem is printed as FILE:LINE:COL: json.path: message (hint: ...). "
            "With no FILE, checks the mapping the hook would use: $INSPECT_MLFLOW_MAPPING "
            "when set, else the built-in default."
        ),
        epilog=(
            "Exit status: 0 all valid, 1 a mapping is invalid (or, with --log, the dry run "
            "found a likely typo or a problem), 2 the check itself failed (for example an "
            "unreadable log)."
        ),
    )
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="mapping YAML file(s) to check (default: the effective mapping)",
    )
    parser.add_argument(
        "--print-effective",
        action="store_true",
        help="print the merged mapping (after extends/remove) as YAML on stdout",
    )
    parser.add_argument(
        "--log",
        type=Path,
        default=None,
        metavar="LOG",
        help=(
            "dry run: replay this Inspect log (.eval or .json) through the mapping and print, "
            "per run, what would be written (tags, params, metrics with steps, tables, "
            "artifacts, traces and feedback) and what looks wrong; nothing is sent to MLflow"
        ),
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="output format (json: one document on stdout, for machines)",
    )
    parser.set_defaults(handler=_run_check)


def _run_import(args: argparse.Namespace) -> int:
    from inspect_mlflow._commands.import_command import run_import_command
    from inspect_mlflow._writer.quickack import enable_quick_acks

    enable_quick_acks()  # the command's process is ours: its requests need not wait 40 ms
    return run_import_command(args)


def register_import(subparsers: Any) -> None:
    """Add ``inspect-mlflow import`` (the import itself is ``_commands.importer``)."""
    parser = subparsers.add_parser(
        "import",
        help="import existing Inspect eval logs into MLflow",
        description=(
            "Replay existing Inspect eval logs (.eval and .json files, or directories "
            "searched recursively) through the mapping into MLflow, as if they had been "
            "logged live: same runs, tags, params, metrics and steps, tables, artifacts and "
            "traces, with the times from the logs. A log whose runs are already in the "
            "experiment is skipped unless --force; an unreadable log is reported and the "
            "others continue. Settings not given as options come from the environment, as "
            "for the hook."
        ),
        epilog=(
            "Exit status: 0 every log imported or skipped, 1 a log or the mapping could not "
            "be read, 2 some writes did not reach MLflow (or the settings are invalid)."
        ),
    )
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="log files or directories"
    )
    parser.add_argument(
        "--mapping",
        type=Path,
        default=None,
        metavar="FILE",
        help="mapping file (default: $INSPECT_MLFLOW_MAPPING, else the built-in default)",
    )
    parser.add_argument(
        "--experiment",
        default=None,
        metavar="NAME",
        help="experiment (default: $MLFLOW_EXPERIMENT_NAME, else inspect_ai)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        metavar="URI",
        help="where to log (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="import logs that are already in the experiment again, as new runs",
    )
    parser.set_defaults(handler=_run_import)


def register_demo(subparsers: Any) -> None:
    """Add ``inspect-mlflow demo`` (the offline demo eval lives in ``_demo``)."""
    from inspect_mlflow._commands.demo import register

    register(subparsers)


def _run_replay(args: argparse.Namespace) -> int:
    from inspect_mlflow._commands.replay import replay
    from inspect_mlflow._config import SettingsError, resolve_spool_dir
    from inspect_mlflow._writer.quickack import enable_quick_acks
    from inspect_mlflow._writer.spool import SpoolError

    enable_quick_acks()

    try:
        directory = args.spool_dir or resolve_spool_dir()
    except SettingsError as error:
        print(f"inspect-mlflow replay: {error}", file=sys.stderr)
        return EXIT_ERROR
    if directory.exists() and not directory.is_dir():
        print(f"inspect-mlflow replay: {directory} is not a directory", file=sys.stderr)
        return EXIT_ERROR
    try:
        results = replay(directory, tracking_uri=args.tracking_uri)
    except SpoolError as error:
        print(f"inspect-mlflow replay: {error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK if all(r.status == "delivered" for r in results) else EXIT_INVALID


def register_replay(subparsers: Any) -> None:
    """Add ``inspect-mlflow replay``."""
    parser = subparsers.add_parser(
        "replay",
        help="deliver writes that were spooled while MLflow was unreachable",
        description=(
            "Deliver the write operations an evaluation could not send to MLflow in time "
            "(saved as spool files), oldest first. Runs are found by their logical key "
            "before being created and metric points already stored are skipped, so "
            "replaying twice duplicates nothing. Delivered files are removed; operations "
            "MLflow refuses for good stay in their file and are listed. Credentials come "
            "from the usual MLflow variables (MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN)."
        ),
        epilog=(
            "Exit status: 0 everything delivered (or nothing to do), 1 something was kept "
            "(unreachable server, refused operations, a file still being written), 2 the "
            "replay itself failed."
        ),
    )
    parser.add_argument(
        "--spool-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="spool directory (default: $INSPECT_MLFLOW_SPOOL_DIR, else the per-user cache)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        metavar="URI",
        help="deliver to this tracking URI instead of the one recorded in each file",
    )
    parser.set_defaults(handler=_run_replay)


def register_compare(subparsers: Any) -> None:
    """Add ``inspect-mlflow compare`` (the paired statistics live in ``_compare``)."""
    from inspect_mlflow._commands.compare.command import register

    register(subparsers)


COMMANDS: list[Callable[[Any], None]] = [
    register_demo,
    register_check,
    register_import,
    register_replay,
    register_compare,
]
"""Every ``register_<name>`` function; the order is the order in ``--help``."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    from inspect_mlflow._version import __version__

    parser = argparse.ArgumentParser(
        prog="inspect-mlflow",
        description=(
            "Tools for inspect-mlflow, which logs Inspect AI evaluations to MLflow "
            "through a declarative YAML + JMESPath mapping."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it).

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors
        return exit_.code if isinstance(exit_.code, int) else EXIT_ERROR
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        print("inspect-mlflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the promise: one line, never a traceback
        print(f"inspect-mlflow {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
