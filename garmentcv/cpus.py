"""How many CPUs this process may really use (standard library only).

``os.cpu_count()`` counts the machine's cores, ignoring the CPU affinity mask (``taskset``, SLURM, Kubernetes
cpusets) and cgroup CPU quotas (``docker run --cpus``); thread pools sized by it oversubscribe the cores they
may actually run on. The rule here is the one Python 3.13's ``os.process_cpu_count()`` follows for affinity,
plus the cgroup v2 quota (``cpu.max``, https://docs.kernel.org/admin-guide/cgroup-v2.html#cpu-interface-files),
rounded up, as the JVM's and Go's runtimes do.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: The cgroup v2 CPU quota file of this process's cgroup, as seen from inside a container.
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def _quota_cpus(cpu_max: Path) -> int | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``), rounded up."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def available_cpus(cgroup_cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The number of CPUs this process may run on: affinity mask, then cgroup quota; at least 1.

    Args:
        cgroup_cpu_max: the cgroup v2 ``cpu.max`` file to read (tests pass their own).
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    quota = _quota_cpus(cgroup_cpu_max)
    return max(1, min(count, quota) if quota else count)


def cpu_info(path: Path = Path("/proc/cpuinfo")) -> tuple[str, frozenset[str]]:
    """``(model name, ISA flags)`` of the first CPU listed in ``path`` (Linux's ``/proc/cpuinfo``).

    Both are empty when unknown: no such file (not Linux) or a format without ``model name``/``flags`` (ARM's).
    The one parser behind the INT8 facts of gcv export, the runtime choice and the ``--amp`` rule.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "", frozenset()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("model name", "flags"):
            fields.setdefault(key.strip(), value.strip())
    return fields.get("model name", ""), frozenset(fields.get("flags", "").split())
