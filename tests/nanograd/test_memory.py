"""nanograd.backend.keep_freed_memory: the first backward() keeps freed memory for reuse, unless told not to.

Each case runs in a fresh interpreter, since the setting is process-wide and happens once.
The child frees 60 MB of 2 MB arrays a few times over and counts the page faults of the
last round: glibc's defaults give the memory back on every free and fault it in again;
with the setting applied the last round reuses it.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILD = """
import json, resource
import numpy as np
import nanograd as ng
from nanograd import backend
x = ng.Tensor(np.ones(3), requires_grad=True)
(x * x).sum().backward()  # the first backward
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(1 << 18) for _ in range(30)]  # 30 arrays of 2 MB, written
    del arrays
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"state": backend._freed_memory, "faults": faults}))
"""


def run_child(**env):
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": ROOT, **env})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_first_backward_keeps_freed_memory_and_the_variable_turns_it_off():
    kept = run_child()
    default = run_child(NANOGRAD_KEEP_FREED_MEMORY="0")
    assert kept["state"] == [True] and default["state"] == [False]
    assert default["faults"] > 10_000  # 60 MB given back and faulted in again
    assert kept["faults"] < 1_000  # reused
