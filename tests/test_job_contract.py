"""The job system's contract with its input and its user, on tiny hand-made data (no model, seconds): keys
that no table can hold are refused when read, Kaldi files are cut at newlines only, ``tokenized/`` lists
every utterance it leaves out, merges judge failures and refuse bad usage before publishing, a data dir is
read the same way by every tool, splits never hold blank lines, ``--rerun-failed`` reruns a changed command."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from s3tok.bin import compute_mel as compute_mel_cli
from s3tok.bin import merge_mel as merge_mel_cli
from s3tok.bin import merge_tokens as merge_tokens_cli
from s3tok.bin import split_scp as split_scp_cli
from s3tok.bin import tokenize as tokenize_cli
from s3tok.data.ark import read_int32_vectors, write_int32_vectors
from s3tok.data.lines import read_lines
from s3tok.data.sources import Utterance
from s3tok.data.split import split_file
from s3tok.data.validate import fix_data_dir, validate_data_dir
from s3tok.stages.merge import write_consistent_dir
from s3tok.stages.protocol import read_pairs

ROOT = Path(__file__).resolve().parents[1]
RUN_PL = ROOT / "utils" / "run.pl"
ODD_KEYS = ("a\u2028b", "a\u2029b", "a\u0085b", "e\x1cf", "e\x1ef", "e\x0bf", "e\x7ff")


# ------------------------------------------------------------------------------------ keys and line ends
@pytest.mark.parametrize("key", ODD_KEYS)
def test_key_with_line_separator_or_control_char_is_refused_when_read(tmp_path, key):
    scp = tmp_path / "wav.scp"
    scp.write_bytes(f"ok /x/1.wav\n{key} /x/2.wav\n".encode("utf-8"))
    with pytest.raises(ValueError) as e:
        read_lines(scp, skip_blank=True)
    assert f"{scp}:2: key {key!r}" in str(e.value)


def test_no_break_space_stays_part_of_a_key(tmp_path):
    scp = tmp_path / "wav.scp"
    scp.write_bytes("a\u00a0b /x/1.wav\r\n".encode("utf-8"))
    assert [(ln.key, ln.value) for ln in read_lines(scp)] == [("a\u00a0b", "/x/1.wav")]


@pytest.mark.parametrize("key", ("a\u2028b", "e\x1cf"))
def test_ark_writer_refuses_odd_key_as_bad_input_not_disk_fault(tmp_path, key):
    """Kaldi's refusal of a key must never read as an I/O error (exit 3), nor a key cut the scp in two."""
    with pytest.raises(ValueError, match="invalid key"):
        write_int32_vectors((tmp_path / "t.ark", tmp_path / "t.scp"), [("ok", [1, 2]), (key, [3])])
    assert not (tmp_path / "t.scp").exists()


def test_ark_scp_written_and_repointed_at_newlines_only(tmp_path):
    keys = ["a\u00a0b", "\u00e9t\u00e9", "c"]
    n = write_int32_vectors((tmp_path / "t.ark", tmp_path / "t.scp"), [(k, [i]) for i, k in enumerate(keys)])
    assert n == 3
    assert [k for k, _ in read_int32_vectors(f"scp:{tmp_path / 't.scp'}")] == keys


def test_job_tables_are_cut_at_newlines_only(tmp_path):
    fail = tmp_path / "utt2fail"
    fail.write_bytes("k1 reason\u2028with\x1cseparators\r\nk2 other\n\n".encode("utf-8"))
    assert read_pairs(fail) == [("k1", "reason\u2028with\x1cseparators"), ("k2", "other")]
    from s3tok.data.lines import split_text_lines

    assert split_text_lines("a\u0085b x\r\ny\n") == ["a\u0085b x", "y"]


def test_tokenize_refuses_odd_key_before_any_work(tmp_path, caplog):
    scp = tmp_path / "wav.scp"
    scp.write_bytes("a\u2028b /no/such.wav\n".encode("utf-8"))
    out = tmp_path / "out"
    rc = tokenize_cli.main(["--wav_scp", str(scp), "--model", str(tmp_path / "none.onnx"), "--output_dir", str(out),
                            "--no_progress"])
    assert rc == 2
    assert f"{scp}:1: key 'a\\u2028b' holds a line separator" in caplog.text
    assert not out.exists()


def test_keys_of_containers_are_checked_too():
    from s3tok.bin import check_keys

    with pytest.raises(ValueError, match=r"--tar_list x: key 'e\\x1cf' holds a control character"):
        check_keys([Utterance("ok"), Utterance("e\x1cf")], "--tar_list x")


# ------------------------------------------------------------------------------------ data dirs
def _data_dir(d: Path, text: bytes = b"u1 hello\nu2 world\nu3 again\n") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "wav.scp").write_text("u1 /a/1.wav\nu2 /a/2.wav\nu3 /a/3.wav\n")
    (d / "text").write_bytes(text)
    (d / "utt2spk").write_text("u1 s1\nu2 s1\nu3 s2\n")
    (d / "spk2utt").write_text("s1 u1 u2\ns2 u3\n")
    return d


