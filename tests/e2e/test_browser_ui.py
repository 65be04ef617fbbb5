"""What a person sees in MLflow's UI: a real server, real evals, headless Chromium.

Why: the store can hold the right tags while the page shows something else (a failed eval
with a green icon, a description MLflow does not render, a target nobody can find). So
these tests open MLflow's own React app in Debian's Chromium, driven by Playwright, and
read what is on the screen: the run list, a run's Overview, a trace.

Needs ``/usr/bin/chromium`` (Debian's ``chromium``, which ``.ci/run`` installs) and the
``playwright`` package (the ``test`` extra); never ``playwright install``, which downloads
a browser of its own. With ``INSPECT_MLFLOW_UPDATE_SCREENSHOTS=1`` the screenshots are
written to ``docs/images/`` (what ``docs/what-you-see.md`` shows), else under the test's
temporary directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_support import failing_task, new_experiment_name, run_logged
from mlflow_server import MlflowServer

from inspect_mlflow._commands.demo import demo_task

pytestmark = [pytest.mark.server, pytest.mark.browser, pytest.mark.e2e]

CHROMIUM = Path("/usr/bin/chromium")
HEADLESS_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium keeps calling Google's hosts, which this closed network refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
WAIT_MS = 60_000
"""Longest wait for an element: the React app renders after its API calls return."""

# MLflow opens its assistant panel on a first visit; it would cover the right third.
CLOSE_ASSISTANT = (
    "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
    "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
)
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Logged:
    """The two evals in the server, as MLflow's client reads them back."""

    url: str
    experiment_id: str
    runs: dict[str, Any]
    """run name -> MLflow run."""
    ok_log: Any
    failed_log: Any

    def run_id(self, name: str) -> str:
        return str(self.runs[name].info.run_id)

    def parent_name(self, task: str) -> str:
        parent = self.runs[task].data.tags["mlflow.parentRunId"]
        return next(n for n, r in self.runs.items() if r.info.run_id == parent)


@pytest.fixture(scope="module")
def logged(mlflow_server: MlflowServer) -> Logged:
    """The demo eval and a task that fails (sample 2 raises), each its own eval run."""
    from mlflow import MlflowClient

    experiment = new_experiment_name("browser")
    [ok] = run_logged(demo_task(3), mlflow_server.url, experiment, max_samples=1)
    [failed] = run_logged(
        failing_task({2}, samples=3), mlflow_server.url, experiment, max_samples=1
    )
    assert (ok.status, failed.status) == ("success", "error")
    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    return Logged(mlflow_server.url, exp.experiment_id, runs, ok, failed)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=HEADLESS_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (own storage) at 1280x800, MLflow's assistant panel closed."""
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(CLOSE_ASSISTANT)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: docs/images when asked to update them, else a temp dir."""
    if os.environ.get("INSPECT_MLFLOW_UPDATE_SCREENSHOTS") == "1":
        out = REPO / "docs" / "images"
        out.mkdir(parents=True, exist_ok=True)
        return out
    return tmp_path


def screenshot(page: Any, path: Path) -> None:
    """A PNG of the viewport; in docs/images as 64 colours (a third of the bytes)."""
    page.screenshot(path=str(path))
    if path.parent == REPO / "docs" / "images":
        try:
            from PIL import Image  # with MLflow (through matplotlib)
        except ImportError:
            return
        with Image.open(path) as image:
            small = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
        small.save(path, optimize=True)


def squeeze(text: str) -> str:
    """Text as a person reads it: markdown marks gone, runs of whitespace as one space."""
    return re.sub(r"\s+", " ", text.replace("**", "").replace("`", "")).strip()


def section(page: Any, start: str, end: str) -> str:
    """The page's visible text from the heading ``start`` to the next ``end``."""
    text = page.inner_text("body")
    begin = text.index(start)
    stop = text.find(end, begin + len(start))
    return text[begin : stop if stop > 0 else None]


def open_run(page: Any, logged: Logged, name: str) -> None:
    """A run's Overview, once its description and 'About this run' have rendered."""
    page.goto(f"{logged.url}/#/experiments/{logged.experiment_id}/runs/{logged.run_id(name)}")
    page.get_by_text("About this run").wait_for()
    page.get_by_text("Description", exact=True).first.wait_for()


def status_icon_rgb(page: Any, run_name: str) -> tuple[int, int, int]:
    """Colour of the status icon in the runs table's row of a run (the 'Created' cell)."""
    link = page.get_by_role("link", name=run_name, exact=True)
    row = page.locator("[role=row]").filter(has=link).first
    index = row.get_attribute("row-index")
    icon = page.locator(
        f"[role=row][row-index='{index}'] [col-id='runDateAndNestInfo'] .anticon"
    ).first
    color = icon.evaluate("e => getComputedStyle(e).color")
    r, g, b = (int(x) for x in re.findall(r"\d+", color)[:3])
    return r, g, b


