"""The benchmark's printed report: the detail tables, the summary of issue 20, the targets.

The first two tables (wall, requests, memory, loop holds; where the CPU went) keep their
columns, which ``tests/e2e/test_benchmark_smoke.py`` reads. The summary after them puts, per
row, the figures the targets are about side by side, for our hook and, with
``--compare-pypi``, the other MLflow integration.
"""

from __future__ import annotations

from typing import Any

from _cases import TRACE_KINDS, Case

TARGET_RATIO_CALLS = 1.01
"""Wall ratio on/off for evals whose model calls take time (1 s)."""
TARGET_RATIO_CPU = 1.30
"""Wall ratio on/off for the CPU-bound mock eval against a local server."""
TARGET_WAIT = 0.25
"""Seconds the hook may add to the wait after the last sample."""
TARGET_OUR_CPU_MS = 4.0
"""Eval process plus delivery process CPU per sample (ms), start-up once left out."""
TARGET_REQUESTS = 1.05
"""HTTP requests per sample, traces included (the floor: one ``start_trace`` each)."""
TARGET_MEMORY = 1.05
"""Peak memory of the eval's process, hook on over off."""
TARGET_P99_MS = 1.0

HEADER = (
    "| samples | latency ms | eval s off | eval s on | ratio on/off | requests | "
    "trace requests | trace req/sample | peak MB off | peak MB on | memory on/off | "
    "hold p50 ms | hold p99 ms | hold max ms |"
)

CPU_HEADER = (
    "| samples | latency ms | eval process CPU s off | eval process CPU s on | "
    "delivery process CPU s | server CPU s off | server CPU s on | server ms/sample | "
    "delivery ms/sample | delivery peak MB | memory on/off with delivery |"
)

SUMMARY_HEADER = (
    "| eval | integration | samples | latency ms | ratio on/off | pairs | "
    "wait after last s (off) | wait added s | eval CPU ms/sample | "
    "delivery CPU ms/sample | ours ms/sample | server ms/sample | requests/sample | "
    "eval memory on/off | delivery peak MB |"
)


