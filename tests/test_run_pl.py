"""``utils/run.pl``: Kaldi's job contract (header, footer, ``k / N failed``, exit 1), rerun of failed jobs,
``JOB`` substitution, concurrency limits, GPU assignment and a clean stop on SIGTERM."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from s3tok.bin.run_jobs import split_argv
from s3tok.jobs.spec import JobsError, JobSpec, parse_range, quote_words, succeeded

RUN_PL = Path(__file__).resolve().parents[1] / "utils" / "run.pl"
FOOTER_RE = re.compile(r"^# Ended \(code (\d+)[;)].* at .*, elapsed time \d+ seconds$")

# A job that appends its number to runs.txt, its start and end times to times.txt, sleeps $SLEEP seconds and
# fails with its own number as the code while fail.<n> exists.
JOB_SH = """n=$1
echo "$n" >> runs.txt
echo "$n start $(date +%s.%N) ${CUDA_VISIBLE_DEVICES:-none}" >> times.txt
sleep "${SLEEP:-0}"
echo "$n end $(date +%s.%N)" >> times.txt
echo "job $n done"
[ -e "fail.$n" ] && exit "$n"
exit 0
"""


def run_pl(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUN_PL), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


@pytest.fixture()
def work(tmp_path):
    (tmp_path / "job.sh").write_text(JOB_SH)
    return tmp_path


def footer_code(log: Path) -> int:
    m = FOOTER_RE.match(log.read_text().splitlines()[-1])
    assert m, f"no footer in {log}:\n{log.read_text()}"
    return int(m.group(1))


def intervals(work: Path):
    """``{job: (start, end, gpu)}`` from times.txt."""
    out = {}
    for line in (work / "times.txt").read_text().splitlines():
        n, what, t, *gpu = line.split()
        start, end, g = out.get(n, (None, None, None))
        out[n] = (float(t), end, gpu[0]) if what == "start" else (start, float(t), g)
    return out


def max_overlap(spans) -> int:
    return max(sum(s <= start < e for s, e, _ in spans) for start, _, _ in spans)


def test_failed_job_is_counted_and_rerun_runs_only_it(work):
    (work / "fail.3").touch()
    r = run_pl(work, "JOB=1:4", "log/x.JOB.log", "bash", "job.sh", "JOB")
    assert r.returncode == 1, r.stderr
    assert "run.pl: 1 / 4 failed, log is in log/x.*.log" in r.stderr
    for n in range(1, 5):
        lines = (work / "log" / f"x.{n}.log").read_text().splitlines()
        assert lines[0] == f"# bash job.sh {n}"
        assert lines[1].startswith("# Started at ") and lines[2].startswith("# Running on ")
        assert f"job {n} done" in lines
        assert re.match(r"^# Accounting: time=\d+ threads=1$", lines[-2])
        assert footer_code(work / "log" / f"x.{n}.log") == (3 if n == 3 else 0)
    assert sorted((work / "runs.txt").read_text().split()) == ["1", "2", "3", "4"]

    (work / "fail.3").unlink()
    (work / "runs.txt").unlink()
    before = {n: (work / "log" / f"x.{n}.log").stat().st_mtime_ns for n in (1, 2, 4)}
    r = run_pl(work, "--rerun-failed", "JOB=1:4", "log/x.JOB.log", "bash", "job.sh", "JOB")
    assert r.returncode == 0, r.stderr
    assert (work / "runs.txt").read_text().split() == ["3"]
    assert {n: (work / "log" / f"x.{n}.log").stat().st_mtime_ns for n in (1, 2, 4)} == before
    assert footer_code(work / "log" / "x.3.log") == 0

    r = run_pl(work, "JOB=1:4", "log/x.JOB.log", "bash", "job.sh", "JOB", S3TOK_RERUN_FAILED="1")
    assert r.returncode == 0, r.stderr
    assert (work / "runs.txt").read_text().split() == ["3"]  # nothing left to rerun


def test_job_name_substituted_in_log_path_and_command(tmp_path):
    r = run_pl(tmp_path, "--num-threads", "3", "--mem", "4G", "TASK=1:3", "log/TASK/t.TASK.log",
               "echo", "task=TASK", "a  b", "$OMP_NUM_THREADS", "|", "tr", "a-z", "A-Z", ">", "out.TASK")
    assert r.returncode == 0, r.stderr
    for n in (1, 2, 3):
        assert (tmp_path / f"out.{n}").read_text() == f"TASK={n} A  B 3\n"
        log = (tmp_path / "log" / str(n) / f"t.{n}.log").read_text()
        assert log.startswith(f'# echo task={n} "a  b" $OMP_NUM_THREADS | tr a-z A-Z > out.{n}\n')
        assert "threads=3" in log


def test_single_job_form(tmp_path):
    r = run_pl(tmp_path, "log/one.log", "echo", "hello")
    assert r.returncode == 0, r.stderr
    log = tmp_path / "log" / "one.log"
    assert "hello" in log.read_text().splitlines() and footer_code(log) == 0

    r = run_pl(tmp_path, "log/bad.log", "exit", "5")
    assert r.returncode == 1
    assert "run.pl: job failed, log is in log/bad.log" in r.stderr
    assert footer_code(tmp_path / "log" / "bad.log") == 5


def test_max_jobs_run_limits_concurrency(work):
    r = run_pl(work, "--max-jobs-run", "2", "JOB=1:5", "log/x.JOB.log", "bash", "job.sh", "JOB", SLEEP="0.3")
    assert r.returncode == 0, r.stderr
    spans = list(intervals(work).values())
    assert len(spans) == 5
    assert max_overlap(spans) == 2


def test_gpu_jobs_get_distinct_visible_ids(work):
    r = run_pl(work, "--gpu", "1", "--max-jobs-run", "4", "JOB=1:4", "log/x.JOB.log", "bash", "job.sh", "JOB",
               SLEEP="0.3", CUDA_VISIBLE_DEVICES="0,1")
    assert r.returncode == 0, r.stderr
    spans = list(intervals(work).values())
    assert {g for _, _, g in spans} == {"0", "1"}
    assert max_overlap(spans) == 2  # capped by the 2 GPUs
    for s, e, g in spans:  # jobs running at the same time have different GPUs
        assert all(g2 != g for s2, e2, g2 in spans if (s2, e2) != (s, e) and s2 < e and s < e2)

    r = run_pl(work, "--gpu", "1", "log/y.log", "true", CUDA_VISIBLE_DEVICES="")
    assert r.returncode == 2 and "no GPU" in r.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_kills_running_jobs_and_footers_their_logs(tmp_path):
    proc = subprocess.Popen([str(RUN_PL), "JOB=1:2", "log/x.JOB.log", "echo", "$$", ">", "pid.JOB", ";",
                             "sleep", "30", "&", "echo", "$!", ">", "child.JOB", ";", "wait"],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    files = [tmp_path / f"{kind}.{n}" for kind in ("pid", "child") for n in (1, 2)]
    deadline = time.monotonic() + 15
    while not all(f.is_file() and f.read_text().strip() for f in files):
        assert time.monotonic() < deadline and proc.poll() is None, "jobs did not start"
        time.sleep(0.05)
    pids = [int(f.read_text()) for f in files]
    assert all(_alive(p) for p in pids)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM" in err
    time.sleep(0.2)  # let init reap the orphaned sleeps
    assert not [p for p in pids if _alive(p)]
    for n in (1, 2):
        log = tmp_path / "log" / f"x.{n}.log"
        assert "killed by run.pl on SIGTERM" in log.read_text().splitlines()[-1]
        assert not succeeded(log)


def test_parsing():
    assert parse_range("JOB=1:4") == ("JOB", 1, 4) and parse_range("TASK=3") == ("TASK", 3, 3)
    assert parse_range("log/x.log") is None
    with pytest.raises(JobsError):
        parse_range("JOB=0:3")
    assert quote_words(["a", "b c", 'say "x"', "|", ""]) == """a "b c" 'say "x"' | \"\""""
    known, extra, rng, rest = split_argv(["--mem", "4G", "JOB=1:2", "--gpu=1", "--rerun-failed", "-tc", "3",
                                          "log/x.JOB.log", "cmd", "--gpu", "2"])
    assert known == ["--gpu", "1", "--rerun-failed", "--max-jobs-run", "3"] and extra == {"mem": "4G"}
    assert rng == "JOB=1:2" and rest == ["log/x.JOB.log", "cmd", "--gpu", "2"]
    with pytest.raises(JobsError, match="one log file"):
        JobSpec(log="log/x.log", words=["true"], name="JOB", start=1, end=2)
    assert JobSpec(log="log/x.JOB.log", words=["true"], name="JOB", start=1, end=2).log_pattern() == "log/x.*.log"
