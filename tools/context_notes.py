"""The prose of ``docs/context-documents.md``: what the types cannot say.

``tools/context_doc.py`` writes the field tables from Inspect's types; this module holds
the rest: the introduction, the names the engine adds, what is left out and why, notes
per point and examples. ``tests/unit/test_context_doc.py`` checks every example expression
with the dry run's typo check and against the values of a real eval, and the names the
engine adds against the engine.
"""

from __future__ import annotations

INTRO = """
Every expression of a mapping (see [the mapping language](mapping-language.md)) reads the
**context document** of the lifecycle point that fired: a JSON object built from the
payload Inspect hands its hook for that point, plus a few names the engine adds. This page
lists every field a rule can read at each point, from Inspect's own types; a field that is
not here gives null, and `inspect-mlflow check --log` reports it as a likely typo with a
"did you mean" (see [the dry run](dry-run.md)).

How values look: text, numbers and booleans as they are; times as ISO 8601 text
(`"2026-12-04T01:10:33.610641+00:00"`); enumerations as their value; a field whose value
is null is **absent** (as in Inspect's own `model_dump(exclude_none=True)`), so `a || b`
falls back and `a == null` is true; a dict keeps its keys (`sample.scores.match`); a value
that is not JSON (a function passed as a model argument) is its text. The documents are
built lazily: a rule that reads one field of a large payload converts that field only.

Model names hold `/`: quote them in a path, `sample.model_usage."openai/gpt-4o".input_tokens`,
or iterate with `items(...)`.
"""

ADDED: tuple[tuple[str, str, str], ...] = (
    ("point", "string", "The lifecycle point's name, `task_start` for example."),
    (
        "task_id",
        "string",
        "The task's identity (Inspect's `spec.task_id`), on every point that has an "
        "`eval_id` once its `task_start` was seen; every attempt an eval set makes of a "
        "task has a new `eval_id` and the same `task_id`. Added by the hook.",
    ),
    (
        "counter.<name>.count",
        "number",
        "How many times the counter was incremented on the rule's run, this point's "
        "increment included.",
    ),
    (
        "counter.<name>.index",
        "number, optional",
        "The 0-based index of this point's increment (`count - 1`); null before the first.",
    ),
    ("series.<name>", "array", "The values collected so far on the rule's run."),
    ("run.kind", "string", "The run kind the rule writes to (`task`)."),
    ("run.key", "string", "The run's logical key (`task:<eval id>`)."),
    ("run.name", "string, optional", "The run's name."),
    ("run.models", "array of string", "Identities of the models a `model` output linked."),
    ("run.datasets", "array of object", "The run's datasets, each `{name, digest}`."),
    (
        "run.parent",
        "object, optional",
        "The parent run: `kind`, `key`, `name` and `context`, the whole context document "
        "of the point that opened it (a task run reads the eval's `run_start` there).",
    ),
    (
        "<loop name>",
        "any JSON value",
        "Each `for_each` (and `let`) name, bound to its element; an object is iterated as "
        "`{key, value}` items.",
    ),
)
"""(path, type, meaning) of what every rule document has besides the point's payload."""

LEFT_OUT = """
- **The samples of a log.** `log` at `task_end` and each of `logs` at `run_end` are the
  log's *header*: `samples` and `reductions` are not in them. For `eval()`, reading them
  makes Inspect load the whole log from disk inside its running event loop, which crashed
  concurrent tasks. Per-sample data is read at `sample_end`, once per sample.
- **Fields Inspect does not serialise.** A field declared `Field(exclude=True)` is hidden,
  as in Inspect's own log (`log.etag`); `log.location` is added back, because the task
  run's tag `inspect.log` needs it.
- **Fields a model accepts beyond its declared ones** (`extra="allow"`): a path to one
  gives null. When a function receives the whole object (`json(spec)`), they are in it.
- **Python objects.** An exception is `{type, message}` (at `run_end`, also
  `cancelled`): no traceback object. A value that is not JSON is its text.
- **Nothing is cut, nothing is redacted, in the document itself.** A rule sees the whole
  conversation (`sample.messages`, `before_model_generate.input`, model events) and the
  task's arguments as given (`spec.task_args.api_key`). What it *writes* is made safe on
  the way out: a value under a key that looks like a credential (`api_key`, `token`,
  `secret`, `password`, ...) is written as `***` at any depth, the values of MLflow's
  credential variables are masked in every write, and long text is cut with a
  `...[truncated]` marker to MLflow's limits (params 6000 characters, tags 8000, a table
  cell about 4000, a record about 50000, trace text `INSPECT_MLFLOW_TRACE_MAX_TEXT`).
- **Points a rule cannot use.** With delivery in a separate process, a point whose every
  rule has a `when` that is false on its payload is not sent there at all (a
  `sample_event` of a kind no rule reads); this changes nothing a rule can see.
- **On import** (`inspect-mlflow import`) the payloads are rebuilt from the log, with the
  same fields: `model_usage`, `model_cache_usage` and `before_model_generate` are rebuilt
  from the model events, `sample_event` replays each event once (no duplicate model
  event), and `eval_set_start`, `eval_set_end` and `model_retry` never fire (a log does
  not record them).
"""

