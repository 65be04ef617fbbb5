"""The dry run's report: the runs a mapping would write for one log, and what looks wrong.

One dataclass, :class:`DryRunReport`, read three ways: as data (the Python API), as JSON
(``check --log --format json``) and as the text a person reads (``check --log``), which
puts what to fix first (likely typos, problems), then each run, then what was merely
empty on this log.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inspect_mlflow._commands.dryrun_plan import Finding, RunPlan, iso_time, short_text

__all__ = ["DryRunReport", "short_names"]


@dataclass
class DryRunReport:
    """The runs a mapping would write for one log, and what looks wrong."""

    mapping: list[str]
    log: str
    runs: list[RunPlan]
    problems: list[Finding]
    gave_nothing: list[dict[str, str]]
    """``{"where", "expression", "absent"}`` of expressions that never gave a value;
    ``absent`` is the field this log did not have (or had empty), "" when every field it
    reads was there (a condition or function gave nothing)."""
    never_applied: list[dict[str, str]]
    """``{"where", "rule", "reason"}`` of rules that wrote nothing because they never ran."""
    typos: list[dict[str, str]] = field(default_factory=list)
    """``{"where", "expression", "path", "message"}`` of fields no payload of the point has."""
    short: dict[str, str] = field(default_factory=dict, repr=False)
    """Mapping file -> the short name the text report uses for it (``default.yaml``)."""

    @property
    def failed(self) -> bool:
        """Whether ``check --log`` should exit 1: a likely typo or a problem."""
        return bool(self.typos or self.problems)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, for ``check --format json``."""
        return {
            "mapping": self.mapping,
            "log": self.log,
            "runs": [run.to_dict() for run in self.runs],
            "typos": self.typos,
            "problems": [p.to_dict() for p in self.problems],
            "gave_nothing": self.gave_nothing,
            "never_applied": self.never_applied,
        }

    def to_text(self) -> str:
        """The human report: per run what would be written, then what to look at."""
        return "\n".join(_text_lines(self)) + "\n"


# -- text --------------------------------------------------------------------------------


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _metric_line(key: str, points: list[tuple[int, float]], width: int) -> str:
    ordered = sorted(points, key=lambda p: p[0])
    first, last = ordered[0], ordered[-1]
    if len(points) == 1:
        where, shown = f"step {first[0]}", _number(first[1])
    else:
        where = f"steps {first[0]}..{last[0]} ({len(points)} points)"
        shown = f"first {_number(first[1])}, last {_number(last[1])}"
    return f"    {key:<{width}}  {where}: {shown}"


def _run_lines(run: RunPlan) -> Iterator[str]:
    """One run: a header line, then only the sections that have something."""
    head = f"run {run.key}  name {run.name!r}  kind {run.kind}"
    if run.parent:
        head += f"  parent {run.parent}"
    yield f"{head}  -> {run.status or 'left open'}"
    yield f"  time: {iso_time(run.start_time_ms)} -> {iso_time(run.end_time_ms)}"
    for title, values in (("tags", run.tags), ("params", run.params)):
        if values:
            yield f"  {title} ({len(values)})"
            yield from (f"    {k} = {short_text(v)}" for k, v in values.items())
    for model in run.models:
        yield f"  model input: LoggedModel {model['name']!r} (model {model['key']})"
        for title in ("tags", "params"):
            yield from (f"    {title[:-1]} {k} = {short_text(v)}" for k, v in model[title].items())
    for data in run.datasets:
        yield (
            f"  dataset input: {data['name']!r} digest {data['digest']}  "
            f"context {data['context']}  source {data['source']}  profile {data['profile']}"
        )
    if run.metrics:
        points = sum(len(p) for p in run.metrics.values())
        width = min(max(len(k) for k in run.metrics), 48)
        yield f"  metrics ({len(run.metrics)} keys, {points} points)"
        yield from (_metric_line(k, p, width) for k, p in sorted(run.metrics.items()))
    for link, keys in run.links.items():
        yield f"  metrics for {link}: {len(keys)} keys ({short_text(', '.join(keys))})"
    if run.tables:
        yield f"  tables ({len(run.tables)})"
    for path, table in run.tables.items():
        yield f"    {path}: {table['rows']} rows, {len(table['columns'])} columns"
        for number, row in enumerate(table["first_rows"], 1):
            yield f"      row {number}: {short_text(row)}"
    if run.records:
        yield f"  records ({len(run.records)})"
    for path, records in run.records.items():
        yield f"    {path}: {records['count']} records"
        for number, record in enumerate(records["first"], 1):
            yield f"      record {number}: {short_text(record)}"
    if run.artifacts:
        yield f"  artifacts ({len(run.artifacts)})"
    for path, info in run.artifacts.items():
        yield f"    {path}: {info['chars']} characters of JSON"
    traces = run.traces
    if traces["count"]:
        feedback = ", ".join(f"{name} {n}" for name, n in sorted(traces["feedback"].items()))
        yield (
            f"  traces ({traces['count']}): {traces['spans']} spans "
            f"(at most {traces['max_spans']} per trace); feedback: {feedback or 'none'}"
        )
        for model, n in traces.get("models", {}).items():
            yield f"    for model {model} (trace metadata mlflow.modelId): {n}"
    first = traces.get("first")
    if first:
        assessments = ", ".join(
            f"{f['name']}={short_text(f['value'], 20)}" for f in first["feedback"]
        )
        yield (
            f"    first: {first['name']!r} {first['status']}, {first['spans']} spans, "
            f"feedback {assessments or 'none'}"
        )