def _cell(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def print_table(header: str, rows: list[str]) -> None:
    """A Markdown table: the header, its separator line, the rows."""
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for line in rows:
        print(line)


def row(case: Case) -> str:
    traces = case.requests(TRACE_KINDS)
    off_mb = case.median("off", "maxrss_kb") / 1024
    on_mb = case.median("on", "maxrss_kb") / 1024
    return _line(
        [
            f"{case.samples}",
            f"{case.latency_ms:g}",
            f"{case.median('off', 'wall'):.2f}",
            f"{case.median('on', 'wall'):.2f}",
            f"{case.ratio():.3f}",
            f"{case.requests():g}",
            f"{traces:g}",
            f"{traces / case.samples:.2f}",
            f"{off_mb:.0f}",
            f"{on_mb:.0f}",
            f"{on_mb / off_mb:.2f}",
            f"{case.holds('p50'):.3f}",
            f"{case.holds('p99'):.3f}",
            f"{case.holds('max'):.1f}",
        ]
    )


def cpu_row(case: Case) -> str:
    """Where the CPU of the on runs went: eval process, delivery process, server."""
    delivery = case.known_median("on", "delivery_cpu")
    server_off = case.known_median("off", "server_cpu")
    server_on = case.known_median("on", "server_cpu")
    per_sample = None
    if server_on is not None and server_off is not None:
        per_sample = (server_on - server_off) / case.samples * 1000
    delivery_mb = case.known_median("on", "delivery_maxrss_kb")
    with_delivery = None
    if delivery_mb is not None:
        with_delivery = (case.median("on", "maxrss_kb") + delivery_mb) / case.median(
            "off", "maxrss_kb"
        )
    return _line(
        [
            f"{case.samples}",
            f"{case.latency_ms:g}",
            f"{case.median('off', 'cpu'):.2f}",
            f"{case.median('on', 'cpu'):.2f}",
            _cell(delivery),
            _cell(server_off),
            _cell(server_on),
            _cell(per_sample, 1),
            _cell(None if delivery is None else delivery / case.samples * 1000, 1),
            _cell(None if delivery_mb is None else delivery_mb / 1024, 0),
            _cell(with_delivery),
        ]
    )


def _range(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}" if values else ""


def summary_rows(case: Case, startup_cpu: float, pypi_name: str) -> list[str]:
    """Our figures for ``case`` and, when it ran, the other integration's beside them."""
    eval_ms = case.eval_cpu_ms()
    delivery_ms = case.delivery_cpu_ms(startup_cpu)
    delivery_mb = case.known_median("on", "delivery_maxrss_kb")
    wait_off = case.known_median("off", "after_last_sample")
    common = [case.label]
    rows = [
        _line(
            [
                *common,
                "ours",
                f"{case.samples}",
                f"{case.latency_ms:g}",
                f"{case.ratio():.3f}",
                _range(case.ratios()),
                _cell(wait_off),
                _cell(case.wait_added()),
                f"{eval_ms:.2f}",
                _cell(delivery_ms),
                _cell(None if delivery_ms is None else eval_ms + delivery_ms),
                _cell(case.server_ms(), 1),
                f"{case.all_requests() / case.samples:.3f}",
                f"{case.memory():.3f}",
                _cell(None if delivery_mb is None else delivery_mb / 1024, 0),
            ]
        )
    ]
    if case.pypi:
        their_ms = case.eval_cpu_ms("pypi")
        rows.append(
            _line(
                [
                    *common,
                    pypi_name,
                    f"{case.samples}",
                    f"{case.latency_ms:g}",
                    f"{case.ratio('pypi'):.3f}",
                    _range(case.ratios("pypi")),
                    _cell(wait_off),
                    _cell(case.wait_added("pypi")),
                    f"{their_ms:.2f}",
                    "",
                    f"{their_ms:.2f}",
                    _cell(case.server_ms("pypi"), 1),
                    f"{case.all_requests('pypi') / case.samples:.3f}",
                    f"{case.memory('pypi'):.3f}",
                    "",
                ]
            )
        )
    return rows


def _targets(case: Case, startup_cpu: float) -> list[tuple[str, bool]]:
    """The issue's targets that apply to this row, each with whether it was met."""
    checks: list[tuple[str, bool]] = []
    ratio = case.ratio()
    if case.model_latency > 0:
        checks.append((f"ratio {ratio:.3f} <= {TARGET_RATIO_CALLS}", ratio <= TARGET_RATIO_CALLS))
        wait = case.wait_added()
        if wait is not None:
            checks.append((f"wait added {wait:.2f} s <= {TARGET_WAIT} s", wait <= TARGET_WAIT))
    elif case.latency_ms == 0:
        checks.append((f"ratio {ratio:.3f} <= {TARGET_RATIO_CPU}", ratio <= TARGET_RATIO_CPU))
    delivery = case.delivery_cpu_ms(startup_cpu)
    if delivery is not None:
        ours = case.eval_cpu_ms() + delivery
        checks.append(
            (
                f"our CPU {ours:.2f} ms/sample (eval {case.eval_cpu_ms():.2f} + delivery "
                f"{delivery:.2f}) <= {TARGET_OUR_CPU_MS}",
                ours <= TARGET_OUR_CPU_MS,
            )
        )
    per_sample = case.all_requests() / case.samples
    checks.append(
        (f"requests {per_sample:.3f}/sample <= {TARGET_REQUESTS}", per_sample <= TARGET_REQUESTS)
    )
    memory = case.memory()
    checks.append((f"eval memory on/off {memory:.3f} <= {TARGET_MEMORY}", memory <= TARGET_MEMORY))
    p99 = case.holds("p99")
    checks.append((f"hook callback p99 {p99:.3f} ms < {TARGET_P99_MS} ms", p99 < TARGET_P99_MS))
    return checks


def _details(case: Case) -> None:
    last = case.on[-1]
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(last["requests_by_kind"].items()))
    worst = ", ".join(f"{k} {v * 1000:.1f}ms" for k, v in last["holds"]["worst"].items())
    print(f"\nN={case.samples}, latency {case.latency_ms:g} ms, {case.label}, last on run:")
    print(f"  requests by kind: {kinds}")
    for endpoint, n in last["requests"].items():
        print(f"    {n:6d}  {endpoint}")
    if case.pypi:
        theirs = ", ".join(f"{k} {n}" for k, n in sorted(case.pypi[-1]["requests_by_kind"].items()))
        print(f"  the other integration's requests by kind: {theirs}")
    print(f"  longest callbacks: {worst}")
    gc_pause = last.get("gc_pause_max") or 0.0
    print(
        f"  longest garbage-collection pause of the eval's process: {gc_pause * 1000:.1f}ms "
        "(left out of the holds: it lands wherever an allocation triggers it)"
    )


