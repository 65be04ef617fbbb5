"""Fork safety for objects that own a thread and locks.

A forked child inherits locks in whatever state the parent's threads held them and none
of the parent's threads; an object that owns a background thread must build fresh ones
in the child. The callback is held weakly so registering it never keeps the object alive.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable


def reinit_after_fork(method: Callable[[], None]) -> None:
    """Call the bound ``method`` in a forked child, if its object is still alive."""
    if not hasattr(os, "register_at_fork"):  # not on Windows
        return
    ref = weakref.WeakMethod(method)  # type: ignore[arg-type]

    def _after_fork_in_child() -> None:
        alive = ref()
        if alive is not None:
            alive()

    os.register_at_fork(after_in_child=_after_fork_in_child)
