"""Processes that die with their parent: an experiment's workers, DDP ranks and the helpers a command starts exit when
the process that started them dies, however it dies (kill -9 and the OOM killer included), instead of training on
for minutes as orphans that hold memory and their run directories' locks.

Two mechanisms, because one may be missing: Linux's parent-death signal (prctl PR_SET_PDEATHSIG, through ctypes:
the kernel sends SIGKILL to the child the moment its parent exits), and everywhere a daemon thread that polls the
parent's pid once a second (a child whose parent died is re-parented, so getppid() changes). A child killed this way
is the same as a child killed by kill -9: its run directories hold no partial file and a rerun resumes them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def parent_death_signal() -> bool:
    """Ask the kernel for SIGKILL when the parent exits; False where there is no prctl (not Linux). Also usable as
    a `subprocess` preexec_fn: the setting survives exec."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent: int, poll: float = 1.0) -> None:
    """Called first in a child process whose parent is `parent` (its pid, passed down by the parent)."""
    parent_death_signal()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent, poll), daemon=True, name="die-with-parent").start()


def _watch(parent: int, poll: float) -> None:
    while os.getppid() == parent:
        time.sleep(poll)
    os.kill(os.getpid(), signal.SIGKILL)
