"""ieee_fp32: on a CUDA device s3tok turns TF32 off while it works and puts the caller's setting back.

The switches are plain torch settings, so this runs without a GPU; it runs in a child process because the
settings are process-wide and torch refuses some mixes of its old and new precision APIs."""
from __future__ import annotations

import subprocess
import sys

CHILD = r"""
import threading, torch
from s3tok.model.ieee_fp32 import _switches, ieee_fp32

def state():
    return [getattr(obj, name) for obj, name, _ in _switches()]

ieee = [value for _, _, value in _switches()]
tf32 = ["tf32", "tf32"] if ieee == ["ieee", "ieee"] else [True, True]
for (obj, name, _), value in zip(_switches(), tf32):  # a training script that allows TF32
    setattr(obj, name, value)

with ieee_fp32("cpu"):
    assert state() == tf32, "a CPU device leaves the settings alone"
with ieee_fp32(torch.device("cuda", 0)):
    assert state() == ieee
assert state() == tf32, "restored"

try:
    with ieee_fp32("cuda"):
        raise KeyError("boom")
except KeyError:
    pass
assert state() == tf32, "restored after an exception"

# a decoding thread's log-mel leaves while the model is still inside: the model keeps IEEE fp32
inside, left, done = threading.Event(), threading.Event(), threading.Event()
seen = []
def model():
    with ieee_fp32("cuda"):
        inside.set()
        left.wait(10)
        seen.append(state())
    done.set()
t = threading.Thread(target=model)
with ieee_fp32("cuda"):
    t.start()
    inside.wait(10)
left.set()
done.wait(10)
t.join()
assert seen == [ieee], seen
assert state() == tf32, "restored once the last user left"
print("ok", ieee)
"""


def test_ieee_fp32_switches_and_restores():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok")
