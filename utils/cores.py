"""How many CPU cores a run can use now: --threads auto.

torch's worker threads spin while they wait for each other, so a run given two threads on
two cores, one of which another process holds, runs several times slower than with one
thread. The default therefore takes the cores that are free when the run starts."""
from __future__ import annotations

import os
import time

SAMPLES = 5          # readings of the run queue, 20 ms apart: a momentary spike is not a busy core
INTERVAL_S = 0.02


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours taskset and container CPU sets
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _runnable_now() -> int:
    """Processes running or ready to run on the whole machine, this one included
    (the fourth field of /proc/loadavg, 'running/total')."""
    with open("/proc/loadavg") as f:
        return int(f.read().split()[3].split("/")[0])


def free_cores() -> int:
    """The usable cores not held by another running process (at least 1)."""
    cores = _usable_cores()
    try:
        others = min(_sample() for _ in range(SAMPLES))
    except (OSError, ValueError, IndexError):  # no /proc/loadavg: assume the machine is ours
        return cores
    return max(1, min(cores, cores - others))


def _sample() -> int:
    others = _runnable_now() - 1
    time.sleep(INTERVAL_S)
    return max(0, others)