def test_the_run_list_shows_a_failed_eval_and_task_as_failed(
    logged: Logged, page: Any, shots: Path
) -> None:
    failed_parent = logged.parent_name("flaky_addition")
    ok_parent = logged.parent_name("demo_addition")
    assert logged.runs[failed_parent].info.status == "FAILED"
    page.goto(
        f"{logged.url}/#/experiments/{logged.experiment_id}/runs?workflowType=machine_learning"
    )
    for parent in (failed_parent, ok_parent):
        link = page.get_by_role("link", name=parent, exact=True)
        link.wait_for()
        row = page.locator("[role=row]").filter(has=link).first
        row.locator("[col-id='attributes.`Run Name`'] button").first.click()  # expand
    for task in ("flaky_addition", "demo_addition"):
        page.get_by_role("link", name=task, exact=True).wait_for()
    page.evaluate("document.activeElement && document.activeElement.blur()")
    screenshot(page, shots / "run-list.png")
    # Red for FAILED, green for FINISHED: the icon is what a person looks at.
    for name in (failed_parent, "flaky_addition"):
        r, g, _ = status_icon_rgb(page, name)
        assert r > g, f"{name} is FAILED but its status icon is rgb{(r, g)}: not red"
    for name in (ok_parent, "demo_addition"):
        r, g, _ = status_icon_rgb(page, name)
        assert g > r, f"{name} is FINISHED but its status icon is rgb{(r, g)}: not green"


def test_a_failed_task_run_says_why_on_its_overview(logged: Logged, page: Any, shots: Path) -> None:
    error = logged.failed_log.error.message
    note = logged.runs["flaky_addition"].data.tags.get("mlflow.note.content") or ""
    assert error in note, "the mapping wrote no error into the failed run's description"
    open_run(page, logged, "flaky_addition")
    page.get_by_text("planned failure for sample 2").first.wait_for()
    description = squeeze(section(page, "Description", "Metrics ("))
    assert squeeze(error) in description
    about = squeeze(section(page, "About this run", "Tags"))
    assert "Status Failed" in about
    screenshot(page, shots / "run-overview-failed.png")


def test_a_task_run_overview_shows_its_primary_score(
    logged: Logged, page: Any, shots: Path
) -> None:
    note = logged.runs["demo_addition"].data.tags.get("mlflow.note.content")
    if not note:
        pytest.xfail("the mapping writes no description (mlflow.note.content) on task runs yet")
    primary = logged.ok_log.results.scores[0]
    metric = next(iter(primary.metrics.values()))
    headline = squeeze(note.split("\n\n")[0])
    assert primary.name in headline and metric.name in headline, headline
    open_run(page, logged, "demo_addition")
    page.get_by_text(primary.name, exact=True).first.wait_for()
    description = squeeze(section(page, "Description", "Metrics ("))
    assert headline in description
    assert "Status Finished" in squeeze(section(page, "About this run", "Tags"))
    screenshot(page, shots / "run-overview.png")


def test_a_trace_shows_the_samples_target_as_an_expectation(
    logged: Logged, page: Any, shots: Path
) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Expectation

    client = MlflowClient(tracking_uri=logged.url)
    run_id = logged.run_id("demo_addition")
    traces = client.search_traces(locations=[logged.experiment_id], run_id=run_id)
    assert len(traces) == 3
    trace = next(t for t in traces if t.info.request_preview == "What is 3 + 4?")
    expected = [a for a in trace.info.assessments if isinstance(a, Expectation)]
    if not expected:
        pytest.xfail("the mapping writes no Expectation (each trace's target) on traces yet")
    [expectation] = expected
    target = logged.ok_log.samples[2].target
    assert expectation.value == target
    page.goto(f"{logged.url}/#/experiments/{logged.experiment_id}/runs/{run_id}")
    page.get_by_role("tab", name="Traces").click()
    page.get_by_text("What is 3 + 4?").first.wait_for()
    # The traces table has a column of expectations, with the target of each sample.
    page.get_by_text("Expected output").first.wait_for()
    assert re.search(r"What is 3 \+ 4\?\s+7\s+7\s", page.inner_text("body"))
    page.get_by_text(trace.info.trace_id[:10]).first.click()
    page.get_by_text("Inputs / Outputs").wait_for()
    page.get_by_role("button", name="Assess").click()
    page.get_by_text("Expectations (1)").wait_for()
    panel = squeeze(section(page, "Assessments", "Notes"))
    assert f"{expectation.name} inspect_ai {target}" in panel, panel
    screenshot(page, shots / "trace.png")


def test_a_task_run_overview_lists_its_logged_model_and_dataset(
    logged: Logged, page: Any, shots: Path
) -> None:
    """MLflow 3's records of an evaluation, as its run page shows them (issue 18)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=logged.url)
    run = client.get_run(logged.run_id("demo_addition"))
    [model_input] = run.inputs.model_inputs
    model = client.get_logged_model(model_input.model_id)
    [dataset_input] = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    # Tall enough for the metrics (with their model), the logged models and the datasets.
    page.set_viewport_size({"width": VIEWPORT["width"], "height": 1560})
    open_run(page, logged, "demo_addition")
    heading = page.get_by_text("Logged models (1)")
    heading.wait_for()
    models = squeeze(section(page, "Logged models (1)", "About this run"))
    assert models.startswith("Logged models (1)") and f"{model.name} Ready" in models, models
    assert " Input - " in models  # linked as the run's input (type), at no step
    about = squeeze(section(page, "About this run", "Tags"))
    assert f"Datasets {dataset.name} ({dataset.digest}) Eval" in about, about
    # The summary metrics name the model they were measured for; the series do not.
    metrics = squeeze(section(page, "Metrics (", "Parameters ("))
    assert f"match/accuracy 1 {model.name}" in metrics, metrics
    assert "per_sample/match 1 -" in metrics
    screenshot(page, shots / "run-models.png")
