"""An offline demo eval: Inspect's mock model, one tool call per sample, two scorers.

Used by ``inspect-mlflow demo`` so a newcomer sees every kind of logged data without an
API key or network, and by the tests and the benchmark as a realistic small eval.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from typing import Any

DEMO_MODEL = "mockllm/model"


def _usage() -> Any:
    from inspect_ai.model import ModelUsage

    # Always set usage: without it the mock model counts tokens with a downloaded encoder.
    return ModelUsage(input_tokens=12, output_tokens=6, total_tokens=18)


def answer(input: list[Any], tools: Any, tool_choice: Any, config: Any) -> Any:
    """Mock model: call ``add`` for the question, then answer with the tool's result.

    Every fifth question (x divisible by 5) gets a wrong final answer, so the scores vary.
    """
    from inspect_ai.model import ChatMessageTool, ModelOutput

    last = input[-1]
    if isinstance(last, ChatMessageTool):
        result = last.text.strip()
        question = next((m.text for m in input if m.role == "user"), "")
        x = int(re.findall(r"-?\d+", question)[0]) if question else 0
        content = str(int(result) + 1) if x % 5 == 0 else result
        output = ModelOutput.from_content(model=DEMO_MODEL, content=content)
    else:
        numbers = [int(n) for n in re.findall(r"-?\d+", last.text)][:2] or [0, 0]
        output = ModelOutput.for_tool_call(
            model=DEMO_MODEL, tool_name="add", tool_arguments={"x": numbers[0], "y": numbers[-1]}
        )
    output.usage = _usage()
    return output


def add_tool() -> Any:
    """The ``add`` tool the demo model calls once per sample."""
    from inspect_ai.tool import tool

    @tool
    def add() -> Any:
        async def execute(x: int, y: int) -> str:
            """Add two integers.

            Args:
                x: First integer.
                y: Second integer.
            """
            return str(x + y)

        return execute

    return add()


def demo_task(samples: int = 10, name: str = "demo_addition") -> Any:
    """An Inspect task: ``samples`` addition questions, the ``add`` tool, two scorers."""
    from inspect_ai import Task
    from inspect_ai.dataset import Sample
    from inspect_ai.scorer import includes, match
    from inspect_ai.solver import generate, use_tools

    dataset = [
        Sample(id=i + 1, input=f"What is {i + 1} + {2 * i}?", target=str(3 * i + 1))
        for i in range(samples)
    ]
    return Task(
        name=name,
        dataset=dataset,
        solver=[use_tools(add_tool()), generate()],
        scorer=[match(), includes()],
    )


def demo_model() -> Any:
    """The offline mock model used by the demo."""
    from inspect_ai.model import get_model

    return get_model(DEMO_MODEL, custom_outputs=answer)


def run_demo(samples: int, log_dir: str, max_samples: int = 4) -> list[Any]:
    """Run the demo eval with whatever tracking settings the environment holds."""
    from inspect_ai import eval as inspect_eval

    return inspect_eval(
        demo_task(samples),
        model=demo_model(),
        log_dir=log_dir,
        display="none",
        max_samples=max_samples,
    )


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand to the CLI."""
    parser = subparsers.add_parser(
        "demo",
        help="run an offline demo eval (mock model) and log it to MLflow",
        description=(
            "Run a small offline Inspect eval with the mock model (no API key, no network) "
            "and log it to MLflow. By default it logs to ./mlflow.db, a local file you can "
            "open with `mlflow ui`."
        ),
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="where to log (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    parser.add_argument("--samples", type=int, default=10, help="number of samples (default 10)")
    parser.add_argument("--log-dir", default=None, help="Inspect log dir (default: a temp dir)")
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="inspect-mlflow-demo-")
    logs = run_demo(args.samples, log_dir)
    status = logs[0].status if logs else "unknown"
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "inspect_ai"
    print(f"Demo eval finished ({status}); logged to {uri}, experiment '{experiment}'.")
    print(f"Inspect log: {logs[0].location if logs else log_dir}")
    if uri.startswith("sqlite:///"):
        print(f"Open it with:  mlflow ui --backend-store-uri {uri}")
    else:
        print(f"Open {uri} in a browser.")
    return 0 if status == "success" else 1
