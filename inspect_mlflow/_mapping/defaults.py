"""Per-point defaults: ``defaults.<point>`` gives the rules of that point what they omit.

A file declares once what most rules of a point share::

    defaults:
      sample_end:
        run: task                              # a rule without `run`
        step: counter.sample.index             # a rule without `step`
        row: {sample_id: sample.id, epoch: sample.epoch}   # columns first in every table

Defaults belong to the file that declares them: they fill the rules written in that
file only, so a file that ``extends`` another neither gives its defaults to the base's
rules nor takes the base's for its own (a version 1 file layered on the built-in
mapping keeps meaning what it meant). A rule's own key wins; for ``row``, the default
columns come first and a column the rule names itself takes the rule's expression.

Expanding happens after layering and before compiling: the effective mapping shows
every rule whole, and each filled-in piece is placed at its line under ``defaults``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from inspect_mlflow._mapping.layering import Layered

__all__ = ["DEFAULT_KEYS", "apply_defaults"]

DEFAULT_KEYS = ("run", "step", "row")
"""The rule keys a point's defaults may give."""


def apply_defaults(layered: Layered) -> Layered:
    """``layered`` with each rule completed from its own file's ``defaults``.

    Returns ``layered`` itself when no file declares defaults.
    """
    rules = layered.data.get("rules")
    if not isinstance(rules, Mapping):
        return layered
    locator = layered.locator.copy()
    out_rules: dict[str, Any] = {}
    changed = False
    for point, entries in rules.items():
        out_entries = []
        for index, rule in enumerate(entries or []):
            here = ("rules", point, index)
            origin = layered.locator.origin(here)
            declared = (origin.loaded.data.get("defaults") or {}).get(point)
            if not isinstance(rule, Mapping) or not isinstance(declared, Mapping):
                out_entries.append(rule)
                continue
            filled = dict(rule)
            source = ("defaults", point)
            for key in ("run", "step"):
                if key in declared and key not in rule:
                    filled[key] = copy.deepcopy(declared[key])
                    locator.add((*here, key), origin.loaded, (*source, key))
            row = declared.get("row")
            own = rule.get("row")
            if isinstance(row, Mapping) and "table" in rule and isinstance(own, Mapping):
                filled["row"] = {**copy.deepcopy(dict(row)), **own}
                for column in row:
                    if column not in own:
                        locator.add((*here, "row", column), origin.loaded, (*source, "row", column))
            changed = changed or filled != rule
            out_entries.append(filled)
        out_rules[point] = out_entries
    if not changed:
        return layered
    return Layered(data={**layered.data, "rules": out_rules}, locator=locator, files=layered.files)