def test_bom_is_read_alike_by_validate_and_fix(tmp_path):
    d = _data_dir(tmp_path / "d", b"\xef\xbb\xbfu1 hello\nu2 world\nu3 again\n")
    assert validate_data_dir(d) == []
    rep = fix_data_dir(d)
    assert (rep.utterances_before, rep.utterances_after, rep.removed) == (3, 3, [])
    assert (d / "wav.scp").read_text() == "u1 /a/1.wav\nu2 /a/2.wav\nu3 /a/3.wav\n"
    assert (d / "text").read_bytes() == b"u1 hello\nu2 world\nu3 again\n"


def test_empty_data_dir_is_refused(tmp_path):
    d = tmp_path / "e"
    d.mkdir()
    for name in ("wav.scp", "text", "utt2spk", "spk2utt"):
        (d / name).write_bytes(b"")
    problems = validate_data_dir(d)
    assert f"{d / 'utt2spk'}: empty file (required)" in problems
    assert any("no utterances: the data dir is empty" in p for p in problems)


def test_text_must_cover_every_utterance(tmp_path):
    d = _data_dir(tmp_path / "d", b"u1 hello\nu3 again\n")
    assert validate_data_dir(d) == [f"{d / 'wav.scp'}:2: utterance 'u2' has no line in text"]
    assert validate_data_dir(d, no_text=True) == []


def test_validate_and_fix_refuse_odd_keys(tmp_path):
    d = _data_dir(tmp_path / "d", "u1 hello\nu2 world\nu3 again\nu3\u2028x odd\n".encode("utf-8"))
    assert any(f"{d / 'text'}:4: key 'u3\\u2028x' holds a line separator" in p for p in validate_data_dir(d))
    rep = fix_data_dir(d)
    assert rep.utterances_after == 3 and any("u3\\u2028x" in line for line in rep.dropped_lines)


# ------------------------------------------------------------------------------------ tokenized/
def _merged(d: Path, keys, failed=()) -> None:
    import torch

    ok = [k for k in keys if k not in dict(failed)]
    (d / "tokens.scp").write_text("".join(f"{k} tokens.ark:{i + 1}\n" for i, k in enumerate(ok)))
    (d / "utt2num_tokens").write_text("".join(f"{k} 2\n" for k in ok))
    (d / "utt2fail").write_text("".join(f"{k} {why}\n" for k, why in failed))
    (d / "tokenizer.json").write_text("{}\n")
    torch.save({k: [1, 2] for k in ok}, d / "utt2speech_token.pt")


def test_tokenized_lists_every_utterance_it_leaves_out(tmp_path):
    """A data dir without a text line for u2 and a stale feats.scp without u3: u2 has tokens but no text
    (listed in removed with the reason), u3 is kept (the stale feats.scp is not copied), u1 failed."""
    import torch

    d = _data_dir(tmp_path / "d", b"u1 hello\nu3 again\n")
    (d / "feats.scp").write_text("u1 f.ark:1\nu2 f.ark:2\n")
    _merged(d, ["u1", "u2", "u3"], failed=[("u1", "cannot decode")])
    kept, removed = write_consistent_dir(d, d, d / "tokenized", ["u1", "u2", "u3"])
    t = d / "tokenized"
    assert (kept, removed) == (1, 2)
    assert (t / "removed").read_text() == "u1 cannot decode\nu2 has tokens but no line in text\n"
    for name in ("wav.scp", "text", "utt2spk", "tokens.scp", "utt2num_tokens"):
        assert [line.split()[0] for line in (t / name).read_text().splitlines()] == ["u3"], name
    assert not (t / "feats.scp").exists()
    assert set(torch.load(t / "utt2speech_token.pt")) == {"u3"}


def test_consistent_dir_not_ours_is_bad_usage_refused_before_publishing(tmp_path, caplog):
    d = _data_dir(tmp_path / "d")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README").write_text("notes\n")
    with pytest.raises(ValueError, match="was not made by merge_tokens"):
        write_consistent_dir(d, d, mine)
    dest = tmp_path / "dest"
    rc = merge_tokens_cli.main(["--data_dir", str(d), "--output_dir", str(tmp_path / "exp"), "--num_jobs", "0",
                                "--dest", str(dest), "--consistent_dir", str(mine)])
    assert rc == 2 and "--consistent_dir" in caplog.text
    assert not dest.exists() and (mine / "README").read_text() == "notes\n"


