"""Layering: a mapping file that ``extends`` another is merged onto it.

The rules (docs/mapping-language.md, "Layering"):

- ``counters``, ``series``: union (base order first).
- ``runs.<kind>``: a kind in the file replaces the base kind's keys one by one, ``tags``
  merged key by key; a new kind is added whole.
- ``rules.<point>``: a rule whose ``id`` matches a base rule replaces it whole (in place
  when at the same point; otherwise the base rule goes and the new one is appended to
  its own point); other rules are appended after the base rules of that point.
- ``remove: [id, ...]`` drops base rules by id; an unknown id is an error.
- A file without ``extends`` stands alone.

Each file is loaded strictly and checked against the schema on its own, so a problem is
always reported in the file (and at the line) where it was written; the merged result
carries a :class:`~inspect_mlflow._mapping.locator.Locator` for later stages.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspect_mlflow._mapping.errors import MappingError, MappingInvalid
from inspect_mlflow._mapping.locator import Locator
from inspect_mlflow._mapping.schema import did_you_mean, schema_errors
from inspect_mlflow._mapping.yaml_load import LoadedYaml, load_yaml_file, load_yaml_text
from inspect_mlflow._paths import default_mapping_path

__all__ = ["Layered", "layer", "load_layered_file", "load_layered_text"]

_TOP_ORDER = ("version", "counters", "series", "runs", "rules")


@dataclass(frozen=True)
class Layered:
    """A mapping after layering: plain data, where each piece came from, and the files."""

    data: dict[str, Any]
    """The effective mapping (no ``extends``/``remove``), in a stable key order."""
    locator: Locator
    files: tuple[str, ...]
    """The files it was built from, base first."""


def _ordered(data: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys in the documented order; ``extends`` and ``remove`` dropped."""
    return {key: data[key] for key in _TOP_ORDER if key in data}


def _standalone(loaded: LoadedYaml) -> Layered:
    return Layered(
        data=_ordered(copy.deepcopy(loaded.data)),
        locator=Locator.single(loaded),
        files=(loaded.file,),
    )


def _union(
    name: str, base: Layered, overlay: LoadedYaml, out: dict[str, Any], locator: Locator
) -> None:
    """Merge a list of names (counters or series): base entries, then new overlay ones."""
    base_items = list(base.data.get(name) or [])
    new_items = list(overlay.data.get(name) or [])
    if name not in base.data and name not in overlay.data:
        return
    merged = list(base_items)
    if name in base.data:
        locator.graft((name,), base.locator, (name,))
    else:
        locator.add((name,), overlay, (name,))
    for index in range(len(base_items)):
        locator.graft((name, index), base.locator, (name, index))
    for index, item in enumerate(new_items):
        if item not in merged:
            locator.add((name, len(merged)), overlay, (name, index))
            merged.append(item)
    out[name] = merged


def _merge_runs(base: Layered, overlay: LoadedYaml, out: dict[str, Any], locator: Locator) -> None:
    base_runs: dict[str, Any] = base.data.get("runs") or {}
    new_runs: dict[str, Any] = overlay.data.get("runs") or {}
    if "runs" not in base.data and "runs" not in overlay.data:
        return
    if "runs" in base.data:
        locator.graft(("runs",), base.locator, ("runs",))
    else:
        locator.add(("runs",), overlay, ("runs",))
    runs: dict[str, Any] = {}
    for kind, spec in base_runs.items():
        runs[kind] = copy.deepcopy(spec)
        locator.graft(("runs", kind), base.locator, ("runs", kind))
    for kind, spec in new_runs.items():
        if kind not in runs:
            runs[kind] = copy.deepcopy(spec)
            locator.add(("runs", kind), overlay, ("runs", kind))
            continue
        merged = runs[kind]
        for key, value in spec.items():
            here = ("runs", kind, key)
            if key == "tags" and isinstance(value, dict) and isinstance(merged.get("tags"), dict):
                for tag, expression in value.items():
                    merged["tags"][tag] = copy.deepcopy(expression)
                    locator.add((*here, tag), overlay, (*here, tag))
            else:
                merged[key] = copy.deepcopy(value)
                locator.add(here, overlay, here)
    out["runs"] = runs


