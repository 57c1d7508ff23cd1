"""Kaldi data dirs (s3tok.data.kaldi_dir), their entry points and wrappers, and segment audio
(s3tok.data.segments)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import soundfile as sf
import torch

from s3tok.data.audio import AudioError, load_audio, read_audio, resample
from s3tok.bin import fix_data_dir as fix_bin
from s3tok.bin import validate_data_dir as validate_bin
from s3tok.data import WavEntry
from s3tok.data import segments as segments_mod
from s3tok.data.kaldi_dir import (Segment, iter_utterances, read_segments, read_spk2utt, read_text, read_utt2dur,
                                  read_utt2spk, utt2spk_to_spk2utt, write_segments, write_spk2utt, write_utt2dur)
from s3tok.data.validate import fix_data_dir, validate_data_dir
from s3tok.data.segments import load_utterance_audio, segment_samples

ROOT = Path(__file__).resolve().parents[1]

GOOD: Dict[str, str] = {
    "wav.scp": "A01-r1 /data/a b/r1.wav\nA01-r2 sox r2.flac -t wav - |\nB02-r3 /data/r3.wav\n",
    "segments": "A01-r1-0001 A01-r1 0.00 1.50\nA01-r1-0002 A01-r1 1.50 -1\nA01-r2-0001 A01-r2 0 2.25\n"
                "B02-r3-0001 B02-r3 0.1 0.9\n",
    "text": "A01-r1-0001 你好　世界\nA01-r1-0002 hello world\nA01-r2-0001\nB02-r3-0001 x\n",
    "utt2spk": "A01-r1-0001 A01\nA01-r1-0002 A01\nA01-r2-0001 A01\nB02-r3-0001 B02\n",
    "spk2utt": "A01 A01-r1-0001 A01-r1-0002 A01-r2-0001\nB02 B02-r3-0001\n",
    "utt2dur": "A01-r1-0001 1.5\nA01-r1-0002 2.0\nA01-r2-0001 2.25\nB02-r3-0001 0.8\n",
}


def make_dir(path: Path, files: Dict[str, str], **changes: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in {**files, **{k.replace("_scp", ".scp"): v for k, v in changes.items()}}.items():
        if text is not None:
            (path / name).write_text(text, encoding="utf-8")
    return path


def test_valid_dir_has_no_problems(tmp_path):
    d = make_dir(tmp_path / "d", GOOD)
    assert validate_data_dir(d) == []
    assert validate_bin.main([str(d)]) == 0


def test_unsorted_keys_named_with_file_and_line(tmp_path):
    d = make_dir(tmp_path / "d", GOOD, utt2dur="A01-r1-0001 1.5\nA01-r2-0001 2.25\nA01-r1-0002 2.0\n"
                                              "B02-r3-0001 0.8\n")
    problems = validate_data_dir(d)
    assert any(p.startswith(f"{d / 'utt2dur'}:3:") and "not sorted" in p for p in problems), problems


def test_sort_order_is_bytes_not_locale(tmp_path):
    # LC_ALL=C: upper case before lower case, '-' (0x2d) before '_' (0x5f)
    d = make_dir(tmp_path / "d", {"wav.scp": "B /b.wav\na-1 /a1.wav\na_1 /a2.wav\n", "utt2spk": "B B\na-1 a\na_1 a\n",
                                  "spk2utt": "B B\na a-1 a_1\n"})
    assert validate_data_dir(d, no_text=True) == []
    (d / "wav.scp").write_text("a-1 /a1.wav\nB /b.wav\na_1 /a2.wav\n")
    assert any(p.startswith(f"{d / 'wav.scp'}:2:") and "not sorted" in p for p in validate_data_dir(d, no_text=True))


def test_duplicate_keys_named_with_file_and_line(tmp_path):
    d = make_dir(tmp_path / "d", GOOD, wav_scp=GOOD["wav.scp"] + "B02-r3 /other.wav\n")
    problems = validate_data_dir(d)
    assert f"{d / 'wav.scp'}:4: duplicate key 'B02-r3' (first at line 3)" in problems


def test_inconsistent_key_sets(tmp_path):
    d = make_dir(tmp_path / "d", GOOD,
                 utt2spk="A01-r1-0001 A01\nA01-r1-0002 A01\nB02-r3-0001 B02\nB02-r9-0001 B02\n",
                 text=GOOD["text"] + "C03-x hello\n",
                 spk2utt="A01 A01-r1-0001 A01-r2-0001\nB02 B02-r3-0001\nC03 C03-x\n")
    problems = validate_data_dir(d)
    text = "\n".join(problems)
    assert f"{d / 'utt2spk'}:4: utterance 'B02-r9-0001' is not in segments" in problems
    assert f"{d / 'segments'}:3: utterance 'A01-r2-0001' has no line in utt2spk" in problems
    assert f"{d / 'text'}:5: utterance 'C03-x' is not in segments" in problems
    assert f"{d / 'spk2utt'}:1:" in text and "differ from utt2spk" in text
    assert f"{d / 'spk2utt'}:3: speaker 'C03' has no utterance in utt2spk" in problems


def test_segments_problems(tmp_path):
    d = make_dir(tmp_path / "d", GOOD, segments="A01-r1-0001 A01-r1 1.5 1.5\nA01-r1-0002 A01-r1 -0.5 2\n"
                                                "A01-r2-0001 A01-r9 0 2.25\nB02-r3-0001 B02-r3 0.1 -2\n")
    problems = validate_data_dir(d)
    seg = d / "segments"
    assert any(p.startswith(f"{seg}:1:") and "start >= end" in p for p in problems), problems
    assert any(p.startswith(f"{seg}:2:") and "negative start" in p for p in problems)
    assert f"{seg}:3: recording 'A01-r9' of 'A01-r2-0001' is not in wav.scp" in problems
    assert any(p.startswith(f"{seg}:4:") and "only -1" in p for p in problems)
    assert f"{d / 'wav.scp'}:2: recording 'A01-r2' is used by no segment" in problems
    make_dir(d, GOOD, segments="A01-r1-0001 A01-r1 0 1.5 extra\n")
    assert any("expected 'utt recording start end'" in p for p in validate_data_dir(d))


def test_malformed_lines_and_required_files(tmp_path):
    d = make_dir(tmp_path / "d", GOOD, utt2spk="A01-r1-0001 A01\nA01-r1-0002\n\nA01-r2-0001 A01 x\n"
                                               "B02-r3-0001 B02\n", utt2dur=GOOD["utt2dur"].replace("0.8", "abc"))
    problems = "\n".join(validate_data_dir(d))
    assert f"{d / 'utt2spk'}:2: expected 'key value'" in problems
    assert f"{d / 'utt2spk'}:3: empty line" in problems
    assert f"{d / 'utt2spk'}:4: expected 'key value' with a one-word value" in problems
    assert f"{d / 'utt2dur'}:4: duration must be a number" in problems
    (d / "text").unlink()
    assert any(p.startswith(f"{d / 'text'}: missing") for p in validate_data_dir(d))
    make_dir(d, GOOD)
    (d / "text").unlink()
    assert validate_data_dir(d, no_text=True) == []
    assert validate_bin.main(["--no-text", str(d)]) == 0
    assert validate_data_dir(tmp_path / "nothere") == [f"{tmp_path / 'nothere'}: not a directory"]


def test_spk_sort_check(tmp_path):
    d = make_dir(tmp_path / "d", {"wav.scp": "u1 /1.wav\nu2 /2.wav\n", "utt2spk": "u1 s2\nu2 s1\n",
                                  "spk2utt": "s1 u2\ns2 u1\n"})
    problems = validate_data_dir(d, no_text=True)
    assert len(problems) == 1 and "sorted by speaker" in problems[0] and problems[0].startswith(f"{d / 'utt2spk'}:1:")
    assert validate_data_dir(d, no_text=True, no_spk_sort=True) == []


def test_problems_are_capped_per_kind(tmp_path):
    n = 60
    wav = "".join(f"u{i:03d} /x.wav\n" for i in reversed(range(n)))
    d = make_dir(tmp_path / "d", {"wav.scp": wav})
    problems = validate_data_dir(d, no_text=True, no_spk_sort=True)
    order = [p for p in problems if "not sorted" in p]
    assert len(order) == 20 and any("39 more problems" in p for p in problems)


def test_validate_cli_prints_problems_and_fails(tmp_path, capsys):
    d = make_dir(tmp_path / "d", GOOD, wav_scp=GOOD["wav.scp"] + "B02-r3 /other.wav\n")
    assert validate_bin.main(["--no-feats", str(d)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"{d / 'wav.scp'}:4: duplicate key 'B02-r3' (first at line 3)" in out


def test_fix_keeps_intersection_sorts_and_backs_up(tmp_path):
    files = {
        "wav.scp": "u3 /3.wav\nu1 /1.wav\nu2 /2.wav\nu4 /4.wav\nu1 /dup.wav\n",
        "utt2spk": "u1 u\nu2 u\nu3 u\n",            # no u4
        "text": "u2 b\nu1 a\nu4 d\nu3\nu9 z\n",         # no... u9 is extra; u3 has an empty transcript
        "spk2utt": "u u3\n",                           # wrong; regenerated
        "utt2dur": "u1 1.0\nu2 bad\nu3 3.0\nu4 4.0\n",  # u2 malformed: dropped
    }
    d = make_dir(tmp_path / "d", files)
    rep = fix_data_dir(d)
    assert rep.utterances_after == 2 and set(rep.removed) == {"u2", "u4", "u9"}
    assert (d / "wav.scp").read_text() == "u1 /1.wav\nu3 /3.wav\n"
    assert (d / "utt2spk").read_text() == "u1 u\nu3 u\n"
    assert (d / "text").read_text() == "u1 a\nu3\n"
    assert (d / "spk2utt").read_text() == "u u1 u3\n"
    assert (d / "utt2dur").read_text() == "u1 1.0\nu3 3.0\n"
    for name, text in files.items():
        assert (d / ".backup" / name).read_text() == text
    assert any("duplicate key 'u1'" in x for x in rep.dropped_lines)
    assert validate_data_dir(d) == []
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]
    # idempotent: a second run changes nothing and keeps the first backups
    rep2 = fix_data_dir(d)
    assert rep2.changed == [] and rep2.removed == []
    assert (d / ".backup" / "wav.scp").read_text() == files["wav.scp"]


def test_fix_with_segments(tmp_path):
    d = make_dir(tmp_path / "d", GOOD,
                 wav_scp=GOOD["wav.scp"] + "C03-r4 /r4.wav\n",                      # unused recording
                 segments=GOOD["segments"].replace("A01-r2-0001 A01-r2 0 2.25", "A01-r2-0001 A01-r2 3 2")
                 + "B02-r9-0001 B02-r9 0 1\n")                                       # bad segment, unknown reco
    assert validate_data_dir(d) != []
    rep = fix_data_dir(d)
    assert "A01-r2-0001" in rep.removed
    assert validate_data_dir(d) == []
    assert list(read_segments(d / "segments")) == ["A01-r1-0001", "A01-r1-0002", "B02-r3-0001"]
    assert [k for k in (d / "wav.scp").read_text().split("\n") if k] == ["A01-r1 /data/a b/r1.wav",
                                                                            "B02-r3 /data/r3.wav"]
    assert read_spk2utt(d / "spk2utt") == {"A01": ["A01-r1-0001", "A01-r1-0002"], "B02": ["B02-r3-0001"]}


def test_fix_refuses_to_empty_a_dir(tmp_path):
    d = make_dir(tmp_path / "d", {"wav.scp": "u1 /1.wav\n", "utt2spk": "u2 s\n"})
    with pytest.raises(ValueError, match="no utterance"):
        fix_data_dir(d)
    assert (d / "wav.scp").read_text() == "u1 /1.wav\n" and not (d / ".backup").exists()
    assert fix_bin.main([str(d)]) == 1
    assert fix_bin.main([str(tmp_path / "empty")]) == 1


def test_fix_utt_extra_files(tmp_path):
    d = make_dir(tmp_path / "d", {"wav.scp": "u1 /1.wav\nu2 /2.wav\n", "utt2spk": "u1 u\nu2 u\n",
                                  "utt2emotion": "u2 happy\n"})
    assert fix_bin.main(["--utt-extra-files", "utt2emotion", str(d)]) == 0
    assert (d / "wav.scp").read_text() == "u2 /2.wav\n"


def test_shell_wrappers(tmp_path):
    d = make_dir(tmp_path / "d", GOOD, utt2spk=GOOD["utt2spk"] + "Z9 Z\n")
    env = {**os.environ, "LC_ALL": "C"}
    for tool in ("validate_data_dir.sh", "fix_data_dir.sh"):
        assert os.access(ROOT / "utils" / tool, os.X_OK)
    r = subprocess.run([str(ROOT / "utils" / "validate_data_dir.sh"), str(d)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 1 and f"{d / 'utt2spk'}:5: utterance 'Z9' is not in segments" in r.stdout
    r = subprocess.run([str(ROOT / "utils" / "fix_data_dir.sh"), str(d)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(ROOT / "utils" / "validate_data_dir.sh"), "--no-feats", str(d)], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_readers_writers_round_trip(tmp_path):
    d = make_dir(tmp_path / "d", GOOD)
    assert read_text(d / "text")["A01-r1-0001"] == "你好　世界"  # the ideographic space stays in the value
    assert read_text(d / "text")["A01-r2-0001"] == ""
    utt2spk = read_utt2spk(d / "utt2spk")
    assert utt2spk_to_spk2utt(utt2spk) == read_spk2utt(d / "spk2utt")
    segs = read_segments(d / "segments")
    assert segs["A01-r1-0002"] == Segment("A01-r1", 1.5, None)
    write_segments(tmp_path / "segments", segs)
    assert read_segments(tmp_path / "segments") == segs
    write_spk2utt(tmp_path / "spk2utt", {"b": ["b1"], "a": ["a1", "a2"]})
    assert (tmp_path / "spk2utt").read_text() == "a a1 a2\nb b1\n"
    write_utt2dur(tmp_path / "utt2dur", {"x": 1 / 3})
    assert read_utt2dur(tmp_path / "utt2dur") == {"x": 1 / 3}
    with pytest.raises(ValueError, match=r"utt2spk:2: duplicate key"):
        (tmp_path / "utt2spk").write_text("a s\na t\n")
        read_utt2spk(tmp_path / "utt2spk")


def test_iter_utterances(tmp_path):
    d = make_dir(tmp_path / "d", GOOD)
    utts = list(iter_utterances(d))
    assert [u.key for u in utts] == ["A01-r1-0001", "A01-r1-0002", "A01-r2-0001", "B02-r3-0001"]
    assert utts[0].recording == WavEntry("A01-r1", "/data/a b/r1.wav")
    assert (utts[0].start, utts[0].end) == (0.0, 1.5) and (utts[1].start, utts[1].end) == (1.5, None)
    assert utts[2].recording.is_pipe
    (d / "segments").unlink()
    whole = list(iter_utterances(d))
    assert [(u.key, u.start, u.end) for u in whole] == [("A01-r1", 0.0, None), ("A01-r2", 0.0, None),
                                                         ("B02-r3", 0.0, None)]
    make_dir(d, GOOD, segments="s1 nope 0 1\n")
    with pytest.raises(ValueError, match=r"segments:1: recording 'nope'"):
        list(iter_utterances(d))


# ----------------------------------------------------------------------------------------------- segment audio

@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    d = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    out = {}
    for name, rate, channels in (("r16k", 16000, 1), ("r44k", 44100, 2)):
        data = (rng.standard_normal((int(rate * 2.5), channels)) * 0.2).clip(-1, 1)
        path = d / f"{name}.wav"
        sf.write(path, data, rate, subtype="PCM_16")
        out[name] = path
    return out


@pytest.mark.parametrize("start,end", [(0.5, 1.25), (0.0, None), (1.0, -1), (0.3, 2.5), (2.0, 2.9)])
def test_segment_16k_equals_slice_of_decoded_file(wavs, start, end):
    entry = WavEntry("r16k", str(wavs["r16k"]))
    got = load_utterance_audio(entry, start, end, key="utt")
    full = load_audio(str(wavs["r16k"]))
    s = round(start * 16000)
    e = full.numel() if end in (None, -1) or end * 16000 > full.numel() else round(end * 16000)
    assert torch.equal(got, full[s:e])


@pytest.mark.parametrize("start,end", [(0.3, 1.7), (0.0, None), (1.0, 2.2)])
def test_segment_44k_is_cut_before_mean_and_resample(wavs, start, end):
    path = wavs["r44k"]
    audio, rate = read_audio(str(path))
    assert rate == 44100 and audio.shape[0] == 2
    s = int(np.floor(start * rate + 0.5))
    e = audio.shape[-1] if end is None else int(np.floor(end * rate + 0.5))
    want = resample(audio[:, s:e].mean(dim=0), rate, 16000)
    got = load_utterance_audio(WavEntry("r44k", str(path)), start, end)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    if end is None and start == 0.0:
        assert torch.equal(got, load_audio(str(path)))


def test_segment_from_pipe_and_full_decode_fallback(wavs, monkeypatch, tmp_path):
    path = wavs["r44k"]
    by_path = load_utterance_audio(WavEntry("r", str(path)), 0.25, 1.5)
    piped = load_utterance_audio(WavEntry("r", f"cat '{path}' |"), 0.25, 1.5)
    assert torch.equal(by_path, piped)
    monkeypatch.setattr(segments_mod, "EXACT_SEEK_FORMATS", frozenset())  # decode whole, then slice
    assert torch.equal(load_utterance_audio(WavEntry("r", str(path)), 0.25, 1.5), by_path)
    assert torch.equal(load_utterance_audio(WavEntry("r", f"cat '{path}' |"), 0.25, 1.5), by_path)
    # relative paths resolve against base_dir
    assert torch.equal(load_utterance_audio(WavEntry("r", path.name), 0.25, 1.5, base_dir=path.parent), by_path)


def test_segment_errors_name_utterance_and_problem(wavs, tmp_path):
    entry = WavEntry("r16k", str(wavs["r16k"]))
    with pytest.raises(AudioError, match=r"utterance 'u1' \(recording 'r16k'\): .*r16k.wav: segment starts at 3.0 s"):
        load_utterance_audio(entry, 3.0, 4.0, key="u1")
    with pytest.raises(AudioError, match=r"utterance 'u2'.*past the end of the recording"):
        load_utterance_audio(entry, 1.0, 3.5, key="u2")
    with pytest.raises(AudioError, match=r"utterance 'u3'.*empty segment"):
        load_utterance_audio(entry, 1.0, 1.0, key="u3")
    with pytest.raises(AudioError, match=r"utterance 'u4'.*>= 0"):
        load_utterance_audio(entry, -1.0, 1.0, key="u4")
    with pytest.raises(AudioError, match=r"utterance 'u5'.*no such audio file"):
        load_utterance_audio(WavEntry("gone", str(tmp_path / "gone.wav")), 0, 1, key="u5")
    with pytest.raises(AudioError, match=r"utterance 'u6'.*pipe command failed"):
        load_utterance_audio(WavEntry("p", "exit 3 |"), 0, 1, key="u6")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match=r"utterance 'u7'.*cannot decode"):
        load_utterance_audio(WavEntry("j", str(tmp_path / "junk.wav")), 0, 1, key="u7")
    # an end past the file by less than max_overshoot (0.5 s) is cut at the end, as extract-segments does
    assert load_utterance_audio(entry, 2.0, 2.9).numel() == 8000


def test_segment_samples_rounding():
    assert segment_samples(0.7, 1.0, 44100, 44100) == (30870, 44100)  # truncation would give 30869
    assert segment_samples(0.0, None, 16000, 100) == (0, 100)
    with pytest.raises(AudioError):
        segment_samples(0.0, 1.0, 16000, 1000, max_overshoot=0.0)
