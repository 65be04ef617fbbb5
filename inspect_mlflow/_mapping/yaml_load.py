"""Strict YAML loading that remembers where every value came from.

A mapping is data, so it is loaded as JSON-like data only: scalars resolve as in YAML
1.2's core schema (``on``, ``yes``, ``no`` and dates stay strings; only ``true``/``false``
are booleans), keys must be strings and unique, and any tag that would build something
else than str/int/float/bool/null/map/list (``!!python/object``, ``!!timestamp``,
``!!binary``, ...) is refused.

Loading keeps the YAML node tree's marks, so any later stage that finds a problem at a
data path (``("rules", "sample_end", 0, "when")``) can turn it into ``file:line:col``
with :meth:`LoadedYaml.locate`, and a position inside an expression (a JMESPath
``lex_position``) with :meth:`LoadedYaml.locate_in_scalar`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from inspect_mlflow._mapping.errors import DataPath, MappingError, MappingInvalid, json_path

__all__ = ["LoadedYaml", "load_yaml_file", "load_yaml_text"]

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (
    f"{_TAG}{name}" for name in ("str", "int", "float", "bool", "null")
)
_MAP, _SEQ = f"{_TAG}map", f"{_TAG}seq"

_MAX_NODES = 200_000
"""Aliases may repeat a subtree; this bounds how much data a small file can expand to."""


class _JsonLikeLoader(yaml.SafeLoader):
    """SafeLoader whose implicit scalar types are YAML 1.2 core's, nothing more.

    Only the composer part is used (scalars are resolved to tags, nodes keep marks);
    :func:`_build` turns nodes into data, so no constructor ever runs.
    """

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}


_JsonLikeLoader.add_implicit_resolver(
    _NULL, re.compile(r"(?:~|null|Null|NULL|)\Z"), ["~", "n", "N", ""]
)
_JsonLikeLoader.add_implicit_resolver(
    _BOOL, re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z"), list("tTfF")
)
_JsonLikeLoader.add_implicit_resolver(
    _INT, re.compile(r"(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)\Z"), list("-+0123456789")
)
_JsonLikeLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z"
    ),
    list("-+.0123456789"),
)


try:
    from yaml.cyaml import CParser
except ImportError:  # PyYAML built without libyaml
    CParser = None

if CParser is not None:

    class _FastComposer(CParser, yaml.resolver.BaseResolver):  # type: ignore[misc]
        """libyaml's parser with :class:`_JsonLikeLoader`'s resolvers: the same nodes."""

        yaml_implicit_resolvers = _JsonLikeLoader.yaml_implicit_resolvers

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.resolver.BaseResolver.__init__(self)


def _compose_fast(text: str) -> Node | None:
    """The node tree from libyaml's parser (about 15 times faster), same marks.

    Only for a document that composes cleanly: on any error, or a character the
    pure-Python reader refuses, the caller composes with the pure-Python loader, whose
    messages are the ones users see. None without libyaml. A plain scalar's style is
    ``""`` here and None there: readers of the style treat both as plain.
    """
    if CParser is None or yaml.reader.Reader.NON_PRINTABLE.search(text):
        return None
    loader = _FastComposer(text)
    try:
        return loader.get_single_node()  # type: ignore[no-any-return]
    finally:
        loader.dispose()


@dataclass(frozen=True, slots=True)
class _ScalarSpan:
    """Where a scalar's source text is, to place a position inside its value."""

    start: int
    end: int
    style: str | None
    value: str