POINT_NOTES: dict[str, str] = {
    "eval_set_start": "Once per `eval_set()` call, also when every task of the set is complete.",
    "eval_set_end": "Not when `eval_set()` raises.",
    "run_start": "Once per `eval()` (or `eval_retry()`) call; `task_names` names a task once "
    "per model it runs with.",
    "run_end": "Also when the run raised or was cancelled: `exception` is set only when it "
    "escaped the run; `logs` is empty when the run raised.",
    "task_start": "Again, with a new `eval_id`, for each attempt an eval set makes of a task.",
    "task_end": "Only when the task completed (status `success`, or `error` with "
    "`continue_on_fail`): not when it raised or was cancelled. A run kind closed here is "
    "then closed at `run_end`, where `log` is absent.",
    "sample_init": "`sample_id` is the sample run's UUID (`summary.uuid`), not the dataset "
    "id (`summary.id`).",
    "sample_start": "`sample_id` is the sample run's UUID (`summary.uuid`), not the dataset "
    "id (`summary.id`). At this point `summary.model_usage` is `{}`.",
    "sample_event": "Each transcript event once it is complete. Inspect delivers a model "
    "event twice (the same `event.uuid`): deduplicate with `unique: event.uuid`. "
    "Delivery lags the sample; Inspect drains it before the sample ends.",
    "sample_end": "Once per sample and epoch, also for a sample read back from the log "
    "(one that finished while its task was aborting). `sample` holds everything: "
    "messages, events, scores, usage.",
    "model_usage": "After a successful model call that did not hit Inspect's local cache. "
    "No sample id.",
    "model_cache_usage": "No ids at all: a rule here cannot tell which run it belongs to.",
    "before_model_generate": "`sample_id` here is a per-attempt id that matches no other point's.",
    "model_retry": "`sample_id` is the sample run's UUID.",
}

EVENTS_TEXT = """
A sample's transcript (`sample.events` at `sample_end`, `event` at `sample_event`) is a
list of events of these kinds. Each has `event`, its kind's name, which a filter reads
(`sample.events[?event=='model']`), and `uuid`, `span_id`, `timestamp`,
`working_start`, `metadata`; the rest depends on the kind.
"""

HEADINGS: dict[str, str] = {"EvalLog (header: no samples)": "`EvalLog` header"}
"""Section headings of object shapes whose title is not a class name."""

MEANINGS: dict[str, str] = {
    "point": "The lifecycle point's name.",
    "task_id": "The task's identity (Inspect's `spec.task_id`), added by the hook once the "
    "task's `task_start` was seen.",
    "exception.type": "The exception's class name.",
    "exception.message": "Its message.",
    "exception.cancelled": "True when the run was interrupted or cancelled (Ctrl-C, "
    "SIGTERM, a cancelled task group), false when it failed.",
    "type": "The exception's class name.",
    "message": "Its message.",
    "location": "The log file's path or URL.",
}
"""Meanings of fields no Inspect docstring describes (by path, then by name)."""