def report(
    cases: list[Case],
    pairs: int,
    imported: dict[str, float],
    startup: dict[str, float],
    settings: dict[str, str],
    pypi_name: str,
    server_workers: int | None = None,
) -> None:
    workers = "" if server_workers is None else f" ({server_workers} worker processes)"
    print(
        f"\ninspect-mlflow overhead: demo eval (mock model, one tool call and one answer "
        f"per sample, two scorers), max_samples=20, {pairs} off/on pair(s) "
        "per row, default mapping (tables, artifacts, traces on), real mlflow server "
        f"with --serve-artifacts on 127.0.0.1{workers}"
    )
    if settings:
        print(
            "settings of the hook-on evals: " + ", ".join(f"{k}={v}" for k, v in settings.items())
        )
    for calls in sorted({case.model_latency for case in cases}):
        group = [case for case in cases if case.model_latency == calls]
        title = f"model calls that take {calls:g} s" if calls > 0 else "CPU-bound mock eval"
        print(f"\n{title}:\n")
        print_table(HEADER, [row(case) for case in group])
    print(
        "\nratio: median over pairs of eval() wall time on/off; requests: runs, params, "
        "metrics, tags, tables and artifacts (median of the on runs); trace requests: "
        "OTLP spans + start_trace + assessments; hold: time a hook callback held the "
        "event loop (worst on run)."
    )
    print("\nwhere the CPU goes (medians; eval process CPU includes its start-up):\n")
    print_table(CPU_HEADER, [cpu_row(case) for case in cases])
    print(
        "\nserver ms/sample: the server's CPU during an on run less an off run (its idle "
        "work), per sample; delivery: the hook's delivery process (empty with "
        "INSPECT_MLFLOW_DELIVERY=thread). All share this machine's cores."
    )
    print("\nsummary (issue 20; per-pair differences, medians over pairs):\n")
    rows: list[str] = []
    for case in cases:
        rows += summary_rows(case, startup["cpu"], pypi_name)
    print_table(SUMMARY_HEADER, rows)
    print(
        "\nwait after last s (off): from the last sample's completed_at to the end of "
        "eval() with the hook off (Inspect's own closing); wait added: the same on less "
        "off; eval CPU: the eval process's CPU on less off; delivery CPU: the delivery "
        f"process's, less its start-up ({startup['cpu']:.2f} s of CPU and "
        f"{startup['mb']:.0f} MB once per process: Python, our modules, MLflow's import, "
        "the default mapping); ours = eval + delivery; server: MLflow's server CPU on "
        "less off (what MLflow's storing costs, not ours); requests: all, traces included."
    )
    print(
        f"importing MLflow's client (once per process) adds {imported['mb']:.0f} MB of peak "
        f"memory and {imported['cpu']:.2f} s of CPU to an Inspect process (the delivery "
        "process, or the eval's with INSPECT_MLFLOW_DELIVERY=thread)."
    )
    for case in cases:
        _details(case)
    print("\ntargets:")
    for case in cases:
        for text, met in _targets(case, startup["cpu"]):
            status = "met" if met else "NOT met"
            print(
                f"  N={case.samples} latency {case.latency_ms:g} ms: {text}: {status} "
                f"({case.label})"
            )
    delivery_mb = [c.known_median("on", "delivery_maxrss_kb") for c in cases]
    known = [mb for mb in delivery_mb if mb is not None]
    if known:
        print(f"  delivery process peak memory: {max(known) / 1024:.0f} MB (stated, no target)")


def pair_line(case: Case, index: int, pairs: int) -> str:
    """One progress line for stderr after a pair ran."""
    off, on = case.off[index], case.on[index]
    text = (
        f"  N={case.samples} latency={case.latency_ms:g}ms {case.label} pair "
        f"{index + 1}/{pairs}: off {off['wall']:.2f}s, on {on['wall']:.2f}s, "
        f"ratio {on['wall'] / off['wall']:.3f}"
    )
    waits: list[Any] = [off.get("after_last_sample"), on.get("after_last_sample")]
    if None not in waits:
        text += f", wait after last {waits[0]:.2f}/{waits[1]:.2f}s"
    if len(case.pypi) > index:
        text += f", other integration {case.pypi[index]['wall'] / off['wall']:.3f}"
    return text
