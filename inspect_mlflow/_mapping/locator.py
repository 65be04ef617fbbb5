"""Place a path of the *effective* (layered) mapping back in the file it came from.

After layering, ``rules.sample_end[7]`` of the effective mapping may be
``rules.sample_end[0]`` of the user's file while ``rules.sample_end[2]`` is still the
default's. The :class:`Locator` records, for each merged subtree, which loaded file and
which path in it the subtree came from, so an error found while compiling the effective
mapping is reported in the right file, at that file's own line, column and JSON path.
"""

from __future__ import annotations

from dataclasses import dataclass

from inspect_mlflow._mapping.errors import DataPath, MappingError
from inspect_mlflow._mapping.errors import json_path as render_json_path
from inspect_mlflow._mapping.model import Where
from inspect_mlflow._mapping.yaml_load import LoadedYaml

__all__ = ["Locator", "Origin"]


@dataclass(frozen=True, slots=True)
class Origin:
    """A subtree's source: a loaded file and the path of the subtree in it."""

    loaded: LoadedYaml
    path: DataPath


class Locator:
    """Maps effective-mapping paths to (file, path in that file) by longest known prefix."""

    def __init__(self) -> None:
        self._origins: dict[DataPath, Origin] = {}

    @classmethod
    def single(cls, loaded: LoadedYaml) -> Locator:
        """A locator for a mapping that is exactly one file."""
        locator = cls()
        locator.add((), loaded, ())
        return locator

    def copy(self) -> Locator:
        """A locator with the same origins, to extend without changing this one."""
        other = Locator()
        other._origins = dict(self._origins)
        return other

    def add(self, path: DataPath, loaded: LoadedYaml, source: DataPath) -> None:
        """Record that the subtree at ``path`` is ``source`` in ``loaded``."""
        self._origins[tuple(path)] = Origin(loaded, tuple(source))

    def graft(self, path: DataPath, other: Locator, source: DataPath) -> None:
        """Record that the subtree at ``path`` is the subtree at ``source`` of ``other``.

        Finer-grained origins under ``source`` (a run kind merged from two files) are
        carried over, so deeper paths still resolve to the right file.
        """
        path, source = tuple(path), tuple(source)
        self._origins[path] = other.origin(source)
        depth = len(source)
        for known, origin in other._origins.items():
            if len(known) > depth and known[:depth] == source:
                self._origins[path + known[depth:]] = origin

    def origin(self, path: DataPath) -> Origin:
        """The file and source path of the effective ``path``."""
        path = tuple(path)
        for cut in range(len(path), -1, -1):
            found = self._origins.get(path[:cut])
            if found is not None:
                return Origin(found.loaded, found.path + path[cut:])
        raise KeyError(f"no origin recorded for {render_json_path(path)}")

    def files(self) -> tuple[str, ...]:
        """Every file a recorded subtree came from, in order of first appearance."""
        seen: dict[str, None] = {}
        for origin in self._origins.values():
            seen.setdefault(origin.loaded.file, None)
        return tuple(seen)

    def error(
        self,
        path: DataPath,
        message: str,
        hint: str | None = None,
        *,
        key: bool = False,
        offset: int | None = None,
    ) -> MappingError:
        """A :class:`MappingError` in the file the effective ``path`` came from."""
        origin = self.origin(path)
        return origin.loaded.error(origin.path, message, hint, key=key, offset=offset)

    def where(self, path: DataPath, *, key: bool = False) -> Where:
        """A :class:`Where` for runtime reports about the piece at ``path``."""
        origin = self.origin(path)
        line, col = origin.loaded.locate(origin.path, key=key)
        return Where(origin.loaded.file, render_json_path(origin.path), line, col)