EXAMPLES: tuple[tuple[str, str, str], ...] = (
    ("eval_set_start", "eval_set_id", '"hX3zcQ9vB2sLq7TnWmE4kA"'),
    ("eval_set_start", "log_dir", '"logs/nightly"'),
    ("run_start", "run_id", '"i6a4Y2QcWeRM38AzXsBtoo"'),
    ("run_start", "task_names", '["arith"]'),
    ("run_end", "exception.cancelled", "true"),
    ("run_end", "logs[].status", '["success"]'),
    ("run_end", "logs[].eval.task", '["arith"]'),
    ("task_start", "eval_id", '"oL5Hpyfyrk3Zwyr3CHJ2FS"'),
    ("task_start", "task_id", '"hNLvnB2vCgnsKA5C8Mbiyz"'),
    ("task_start", "spec.task", '"arith"'),
    ("task_start", "spec.model", '"mockllm/model@v1"'),
    ("task_start", "spec.created", '"2026-12-04T01:10:30+00:00"'),
    ("task_start", "spec.task_args.difficulty", '"easy"'),
    ("task_start", "spec.dataset.samples", "3"),
    ("task_start", "spec.dataset.sample_ids", "[1, 2, 3]"),
    ("task_start", "spec.config.epochs", "2"),
    ("task_start", "spec.scorers[].name", '["match", "digits"]'),
    ("task_start", "spec.revision.commit", '"d3833cb"'),
    ("task_start", "plan.steps[].solver", '["use_tools", "generate"]'),
    ("task_start", "plan.config.temperature", "0.2"),
    ("task_end", "log.status", '"success"'),
    ("task_end", "log.location", '"logs/2026-12-04T01-10-30-00-00_arith_hNLvnB2v.eval"'),
    ("task_end", "log.results.completed_samples", "6"),
    ("task_end", "log.results.scores[0].name", '"match"'),
    ("task_end", "log.results.scores[0].metrics.accuracy.value", "1.0"),
    ("task_end", 'log.stats.model_usage."mockllm/model@v1".total_tokens', "180"),
    ("task_end", "log.stats.completed_at", '"2026-12-04T01:10:35+00:00"'),
    ("sample_start", "sample_id", '"QF45itASHiXxhrXNCwhVyK"'),
    ("sample_start", "summary.id", "1"),
    ("sample_start", "summary.epoch", "1"),
    ("sample_start", "summary.input", '"What is 1+1?"'),
    ("sample_start", "summary.target", '"2"'),
    ("sample_start", "summary.started_at", '"2026-12-04T01:10:33.610641+00:00"'),
    ("sample_attempt_end", "attempt", "1"),
    ("sample_attempt_end", "will_retry", "false"),
    ("sample_event", "event.event", '"span_begin"'),
    ("sample_event", "event.uuid", '"gvxsAmzUCMGLvqZbdxq7eD"'),
    ("sample_event", "event.timestamp", '"2026-12-04T01:10:33.631864+00:00"'),
    ("sample_event", "event.name", '"solvers"'),
    ("sample_end", "sample.id", "1"),
    ("sample_end", "sample.uuid", '"QF45itASHiXxhrXNCwhVyK"'),
    ("sample_end", "sample.scores.match.value", '"C"'),
    ("sample_end", "sample.scores.digits.explanation", '"1 digit(s)"'),
    ("sample_end", "sample.output.completion", '"2"'),
    ("sample_end", "sample.output.usage.total_tokens", "15"),
    ("sample_end", "sample.total_time", "1.27"),
    ("sample_end", "sample.messages[].role", '["user", "assistant", "tool", "assistant"]'),
    ("sample_end", "length(sample.events[?event=='model'])", "2"),
    ("sample_end", "sample.events[?event=='tool'].function", '["add"]'),
    ("model_usage", "model_name", '"mockllm/model@v1"'),
    ("model_usage", "usage.input_tokens", "10"),
    ("model_usage", "call_duration", "0.00037"),
    ("model_usage", "task_name", '"arith"'),
    ("before_model_generate", "input[0].content", '"What is 1+1?"'),
    ("before_model_generate", "tools[].name", '["add"]'),
    ("before_model_generate", "config.temperature", "0.2"),
)
"""(point, expression, what it gives) from an eval of ``tests/support/payloads.py``'s ``arith``."""