# ------------------------------------------------------------------------------------ merge-mel
def test_merge_mel_judges_failures(tmp_path, caplog):
    d = tmp_path / "d"
    d.mkdir()
    for i in (1, 2):
        (tmp_path / f"{i}.wav").write_bytes(b"junk\n")
    (d / "wav.scp").write_text(f"u1 {tmp_path / '1.wav'}\nu2 {tmp_path / '2.wav'}\n")
    out = tmp_path / "mel"
    assert compute_mel_cli.main(["--data_dir", str(d), "--output_dir", str(out), "--no_progress",
                                 "--max_fail_ratio", "1"]) == 0
    caplog.clear()
    assert merge_mel_cli.main(["--data_dir", str(d), "--output_dir", str(out), "--num_jobs", "0"]) == 1
    assert "2 / 2 failed" in caplog.text and "mel_fail" in caplog.text
    assert len((d / "mel_fail").read_text().splitlines()) == 2
    assert merge_mel_cli.main(["--data_dir", str(d), "--output_dir", str(out), "--num_jobs", "0",
                               "--max_fail_ratio", "1"]) == 0


# ------------------------------------------------------------------------------------ split-scp
def test_split_ignores_blank_lines(tmp_path):
    scp = tmp_path / "wav.scp"
    scp.write_bytes(b"".join(b"utt%02d /x/%d.wav\n" % (i, i) for i in range(1, 11)) + b"\n \r\n\n\n")
    pieces = split_file(str(scp), 5)
    assert [len(p) for p in pieces] == [2, 2, 2, 2, 2]
    assert b"".join(b"".join(p) for p in pieces) == scp.read_bytes().rstrip(b" \r\n") + b"\n"
    outs = [str(tmp_path / f"o{j}") for j in range(1, 12)]
    assert split_scp_cli.main([str(scp), *outs]) == 1  # 10 keys, 11 outputs: refused


def test_split_of_only_blank_lines_is_an_error(tmp_path, capsys):
    scp = tmp_path / "blank.scp"
    scp.write_bytes(b"\n\n \n")
    with pytest.raises(ValueError, match="only blank lines, nothing to split"):
        split_file(str(scp), 2)
    assert split_scp_cli.main(["--num_pieces", "2", str(scp), str(tmp_path / "split")]) == 1
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------------------------ --rerun-failed
def test_rerun_failed_reruns_a_job_whose_log_records_another_command(tmp_path):
    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(RUN_PL), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                              env={**os.environ, **env})

    assert run("JOB=1:2", "log/x.JOB.log", "echo", "old", "JOB", ">", "out.JOB").returncode == 0
    r = run("JOB=1:2", "log/x.JOB.log", "echo", "new", "JOB", ">", "out.JOB", S3TOK_RERUN_FAILED="1")
    assert r.returncode == 0 and "rerunning 2 of 2" in r.stderr
    assert (tmp_path / "out.1").read_text() == "new 1\n" and (tmp_path / "out.2").read_text() == "new 2\n"
    r = run("--rerun-failed", "JOB=1:2", "log/x.JOB.log", "echo", "new", "JOB", ">", "out.JOB")
    assert "rerunning 0 of 2" in r.stderr  # the same command, succeeded: not run again


# ------------------------------------------------------------------------------------ recipe options
def _options_script(tmp_path: Path) -> Path:
    script = tmp_path / "s.sh"
    script.write_text(f"stage=0\nuse_mel=true\nsets=\"a b\"\n. {ROOT}/utils/parse_options.sh\n"
                      'echo "$stage|$use_mel|$sets|$#"\n')
    return script


@pytest.mark.parametrize("args,message", [
    (("--use_mel", "True"), "--use_mel: expected true or false, got 'True'"),
    (("--stage", "one"), "--stage: expected an integer, got 'one'"),
    (("--stage=1.5",), "--stage: expected an integer, got '1.5'"),
    (("--no_such", "1"), "unknown option --no_such"),
])
def test_parse_options_refuses_bad_values(tmp_path, args, message):
    r = subprocess.run(["bash", str(_options_script(tmp_path)), *args], capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr and r.stdout == ""


def test_parse_options_keeps_kaldi_semantics(tmp_path):
    r = subprocess.run(["bash", str(_options_script(tmp_path)), "--stage", "-1", "--use-mel=false", "--sets",
                        "dev test", "pos"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "-1|false|dev test|1\n"


def test_recipe_refuses_leftover_arguments(tmp_path):
    """``--sets dev test``: "test" would be silently dropped; the recipe stops before any stage instead."""
    import shutil

    shutil.copytree(ROOT / "egs", tmp_path / "egs", ignore=shutil.ignore_patterns("data", "exp"))
    shutil.copytree(ROOT / "utils", tmp_path / "utils")
    shutil.copy2(ROOT / "path.sh", tmp_path / "path.sh")
    recipe = tmp_path / "egs" / "mini"
    run = lambda *a: subprocess.run(["./run.sh", *a], cwd=recipe, capture_output=True, text=True)  # noqa: E731
    out = run("--stop_stage", "0", "--sets", "dev", "test")
    assert out.returncode == 2 and "unexpected argument(s) 'test'" in out.stderr
    assert not (recipe / "data").exists()
    out = run("--stage", "1", "--stop_stage", "1", "--sets", "dev", "--use_mel", "True")
    assert out.returncode == 2 and "expected true or false" in out.stderr

