"""``s3tok stats``: token statistics and the warnings that catch a broken run (wrong rate, wrong model)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from s3tok import cli
from s3tok.bin import stats as stats_bin
from s3tok.data.ark import write_int32_vectors
from s3tok.model.config import MODEL_NAMES, official_config
from s3tok.data.tokens import read_token_table
from s3tok.checks.stats import (Thresholds, expected_num_tokens, load_set, summary_lines,
                         token_stats)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
K, RATE = 6561, 25


def make_set(seed: int = 0, n_utts: int = 30, rate_made: int = RATE, codebook_size: int = K):
    """Random tokens with the exact count of random mel-frame lengths, as a model at ``rate_made`` gives."""
    rng = np.random.default_rng(seed)
    frames = {f"utt{i:03d}": int(rng.integers(80, 1500)) for i in range(n_utts)}
    tokens = {k: rng.integers(0, codebook_size, expected_num_tokens(t, rate_made)).tolist() for k, t in frames.items()}
    return tokens, frames


def warned(stats, word: str) -> bool:
    return any(word in w for w in stats["warnings"])


def write_data_dir(d: Path, tokens, frames=None, tokenizer=None, scp=True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    if scp:
        write_int32_vectors((d / "tokens.ark", d / "tokens.scp"), [(k, list(v)) for k, v in tokens.items()])
    else:
        (d / "tokens.txt").write_text("".join(f"{k} {' '.join(map(str, v))}\n" for k, v in tokens.items()))
    if frames is not None:
        (d / "utt2num_frames").write_text("".join(f"{k} {v}\n" for k, v in frames.items()))
    if tokenizer is not None:
        (d / "tokenizer.json").write_text(json.dumps(tokenizer))
    return d


TOKENIZER_V2 = {"model": "speech_tokenizer_v2_25hz", "token_rate": 25, "codebook_size": 6561, "dtype": "float32"}


# ----------------------------------------------------------------------------------------------- the API

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_expected_count_is_the_models_count(name):
    cfg = official_config(name)
    for t in (1, 2, 3, 4, 5, 142, 420, 833, 3001, 6502):
        assert expected_num_tokens(t, cfg.token_rate) == cfg.num_tokens(t)
    assert expected_num_tokens(833, 25) == 209 and expected_num_tokens(833, 50) == 417
    assert expected_num_tokens(100, 12.5) is None


def test_healthy_set_has_no_warnings():
    tokens, frames = make_set()
    s = token_stats(tokens, K, RATE, frames=frames)
    assert s["warnings"] == []
    assert s["num_utterances"] == 30 and s["num_tokens"] == sum(map(len, tokens.values()))
    assert s["rate"]["count_check"] == {"checked": 30, "mismatched": 0, "ratio": 1.0, "examples": []}
    assert abs(s["rate"]["overall"] - RATE) < 0.5
    cb = s["codebook"]
    assert 0 < cb["usage"] <= 1 and cb["entropy_ratio"] > 0.8 and len(cb["top"]) == 20
    assert cb["top"][0]["count"] >= cb["top"][-1]["count"]
    assert s["suspicious"]["num_utterances"] == 0
    json.dumps(s)  # JSON-ready
    assert any("exact counts: 30 / 30" in line for line in summary_lines(s))


def test_healthy_set_with_durations_only():
    tokens, frames = make_set()
    durations = {k: t / 100 + 0.004 for k, t in frames.items()}  # utt2dur: a little more than frames / 100
    s = token_stats(tokens, K, RATE, durations)
    assert s["warnings"] == [] and "count_check" not in s["rate"]
    assert s["rate"]["utterances_with_duration"] == 30


@pytest.mark.parametrize("made, claimed, word", [(50, 25, "twice"), (25, 50, "half")])
def test_wrong_rate_warns(made, claimed, word):
    tokens, frames = make_set(rate_made=made)
    s = token_stats(tokens, K, claimed, frames=frames)
    assert s["rate"]["count_check"]["mismatched"] == 30
    assert warned(s, "token rate:") and warned(s, "token counts:") and warned(s, word)
    s = token_stats(tokens, K, claimed, {k: t / 100 for k, t in frames.items()})  # durations only
    assert warned(s, "token rate:") and warned(s, word)


def test_wrong_sample_rate_warns():
    """8 kHz audio decoded as 16 kHz: half the tokens for the true duration (utt2dur)."""
    tokens, frames = make_set()
    tokens = {k: v[: len(v) // 2] for k, v in tokens.items()}
    s = token_stats(tokens, K, RATE, {k: t / 100 for k, t in frames.items()})
    assert warned(s, "token rate:") and warned(s, "8 kHz decoded as 16 kHz")


def test_off_by_one_counts_are_reported():
    tokens, frames = make_set()
    tokens["utt003"] = tokens["utt003"][:-1]
    s = token_stats(tokens, K, RATE, frames=frames)
    check = s["rate"]["count_check"]
    assert check["mismatched"] == 1 and check["examples"][0]["utt"] == "utt003"
    assert warned(s, "token counts: 1 / 30") and not warned(s, "token rate:")
    relaxed = token_stats(tokens, K, RATE, frames=frames, thresholds=Thresholds(max_count_mismatch_share=0.05))
    assert relaxed["warnings"] == []


def test_repeated_utterance_is_flagged():
    tokens, frames = make_set()
    tokens["utt007"] = [123] * len(tokens["utt007"])
    s = token_stats(tokens, K, RATE, frames=frames)
    rep = s["suspicious"]["repeated"]
    assert rep["count"] == 1 and rep["examples"][0]["utt"] == "utt007" and rep["examples"][0]["token"] == 123
    assert s["suspicious"]["low_distinct"]["examples"][0]["utt"] == "utt007"
    assert s["suspicious"]["num_utterances"] == 1
    assert s["warnings"] == []  # 1 of 30 is below the 5% default
    strict = token_stats(tokens, K, RATE, frames=frames, thresholds=Thresholds(max_suspicious_share=0.01))
    assert warned(strict, "suspicious utterances: 1 of 30")


def test_mostly_one_token_threshold():
    a = [5] * 85 + list(range(100, 115))  # 85% one token
    assert token_stats({"u": a}, K, RATE)["suspicious"]["repeated"]["count"] == 1
    assert token_stats({"u": a}, K, RATE, thresholds=Thresholds(max_repeat_share=0.9))[
        "suspicious"]["repeated"]["count"] == 0


def test_out_of_range_ids_are_flagged():
    tokens, frames = make_set(codebook_size=K)
    tokens["utt002"] = tokens["utt002"][:-2] + [6561, -1]
    s = token_stats(tokens, K, RATE, frames=frames)
    bad = s["suspicious"]["out_of_range"]
    assert s["suspicious"]["out_of_range_ids"] == 2 and bad["examples"][0]["utt"] == "utt002"
    assert warned(s, "outside [0, 6561)")
    # v2 tokens read as a 4096-code model
    assert warned(token_stats(make_set()[0], 4096, RATE), "outside [0, 4096)")


def test_empty_utterance_and_tiny_codebook_warn():
    rng = np.random.default_rng(1)
    tokens = {f"u{i}": rng.integers(0, 3, 200).tolist() for i in range(20)}
    tokens["empty"] = []
    s = token_stats(tokens, K, RATE)
    assert warned(s, "empty: 1 utterances") and warned(s, "codebook: only 3 of 6561 codes")
    assert token_stats({}, K, RATE)["warnings"] == ["no utterances: the token set is empty"]


# ---------------------------------------------------------------------------------------------- reading

def test_read_scp_and_txt_agree(tmp_path):
    tokens, frames = make_set(n_utts=5)
    tokens["utt001"] = []
    a = read_token_table(write_data_dir(tmp_path / "scp", tokens) / "tokens.scp")
    b = read_token_table(write_data_dir(tmp_path / "txt", tokens, scp=False) / "tokens.txt")
    assert list(a) == list(b) == list(tokens)
    assert all(a[k].tolist() == b[k].tolist() == tokens[k] for k in tokens)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="no such token file"):
        read_token_table(tmp_path / "nothing.scp")
    bad = tmp_path / "tokens.txt"
    bad.write_text("a 1 2\nb 3 x\n")
    with pytest.raises(ValueError, match=r"tokens.txt:2: token ids must be integers"):
        read_token_table(bad)
    scp = tmp_path / "tokens.scp"
    scp.write_text(f"a {tmp_path}/gone.ark:5\n")
    with pytest.raises(ValueError, match="tokens.scp:1: 'a' points at .*no such ark"):
        read_token_table(scp)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="neither tokens.scp nor tokens.txt"):
        load_set(tmp_path / "empty_dir")


def test_load_set_reads_what_is_beside(tmp_path):
    tokens, frames = make_set(n_utts=4)
    d = write_data_dir(tmp_path / "data", tokens, frames, TOKENIZER_V2)
    (d / "utt2dur").write_text("utt000 1.0\n")  # ignored: utt2num_frames wins
    ts = load_set(d)
    assert ts.path == d / "tokens.scp" and ts.token_rate == 25 and ts.codebook_size == 6561
    assert ts.frames == frames and ts.durations is None and ts.durations_path == d / "utt2num_frames"


# --------------------------------------------------------------------------------------------------- CLI

def test_cli_healthy_set(tmp_path):
    tokens, frames = make_set()
    d = write_data_dir(tmp_path / "data", tokens, frames, TOKENIZER_V2)
    assert cli.main(["stats", str(d), "--fail_on_warning", "--no_plots"]) == 0
    report = json.loads((d / "stats" / "token_stats.json").read_text())
    assert report["warnings"] == [] and report["model"] == "speech_tokenizer_v2_25hz"
    assert report["durations_from"] == str(d / "utt2num_frames")
    assert not list((d / "stats").glob("*.png"))


def test_cli_bad_set_fails_on_warning(tmp_path, caplog):
    tokens, frames = make_set(rate_made=50)  # a 50 Hz model's tokens, tokenizer.json claims 25 Hz
    tokens["utt004"] = [9] * 200
    d = write_data_dir(tmp_path / "data", tokens, frames, TOKENIZER_V2)
    out = tmp_path / "out"
    assert stats_bin.main([str(d / "tokens.scp"), "--out_dir", str(out), "--no_plots"]) == 0
    with caplog.at_level("WARNING"):
        assert stats_bin.main([str(d / "tokens.scp"), "--out_dir", str(out), "--no_plots",
                               "--fail_on_warning"]) == 1
    report = json.loads((out / "token_stats.json").read_text())
    assert any(w.startswith("token rate:") for w in report["warnings"])
    assert report["suspicious"]["repeated"]["examples"][0]["utt"] == "utt004"
    assert any(r.levelname == "WARNING" and "token rate:" in r.getMessage() for r in caplog.records)


def test_cli_model_sources(tmp_path):
    tokens, frames = make_set(n_utts=5)
    d = write_data_dir(tmp_path / "data", tokens, frames, scp=False)  # no tokenizer.json
    assert stats_bin.main([str(d), "--no_plots"]) == 2  # rate and codebook unknown
    assert stats_bin.main([str(d), "--no_plots", "--token_rate", "25"]) == 2  # half the pair
    assert stats_bin.main([str(d), "--no_plots", "--model", "no_such_model"]) == 2
    assert stats_bin.main([str(d), "--no_plots", "--fail_on_warning", "--model", "speech_tokenizer_v3_25hz"]) == 0
    assert stats_bin.main([str(d), "--no_plots", "--fail_on_warning", "--token_rate", "25",
                           "--codebook_size", "6561"]) == 0
    assert stats_bin.main([str(tmp_path / "missing"), "--no_plots"]) == 2
    # tokenizer.json says v2 (25 Hz) but the user expects v1 (50 Hz): a warning
    (d / "tokenizer.json").write_text(json.dumps(TOKENIZER_V2))
    assert stats_bin.main([str(d), "--no_plots", "--fail_on_warning", "--model", "speech_tokenizer_v1"]) == 1
    report = json.loads((d / "stats" / "token_stats.json").read_text())
    assert report["warnings"][0].startswith("model:") and report["token_rate"] == 25


def test_plots_are_png(tmp_path):
    pytest.importorskip("matplotlib")
    from s3tok.checks.stats_plots import FILES, write_plots

    tokens, frames = make_set()
    paths = write_plots(tokens, K, RATE, tmp_path / "plots", frames=frames, title="synthetic")
    assert sorted(p.name for p in paths) == sorted(FILES.values())
    for p in paths:
        assert p.read_bytes()[:8] == PNG_SIGNATURE and p.stat().st_size > 1000
    # without durations the rate and length plots still come out (saying so)
    assert all(p.read_bytes()[:8] == PNG_SIGNATURE for p in write_plots(tokens, K, RATE, tmp_path / "nodur"))


def test_cli_writes_plots(tmp_path):
    pytest.importorskip("matplotlib")
    tokens, frames = make_set()
    d = write_data_dir(tmp_path / "data", tokens, frames, TOKENIZER_V2)
    assert stats_bin.main([str(d)]) == 0
    for name in ("token_stats.json", "codebook_usage.png", "token_rate.png", "token_lengths.png",
                 "token_stats.png"):
        assert (d / "stats" / name).is_file(), name
    assert (d / "stats" / "token_rate.png").read_bytes()[:8] == PNG_SIGNATURE


# ------------------------------------------------------------------------------- real tokens, end to end

def test_reference_tokens_pass_the_rate_check(ref, tmp_path):
    """Reference clips tokenized with the (random-weight) reference v2 model: counts match the frames; the only
    model warning is that its weights are random."""
    import s3tok
    from s3tok.data.audio import mel_frames

    out = tmp_path / "tok"
    assert cli.main(["tokenize", "--wav_dir", str(ref / "audio"), "--model",
                     str(ref / "models" / "speech_tokenizer_v2_25hz.onnx"), "--output_dir", str(out),
                     "--no_progress"]) == 0
    frames = {}
    for line in (ref / "wav.scp").read_text().splitlines():
        utt, path = line.split(maxsplit=1)
        frames[utt] = mel_frames(len(s3tok.load_audio(str(ref / path))))
    (tmp_path / "utt2num_frames").write_text("".join(f"{k} {v}\n" for k, v in frames.items()))
    rc = cli.main(["stats", str(out / "tokens.txt"), "--model", "speech_tokenizer_v2_25hz", "--no_plots",
                   "--utt2num_frames", str(tmp_path / "utt2num_frames")])
    assert rc == 0
    report = json.loads((out / "stats" / "token_stats.json").read_text())
    assert report["num_utterances"] == len(frames) == 17
    assert report["rate"]["count_check"]["checked"] == 17
    assert report["rate"]["count_check"]["mismatched"] == 0
    assert abs(report["rate"]["ratio"] - 1) < 0.05
    warnings = [w for w in report["warnings"] if w.startswith(("token rate", "token counts", "model:"))]
    assert all("random-weight test model" in w for w in warnings), warnings  # the test set's models are marked