@dataclass
class LoadedYaml:
    """Data loaded from one YAML file, with the position of every key and value."""

    file: str
    """Name used in error messages (the path as given)."""
    data: dict[str, Any]
    """The loaded data: a mapping of JSON-like values."""
    text: str
    """The source text (to turn character offsets into line and column)."""
    value_marks: dict[DataPath, int] = field(default_factory=dict, repr=False)
    """Character offset where the value at each data path starts."""
    key_marks: dict[DataPath, int] = field(default_factory=dict, repr=False)
    """Character offset of the key whose value is at that data path."""
    scalars: dict[DataPath, _ScalarSpan] = field(default_factory=dict, repr=False)
    key_scalars: dict[DataPath, _ScalarSpan] = field(default_factory=dict, repr=False)
    """Source of each key (by the path of its value), to place a position inside a key."""
    _line_starts: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        starts = [0]
        starts.extend(match.end() for match in re.finditer(r"\r\n|\r|\n", self.text))
        self._line_starts = starts

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset in the source."""
        low, high = 0, len(self._line_starts) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if self._line_starts[middle] <= offset:
                low = middle
            else:
                high = middle - 1
        return low + 1, offset - self._line_starts[low] + 1

    def locate(self, path: DataPath, *, key: bool = False) -> tuple[int, int]:
        """1-based (line, column) of the value (or its key) at ``path``.

        A path that does not exist (a missing required key) is placed at its closest
        existing ancestor, so every error still points somewhere useful.
        """
        path = tuple(path)
        if key and path in self.key_marks:
            return self.position(self.key_marks[path])
        while path and path not in self.value_marks:
            path = path[:-1]
        return self.position(self.value_marks.get(path, 0))

    def locate_in_scalar(
        self, path: DataPath, offset: int, *, key: bool = False
    ) -> tuple[int, int]:
        """1-based (line, column) of character ``offset`` of the string at ``path``.

        Exact for plain and quoted scalars on one line (escapes included); for block
        (``|``, ``>-``) and multi-line scalars the characters are aligned with the source
        as well as whitespace folding allows, falling back to the scalar's start. With
        ``key=True`` the offset is inside the key of ``path`` instead of its value.
        """
        span = (self.key_scalars if key else self.scalars).get(tuple(path))
        if span is None:
            return self.locate(path, key=key)
        source = self.text[span.start : span.end]
        index = _source_index(source, span.style, offset)
        if index is None:
            index = _best_effort_index(source, span.style, span.value, offset)
        return self.position(span.start + (index if index is not None else 0))

    def error(
        self,
        path: DataPath,
        message: str,
        hint: str | None = None,
        *,
        key: bool = False,
        offset: int | None = None,
    ) -> MappingError:
        """A :class:`MappingError` placed at ``path`` (its key, or a character inside it)."""
        if offset is not None:
            line, col = self.locate_in_scalar(path, offset, key=key)
        else:
            line, col = self.locate(path, key=key)
        return MappingError(self.file, line, col, json_path(path), message, hint)


def _quoted_map(body: str, double: bool) -> list[int]:
    """Source index (within ``body``) of each value character of a one-line quoted scalar."""
    indexes: list[int] = []
    i = 0
    while i < len(body):
        char = body[i]
        if not double and body.startswith("''", i):
            indexes.append(i)
            i += 2
        elif double and char == "\\" and i + 1 < len(body):
            code = body[i + 1]
            width = {"x": 4, "u": 6, "U": 10}.get(code, 2)
            indexes.append(i)
            i += width
        else:
            indexes.append(i)
            i += 1
    return indexes


def _source_index(source: str, style: str | None, offset: int) -> int | None:
    """Offset of value character ``offset`` within a scalar's ``source`` text, if known."""
    one_line = "\n" not in source and "\r" not in source
    if style is None and one_line:
        return min(offset, len(source))
    if style in ("'", '"') and one_line:
        indexes = _quoted_map(source[1:-1], style == '"')
        if offset < len(indexes):
            return 1 + indexes[offset]
        return len(source) - 1
    return None


def _best_effort_index(source: str, style: str | None, value: str, offset: int) -> int | None:
    """Align a multi-line scalar's value with its source: non-space characters match in order.

    Folding and indentation only change whitespace, so the n-th non-space character of
    the value is the n-th non-space character of the source body (escapes aside: any
    mismatch gives up).
    """
    start = source.find("\n") + 1 if style in ("|", ">") else (1 if style in ("'", '"') else 0)
    wanted = sum(1 for char in value[:offset] if not char.isspace())
    value_chars = [char for char in value if not char.isspace()]
    targets = [i for i in range(start, len(source)) if not source[i].isspace()]
    targets = targets[: len(value_chars)]
    if [source[i] for i in targets] != value_chars[: len(targets)] or wanted >= len(targets):
        return None
    return targets[wanted]


