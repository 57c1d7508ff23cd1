"""tools/as_avx2.sh: a command run through it sees an AVX2-only CPU, and its own fault handling still works."""
from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from s3tok.api import cpu_flags

ROOT = Path(__file__).resolve().parents[1]
WRAPPER = ROOT / "tools" / "as_avx2.sh"

needs_faulting = pytest.mark.skipif(
    platform.machine() != "x86_64" or not shutil.which("gcc") or "cpuid_fault" not in cpu_flags()
    or "avx2" not in cpu_flags(), reason="needs an x86-64 CPU with AVX2 and CPUID faulting, and gcc")

# prints leaf 7's AVX-512 F bit (EBX 16) and AVX2 bit (EBX 5) as the running code sees them
CPUID_PROGRAM = r"""
#include <cpuid.h>
#include <stdio.h>
int main(void) {
    unsigned a, b, c, d;
    __cpuid_count(7, 0, a, b, c, d);
    printf("avx512f=%u avx2=%u\n", (b >> 16) & 1, (b >> 5) & 1);
    return 0;
}
"""


@needs_faulting
def test_cpuid_hides_avx512_and_keeps_avx2(tmp_path):
    src = tmp_path / "cpuid.c"
    src.write_text(CPUID_PROGRAM)
    subprocess.run(["gcc", "-O0", "-o", str(tmp_path / "cpuid"), str(src)], check=True)
    plain = subprocess.run([str(tmp_path / "cpuid")], capture_output=True, text=True, check=True).stdout
    hidden = subprocess.run([str(WRAPPER), str(tmp_path / "cpuid")], capture_output=True, text=True, check=True).stdout
    assert plain.strip().endswith("avx2=1")
    assert hidden.strip() == "avx512f=0 avx2=1"


@needs_faulting
def test_torch_picks_its_avx2_kernels():
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([str(WRAPPER), sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "AVX2"


@needs_faulting
def test_other_faults_still_reach_the_programs_handler():
    """Python's faulthandler, installed after the library, still reports a real segmentation fault."""
    code = "import ctypes; ctypes.string_at(0)"
    out = subprocess.run([str(WRAPPER), sys.executable, "-X", "faulthandler", "-c", code], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
    assert "Fatal Python error: Segmentation fault" in out.stderr


def test_without_a_command_it_says_how_to_use_it():
    out = subprocess.run(["bash", str(WRAPPER)], capture_output=True, text=True)
    assert out.returncode == 2 and "usage:" in out.stderr

