"""Children die with their parent (miniberts/lifetime.py): a process that called die_with_parent ends within a few
seconds of its parent's SIGKILL, through the kernel's parent-death signal and, where that is missing, the poll."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import alive

REPO = Path(__file__).resolve().parents[1]

# The middle process starts a grandchild that arms die_with_parent (or, with NOSIGNAL, only the poll), prints the
# grandchild's pid, then sleeps until the test kills it.
MIDDLE = """
import subprocess, sys, time
code = '''
import os, sys, time
from miniberts import lifetime
if sys.argv[1] == "poll":
    lifetime.parent_death_signal = lambda: False
lifetime.die_with_parent(os.getppid(), poll=0.1 if sys.argv[1] == "poll" else 600)  # the signal alone
print("armed", flush=True)
time.sleep(120)
'''
child = subprocess.Popen([sys.executable, "-c", code, sys.argv[1]], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "armed"
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="watches the grandchild through /proc (Linux)")
@pytest.mark.parametrize("how", ["signal", "poll"])
def test_a_child_ends_when_its_parent_is_killed(how):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    middle = subprocess.Popen([sys.executable, "-c", MIDDLE, how], stdout=subprocess.PIPE, text=True, env=env)
    grandchild = int(middle.stdout.readline())
    assert alive(grandchild)
    middle.send_signal(signal.SIGKILL)
    middle.wait()
    deadline = time.time() + 5
    while alive(grandchild) and time.time() < deadline:
        time.sleep(0.02)
    if alive(grandchild):
        os.kill(grandchild, signal.SIGKILL)
        pytest.fail(f"the grandchild outlived its parent by 5 s ({how})")
