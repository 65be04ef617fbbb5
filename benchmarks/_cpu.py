"""CPU seconds and peak memory of processes, read from ``/proc`` (Linux).

The benchmark accounts for where the CPU of an eval with logging on goes: the eval's
process, the hook's delivery process and the MLflow server (all on one machine).
Elsewhere than Linux every reading is None and the report leaves those cells empty.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: split after its closing one
    return text.rsplit(")", 1)[1].split()


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of one process so far (its reaped children included)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + cutime + cstime) / _TICKS


def group_cpu(pgid: int) -> float | None:
    """CPU seconds of every live process in process group ``pgid`` (a server's workers)."""
    if not Path("/proc").is_dir():
        return None
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or int(fields[2]) != pgid:
            continue
        total += process_cpu(int(entry.name)) or 0.0
    return total


def peak_rss_kb(pid: int) -> int | None:
    """The process's peak resident memory (``VmHWM``) in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None