def _short_tag(tag: str) -> str:
    """``tag:yaml.org,2002:python/object`` as the user wrote it: ``!!python/object``."""
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag


class _Builder:
    """Turns a composed node tree into data, recording marks and collecting errors."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.value_marks: dict[DataPath, int] = {}
        self.key_marks: dict[DataPath, int] = {}
        self.scalars: dict[DataPath, _ScalarSpan] = {}
        self.key_scalars: dict[DataPath, _ScalarSpan] = {}
        self.errors: list[MappingError] = []
        self.count = 0
        self._active: set[int] = set()

    def fail(
        self, node_or_mark: Any, path: DataPath, message: str, hint: str | None = None
    ) -> None:
        mark = getattr(node_or_mark, "start_mark", node_or_mark)
        self.errors.append(
            MappingError(self.file, mark.line + 1, mark.column + 1, json_path(path), message, hint)
        )

    def build(self, node: Node, path: DataPath) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise _TooLarge(node)
        self.value_marks.setdefault(path, node.start_mark.index)
        if id(node) in self._active:
            self.fail(node, path, "an alias refers to a node that contains it")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, ScalarNode):
                return self._scalar(node, path)
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ:
                    self._bad_tag(node, path)
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                if node.tag != _MAP:
                    self._bad_tag(node, path)
                return self._mapping(node, path)
            self.fail(node, path, f"unsupported YAML node {type(node).__name__}")
            return None
        finally:
            self._active.discard(id(node))

    def _bad_tag(self, node: Node, path: DataPath) -> None:
        self.fail(
            node,
            path,
            f"YAML tag {_short_tag(node.tag)!r} is not allowed",
            "a mapping holds only strings, numbers, booleans, null, lists and maps",
        )

    def _scalar(self, node: ScalarNode, path: DataPath) -> Any:
        self.scalars[path] = _ScalarSpan(
            node.start_mark.index, node.end_mark.index, node.style or None, node.value
        )
        return self._scalar_value(node, path)

    def _scalar_value(self, node: ScalarNode, path: DataPath) -> Any:
        text = node.value
        tag = node.tag
        try:
            if tag == _STR:
                return text
            if tag == _NULL:
                if text not in ("", "~", "null", "Null", "NULL"):
                    raise ValueError(text)
                return None
            if tag == _BOOL:
                lowered = text.lower()
                if lowered not in ("true", "false"):
                    raise ValueError(text)
                return lowered == "true"
            if tag == _INT:
                return int(text, 0) if text[:2] in ("0o", "0x") else int(text)
            if tag == _FLOAT:
                lowered = text.lower().lstrip("+")
                if lowered in (".inf", "-.inf", ".nan"):
                    return float(lowered.replace(".", ""))
                return float(text)
        except ValueError:
            self.fail(node, path, f"cannot read {text!r} as {tag.removeprefix(_TAG)}")
            return None
        self._bad_tag(node, path)
        return None

    def _mapping(self, node: MappingNode, path: DataPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_seen: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.fail(key_node, path, "a key must be a plain string, not a list or map")
                continue
            key = self._scalar_value(key_node, path)
            if key_node.tag == _STR and key_node.value == "<<" and not key_node.style:
                self.fail(key_node, path, "YAML merge keys (<<) are not supported")
                continue
            if not isinstance(key, str):
                self.fail(
                    key_node,
                    path,
                    f"key {key_node.value!r} is not a string",
                    f'quote it: "{key_node.value}"',
                )
                continue
            child = (*path, key)
            if key in first_seen:
                first = first_seen[key]
                self.fail(
                    key_node,
                    child,
                    f"duplicate key {key!r}",
                    f"first defined at line {first.line + 1}, column {first.column + 1}",
                )
                continue
            first_seen[key] = key_node.start_mark
            self.key_marks[child] = key_node.start_mark.index
            self.key_scalars[child] = _ScalarSpan(
                key_node.start_mark.index, key_node.end_mark.index, key_node.style or None, key
            )
            out[key] = self.build(value_node, child)
        return out


class _TooLarge(Exception):
    def __init__(self, node: Node) -> None:
        self.node = node


def _line_col(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of a character offset in ``text``."""
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def load_yaml_text(text: str, file: str) -> LoadedYaml:
    """Load one YAML document strictly, keeping positions.

    Args:
        text: The YAML source.
        file: Name shown in errors (usually the path).

    Returns:
        The data (a mapping) with its marks.

    Raises:
        MappingInvalid: on a YAML syntax error, an empty document, a top level that is
            not a mapping, a duplicate or non-string key, or a disallowed tag; every
            problem found is reported, each with its line and column.
    """
    loader = None
    try:
        root = _compose_fast(text)
    except Exception:  # composed again below, for the pure-Python loader's message
        root = None
    try:
        if root is None:
            loader = _JsonLikeLoader(text)  # the reader rejects control characters here
            root = loader.get_single_node()
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        raise MappingInvalid(
            [
                MappingError(
                    file,
                    line,
                    col,
                    "$",
                    f"YAML syntax error: character {exc.character!r} is not allowed in YAML",
                )
            ]
        ) from None
    except RecursionError:
        raise MappingInvalid(
            [MappingError(file, 1, 1, "$", "YAML error: collections are nested too deeply")]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            message = f"{exc.context}, {exc.problem}"
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise MappingInvalid(
            [MappingError(file, line, col, "$", f"YAML syntax error: {message}")]
        ) from None
    except yaml.YAMLError as exc:
        raise MappingInvalid([MappingError(file, 1, 1, "$", f"YAML error: {exc}")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if isinstance(root, ScalarNode) and root.tag == _NULL and root.value == "":
        root = None  # a document marker alone ("---") holds nothing either
    if root is None:
        raise MappingInvalid(
            [
                MappingError(
                    file, 1, 1, "$", "the file is empty", "a mapping starts with `version: 1`"
                )
            ]
        )
    if not isinstance(root, MappingNode) or root.tag != _MAP:
        kind = {SequenceNode: "a list", ScalarNode: "a single value"}.get(type(root), "not a map")
        mark = root.start_mark
        raise MappingInvalid(
            [
                MappingError(
                    file,
                    mark.line + 1,
                    mark.column + 1,
                    "$",
                    f"the top level must be a map of keys (version, runs, rules, ...), got {kind}",
                )
            ]
        )
    builder = _Builder(file)
    try:
        data = builder.build(root, ())
    except RecursionError:
        raise MappingInvalid(
            [MappingError(file, 1, 1, "$", "YAML error: collections are nested too deeply")]
        ) from None
    except _TooLarge as exc:
        mark = exc.node.start_mark
        raise MappingInvalid(
            [
                MappingError(
                    file,
                    mark.line + 1,
                    mark.column + 1,
                    "$",
                    f"the document expands to more than {_MAX_NODES} values (aliases?)",
                )
            ]
        ) from None
    if builder.errors:
        raise MappingInvalid(builder.errors)
    loaded = LoadedYaml(file=file, data=data, text=text)
    loaded.value_marks = builder.value_marks
    loaded.key_marks = builder.key_marks
    loaded.scalars = builder.scalars
    loaded.key_scalars = builder.key_scalars
    return loaded


def load_yaml_file(path: str | Path, name: str | None = None) -> LoadedYaml:
    """Read and load a YAML file strictly (see :func:`load_yaml_text`).

    Args:
        path: The file to read (UTF-8).
        name: Name shown in errors; the path as given by default.

    Raises:
        MappingInvalid: when the file cannot be read or is not a valid mapping document.
    """
    shown = name if name is not None else str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MappingInvalid(
            [MappingError(shown, 0, 0, "$", f"cannot read file: {reason}")]
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return load_yaml_text(text, shown)
