"""Mapping problems as values: each one knows its file, line, column and data path.

Every stage of loading (YAML, schema, compile, static checks, layering) produces
:class:`MappingError` values instead of raising at the first problem, so
``inspect-mlflow check`` can show all of them at once, sorted by position.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["DataPath", "MappingError", "MappingInvalid", "json_path"]

DataPath = tuple[str | int, ...]
"""A place in the loaded data: mapping keys and sequence indexes from the top."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def json_path(path: Iterable[str | int]) -> str:
    """Render a data path as a JSONPath such as ``$.rules.sample_end[0].metrics``.

    Keys that are not identifiers are quoted (``$.runs.eval.tags['inspect.run_id']``), so
    a path can be read back without ambiguity.

    >>> json_path(("rules", "sample_end", 0, "metrics", "sample/{score.key}"))
    "$.rules.sample_end[0].metrics['sample/{score.key}']"
    """
    out = ["$"]
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.fullmatch(part):
            out.append(f".{part}")
        else:
            escaped = part.replace("\\", "\\\\").replace("'", "\\'")
            out.append(f"['{escaped}']")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class MappingError:
    """One problem in a mapping file, placed where a reader can find it."""

    file: str
    """The file the problem is in (as given to the loader)."""
    line: int
    """1-based line; 0 when the place is unknown."""
    col: int
    """1-based column; 0 when the place is unknown."""
    json_path: str
    """Where in the data, for example ``$.rules.sample_end[0].metrics``."""
    message: str
    """What is wrong."""
    hint: str | None = None
    """How to fix it, when there is something better to say than the message."""

    def __str__(self) -> str:
        place = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        text = f"{place}: {self.json_path}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text

    def sort_key(self) -> tuple[str, int, int, str, str]:
        """Order by file, then position, then path and message (stable output)."""
        return (self.file, self.line, self.col, self.json_path, self.message)


class MappingInvalid(Exception):
    """A mapping failed to load; ``errors`` holds every problem found, sorted."""

    def __init__(self, errors: Sequence[MappingError]) -> None:
        self.errors: tuple[MappingError, ...] = tuple(
            sorted(set(errors), key=MappingError.sort_key)
        )
        count = len(self.errors)
        lines = [f"mapping is invalid ({count} problem{'s' if count != 1 else ''}):"]
        lines.extend(f"  {error}" for error in self.errors)
        super().__init__("\n".join(lines))
