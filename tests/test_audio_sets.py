"""tools/make_long_wav.py and tools/make_clip_set.py write the benchmark audio they promise."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def _tool(name, *args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_long_wav_has_the_length_asked(ref, tmp_path):
    out = tmp_path / "long.wav"
    proc = _tool("make_long_wav.py", ref / "audio", "--minutes", 0.5, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 30 * 16000)


def test_clip_set_lengths_bounded_and_reproducible(ref, tmp_path):
    sets = []
    for name in ("a", "b"):
        out = tmp_path / name
        proc = _tool("make_clip_set.py", ref / "audio", "--minutes", 1, "--min_seconds", 2, "--max_seconds", 5,
                     "--out", out)
        assert proc.returncode == 0, proc.stderr[-2000:]
        sets.append({p.name: sf.read(str(p))[0] for p in sorted(out.glob("*.wav"))})
    a, b = sets
    assert a.keys() == b.keys() and len(a) >= 12
    assert all((a[k] == b[k]).all() for k in a)  # same seed, same set
    lengths = [len(x) / 16000 for x in a.values()]
    assert all(2 <= s <= 5 for s in lengths) and 55 <= sum(lengths) <= 60
    assert len(set(lengths)) > 1


def test_clip_set_rejects_bad_bounds(ref, tmp_path):
    proc = _tool("make_clip_set.py", ref / "audio", "--min_seconds", 5, "--max_seconds", 2, "--out", tmp_path / "x")
    assert proc.returncode == 1 and "--min_seconds" in proc.stderr