def short_names(files: Sequence[str]) -> dict[str, str]:
    """Mapping file -> its name in the text report: ``default.yaml``, not a site-packages path.

    Its base name, unless two files share it; then its path relative to the current
    directory when inside it, else the whole path.
    """
    bases = Counter(os.path.basename(f) for f in files)
    out: dict[str, str] = {}
    for file in files:
        base = os.path.basename(file)
        if bases[base] == 1:
            out[file] = base
            continue
        try:
            relative = os.path.relpath(file)
        except ValueError:
            relative = file
        out[file] = file if relative.startswith("..") else relative
    return out


def _place(where: str, short: Mapping[str, str]) -> str:
    """``where`` with its mapping file by its short name."""
    for file, name in short.items():
        if where.startswith(file + ":"):
            return name + where[len(file) :]
    return where


def _places(wheres: Sequence[str], short: Mapping[str, str]) -> str:
    """``default.yaml:36:28, 68:28, 94:26``: file:line:col, the file only when it changes."""
    out: list[str] = []
    last = None
    for where in wheres:
        place = _place(where, short).split(": ", 1)[0]
        file, _, position = place.rpartition(":")
        file, _, line = file.rpartition(":")
        if not file:
            out.append(place)
            continue
        out.append(f"{line}:{position}" if file == last else place)
        last = file
    return ", ".join(out)


def _empty_groups(report: DryRunReport) -> list[tuple[str, list[str]]]:
    """Expressions that gave nothing, grouped by the field the log did not have."""
    groups: dict[str, list[str]] = {}
    for entry in report.gave_nothing:
        groups.setdefault(entry.get("absent", ""), []).append(entry["where"])
    order = {file: number for number, file in enumerate(report.mapping)}

    def position(where: str) -> tuple[int, ...]:
        for file, number in order.items():
            if where.startswith(file + ":"):
                line, _, col = where[len(file) + 1 :].split(":", 2)[:2] + [""]
                return (number, int(line) if line.isdigit() else 0)
        return (len(order), 0)

    for wheres in groups.values():
        wheres.sort(key=position)
    named = sorted(((k, v) for k, v in groups.items() if k), key=lambda kv: -len(kv[1]))
    return named + [("", groups[""])] if "" in groups else named


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _text_lines(report: DryRunReport) -> Iterator[str]:
    """Findings first (typos, then problems), the runs, then what was merely empty."""
    short = report.short
    mapping = " + ".join(report.mapping)
    yield f"Dry run of {mapping} on {report.log} (nothing is written)"
    yield ""
    if report.typos:
        yield (
            f"likely typos ({len(report.typos)}): fields no Inspect payload of that point has, "
            "so they never give a value"
        )
        for typo in report.typos:
            yield f"  {_place(typo['where'], short)}: {typo['message']}"
            yield f"      in: {typo['expression']}"
    yield f"problems ({len(report.problems)})"
    for problem in report.problems:
        times = f" (x{problem.count})" if problem.count > 1 else ""
        yield f"  {problem.kind}: {_place(problem.where, short)}: {problem.message}{times}"
    for run in report.runs:
        yield ""
        yield from _run_lines(run)
    yield ""
    groups = _empty_groups(report)
    if report.gave_nothing:
        yield (
            f"empty on this log ({_plural(len(report.gave_nothing), 'expression')}), by the "
            "field this log does not have (or has empty)"
        )
    for absent, wheres in groups:
        label = absent or "every field there (a condition or a function gave nothing)"
        yield f"  {label}: {len(wheres)} at {_places(wheres, short)}"
    if report.never_applied:
        yield f"rules that never applied ({len(report.never_applied)})"
    for rule in report.never_applied:
        place = _place(rule["where"], short).split(": ", 1)[0]
        yield f"  {place} ({rule['rule']}): {rule['reason']}"
    yield ""
    yield (
        f"{_plural(len(report.typos), 'likely typo')}, {_plural(len(report.problems), 'problem')}"
        f"; {_plural(len(report.gave_nothing), 'expression')} empty on this log, "
        f"{_plural(len(report.never_applied), 'rule')} never applied"
        + (" (see the top)" if report.failed else "")
    )
