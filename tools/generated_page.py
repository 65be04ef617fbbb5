"""Write a generated doc page, or with ``--check`` say that the committed one is stale.

The doc generators (``api_doc``, ``functions_doc``, ``context_doc``) share this ending so
that each page is regenerated and checked the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(page: Path, text: str, script: str) -> int:
    """Write ``text`` to ``page``; with ``--check``, exit status 1 when they differ instead."""
    if "--check" in sys.argv[1:]:
        if page.read_text() != text:
            print(f"{page} is out of date: run python {script}", file=sys.stderr)
            return 1
        return 0
    page.write_text(text)
    return 0