def _merge_rules(
    base: Layered, overlay: LoadedYaml, out: dict[str, Any], locator: Locator
) -> list[MappingError]:
    errors: list[MappingError] = []
    base_rules: dict[str, list[Any]] = base.data.get("rules") or {}
    new_rules: dict[str, list[Any]] = overlay.data.get("rules") or {}
    # Each entry: (rule data, ("base", point, index) or ("file", point, index)).
    merged: dict[str, list[tuple[Any, tuple[str, str, int]]]] = {
        point: [(rule, ("base", point, index)) for index, rule in enumerate(rules or [])]
        for point, rules in base_rules.items()
    }
    base_ids: dict[str, str] = {}
    for point, rules in base_rules.items():
        for rule in rules or []:
            if isinstance(rule, dict) and isinstance(rule.get("id"), str):
                base_ids.setdefault(rule["id"], point)

    for index, rule_id in enumerate(overlay.data.get("remove") or []):
        point = base_ids.get(rule_id)
        if point is None:
            errors.append(
                overlay.error(
                    ("remove", index),
                    f"no rule with id {rule_id!r} in the base mapping",
                    did_you_mean(rule_id, base_ids, "base rule ids"),
                )
            )
            continue
        merged[point] = [entry for entry in merged[point] if entry[0].get("id") != rule_id]

    replaced: set[str] = set()
    for point, rules in new_rules.items():
        entries = merged.setdefault(point, [])
        for index, rule in enumerate(rules or []):
            origin = ("file", point, index)
            rule_id = rule.get("id") if isinstance(rule, dict) else None
            if rule_id in base_ids and rule_id not in replaced:
                replaced.add(rule_id)
                home = base_ids[rule_id]
                slots = [
                    i
                    for i, entry in enumerate(merged.get(home, []))
                    if entry[0].get("id") == rule_id
                ]
                if home == point and slots:
                    entries[slots[0]] = (rule, origin)
                    continue
                if slots:
                    del merged[home][slots[0]]
            entries.append((rule, origin))

    if "rules" in overlay.data:
        locator.add(("rules",), overlay, ("rules",))
    elif "rules" in base.data:
        locator.graft(("rules",), base.locator, ("rules",))
    rules_out: dict[str, list[Any]] = {}
    for point, entries in merged.items():
        if point in new_rules:
            locator.add(("rules", point), overlay, ("rules", point))
        else:
            locator.graft(("rules", point), base.locator, ("rules", point))
        for position, (_rule, (side, home, index)) in enumerate(entries):
            here = ("rules", point, position)
            if side == "base":
                locator.graft(here, base.locator, ("rules", home, index))
            else:
                locator.add(here, overlay, ("rules", home, index))
        rules_out[point] = [copy.deepcopy(rule) for rule, _ in entries]
    if rules_out or "rules" in base.data or "rules" in overlay.data:
        out["rules"] = rules_out
    return errors


def layer(base: Layered, overlay: LoadedYaml) -> Layered:
    """Merge ``overlay`` (a file with ``extends``) onto ``base``.

    Args:
        base: The mapping it extends, already layered.
        overlay: The extending file, loaded and schema-checked.

    Returns:
        The merged mapping.

    Raises:
        MappingInvalid: when ``remove`` names an id the base does not have.
    """
    locator = Locator()
    locator.add((), overlay, ())
    out: dict[str, Any] = {"version": overlay.data.get("version", base.data.get("version"))}
    _union("counters", base, overlay, out, locator)
    _union("series", base, overlay, out, locator)
    _merge_runs(base, overlay, out, locator)
    errors = _merge_rules(base, overlay, out, locator)
    if errors:
        raise MappingInvalid(errors)
    return Layered(data=_ordered(out), locator=locator, files=(*base.files, overlay.file))


def _resolve_base(loaded: LoadedYaml, base_dir: Path) -> Path:
    target = loaded.data["extends"]
    if target == "default":
        return default_mapping_path()
    path = Path(target).expanduser()
    return path if path.is_absolute() else base_dir / path


def _layered(loaded: LoadedYaml, base_dir: Path, chain: tuple[Path, ...]) -> Layered:
    errors = schema_errors(loaded)
    extends = loaded.data.get("extends")
    if not isinstance(extends, str):
        if errors:
            raise MappingInvalid(errors)
        return _standalone(loaded)

    base_path = _resolve_base(loaded, base_dir)
    resolved = base_path.resolve()
    base: Layered | None = None
    if resolved in chain:
        names = " -> ".join(str(path) for path in (*chain, resolved))
        errors.append(loaded.error(("extends",), f"extends cycle: {names}"))
    elif not base_path.is_file():
        errors.append(
            loaded.error(
                ("extends",),
                f"base mapping not found: {base_path}",
                "use `default` or a path relative to this file",
            )
        )
    else:
        try:
            base = load_layered_file(base_path, _chain=(*chain, resolved))
        except MappingInvalid as exc:
            errors.extend(exc.errors)
    if errors or base is None:
        raise MappingInvalid(errors)
    return layer(base, loaded)


def load_layered_file(
    path: str | Path, name: str | None = None, *, _chain: tuple[Path, ...] = ()
) -> Layered:
    """Load a mapping file and everything it extends, layered.

    Args:
        path: The mapping file.
        name: How to show the file in errors (the path as given by default).

    Raises:
        MappingInvalid: with every problem of every file involved.
    """
    path = Path(path)
    loaded = load_yaml_file(path, name)
    chain = _chain or (path.resolve(),)
    return _layered(loaded, path.parent, chain)


def load_layered_text(text: str, name: str, base_dir: str | Path | None = None) -> Layered:
    """Load a mapping given as text (``extends`` paths resolve from ``base_dir`` or cwd)."""
    loaded = load_yaml_text(text, name)
    return _layered(loaded, Path(base_dir) if base_dir is not None else Path.cwd(), ())
