"""keep_freed_memory: large buffers freed by one pass are reused by the next, without fresh page faults."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# In a child process, as malloc settings are process-wide: an official-width v1 encoder with one block,
# random weights, two 30 s windows per pass; the page faults of two passes after two warm-up ones.
CHILD = r"""
import os, resource, sys, torch
import s3tok
from s3tok.model import S3Tokenizer
from s3tok.model.config import official_config

ok = s3tok.keep_freed_memory()
torch.set_num_threads(1)
torch.manual_seed(0)
model = S3Tokenizer(official_config("speech_tokenizer_v1", depth=1)).eval()
mels, lens = torch.randn(2, 128, 3000), torch.full((2,), 3000)  # two windows per pass, as on CPU

def one_pass():
    with torch.inference_mode():
        model.quantize(mels, lens)

one_pass(); one_pass()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
one_pass(); one_pass()
print(ok, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) // 2, s3tok.keep_freed_memory())
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


def _child(env_value=None):
    env = dict(os.environ)
    env.pop("S3TOK_KEEP_FREED_MEMORY", None)
    if env_value is not None:
        env["S3TOK_KEEP_FREED_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    ok, faults, again = out.stdout.split()
    return ok == "True", int(faults), again == "True"


@pytest.mark.slow
@glibc
def test_keep_freed_memory_stops_page_faults_of_forward_passes():
    """By default every pass maps its large buffers afresh (tens of thousands of page faults on this
    model); with the settings, the pages of one pass are reused by the next. Measured: 56,000 -> 0-6,000
    faults per pass (an AMD EPYC gave 6,000 of 56,220 once, so the bound is a factor 5, not 10)."""
    off, faults_off, again_off = _child("0")  # S3TOK_KEEP_FREED_MEMORY=0: malloc left alone
    on, faults_on, again_on = _child()
    assert not off and not again_off and on and again_on
    assert faults_off > 10000, faults_off
    assert faults_on < faults_off / 5, (faults_on, faults_off)


def _cache_env_after_import(env: dict) -> dict:
    """oneDNN's two cache sizes as a fresh ``import s3tok`` leaves them, under ``env``."""
    import json

    from s3tok.util.cpu_memory import ONEDNN_CACHE_ENV

    clean = {k: v for k, v in os.environ.items() if k not in ONEDNN_CACHE_ENV}
    code = ("import json, os, s3tok; "
            f"print(json.dumps({{k: os.environ.get(k) for k in {list(ONEDNN_CACHE_ENV)!r}}}))")
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def test_import_bounds_onednn_caches():
    """Importing s3tok caps oneDNN's and ideep's primitive caches before any oneDNN operation can run: at their
    default 1024 entries every new batch shape kept its primitive, and a 2 h CPU run grew from 1.07 to 2.19 GB."""
    from s3tok.util.cpu_memory import ONEDNN_CACHE_ENTRIES

    assert _cache_env_after_import({}) == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(ONEDNN_CACHE_ENTRIES),
                                           "LRU_CACHE_CAPACITY": str(ONEDNN_CACHE_ENTRIES)}


def test_onednn_cache_size_set_by_the_user_stays():
    assert _cache_env_after_import({"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64"}) == {
        "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64", "LRU_CACHE_CAPACITY": "8"}
