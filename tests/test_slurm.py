"""``utils/slurm.pl`` on a real one-node Slurm cluster (``tools/slurm/start_local_cluster.sh``, started once
for the module and always stopped): run.pl's contract (header, footer, ``k / N failed``, exit codes, rerun of
failed jobs), a clean cancel on SIGTERM, and the mini recipe through Slurm with the same tokens as run.pl.
The config parser and the sbatch command line are checked without a cluster."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator

import pytest

from s3tok.jobs.backend import JobOptions
from s3tok.jobs.slurm import SlurmBackend, array_ids, job_name, parse_task_ids
from s3tok.jobs.slurm_config import SlurmConfig
from s3tok.jobs.spec import Job, JobsError, succeeded

ROOT = Path(__file__).resolve().parents[1]
SLURM_PL = ROOT / "utils" / "slurm.pl"
START = ROOT / "tools" / "slurm" / "start_local_cluster.sh"
STOP = ROOT / "tools" / "slurm" / "stop_local_cluster.sh"
FOOTER_RE = re.compile(r"^# Ended \(code (\d+)[;)].* at .*, elapsed time \d+ seconds$")
MODEL = "speech_tokenizer_v2_25hz"

# A job that appends its number to runs.txt and fails with code 3 while fail.<n> exists.
JOB_SH = """n=$1
echo "$n" >> runs.txt
echo "job $n done"
[ -e "fail.$n" ] && exit 3
exit 0
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Dict[str, str]]:
    """The environment for Slurm clients (``SLURM_CONF``) of a cluster private to this module."""
    d = tempfile.mkdtemp(prefix="s3tok-slurm-")  # not under pytest's tmp: munged must reach it
    try:
        r = subprocess.run([str(START), d], capture_output=True, text=True, timeout=900)
        if r.returncode == 3:
            pytest.skip(f"no Slurm here: {r.stderr.strip().splitlines()[-1]}")
        assert r.returncode == 0, f"cluster did not start:\n{r.stderr}"
        m = re.search(r"^export SLURM_CONF=(\S+)$", r.stdout, re.M)
        assert m, r.stdout
        yield {**os.environ, "SLURM_CONF": m.group(1)}
    finally:
        subprocess.run([str(STOP), d], capture_output=True, timeout=120)
        shutil.rmtree(d, ignore_errors=True)


def slurm_pl(env: Dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SLURM_PL), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def squeue(env: Dict[str, str]) -> str:
    return subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True, check=True).stdout.strip()


def footer_code(log: Path) -> int:
    m = FOOTER_RE.match(log.read_text().splitlines()[-1])
    assert m, f"no footer in {log}:\n{log.read_text()}"
    return int(m.group(1))


# -- no cluster needed ----------------------------------------------------------------------------------------

def test_config_parsing_and_sbatch_options(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("# site\ncommand /opt/slurm/bin/sbatch --export=PATH  # trailing comment\n"
                    "option mem=* --mem=$0\noption mem=0\noption num_threads=* --cpus-per-task=$0\n"
                    "option gpu=* --gres=gpu:$0 --partition=gpu\noption gpu=0\ndefault gpu=0\n"
                    "option time=* --time=$0\n")
    b = SlurmBackend(JobOptions(max_jobs_run=2, gpu=2, num_threads=4,
                                extra={"config": str(conf), "mem": "4G", "time": "1:00:00"}))
    assert b.sbatch == ["/opt/slurm/bin/sbatch", "--export=PATH", "--gres=gpu:2", "--partition=gpu", "--mem=4G",
                        "--time=1:00:00", "--cpus-per-task=4"]
    assert b.squeue == "/opt/slurm/bin/squeue" and b.scancel == "/opt/slurm/bin/scancel"
    b = SlurmBackend(JobOptions(extra={"config": str(conf), "mem": "0"}))
    assert b.sbatch == ["/opt/slurm/bin/sbatch", "--export=PATH"]  # gpu=0 by default, mem=0: nothing
    with pytest.raises(JobsError, match="--account .* not described"):
        SlurmBackend(JobOptions(extra={"config": str(conf), "account": "x"}))
    default = SlurmBackend(JobOptions(gpu=1, num_threads=1, extra={"mem": "2G"})).sbatch
    assert default[0] == "sbatch" and "--gres=gpu:1" in default and "--mem=2G" in default
    assert not [w for w in default if w.startswith(("-p", "--partition"))]  # no site partition by default
    for bad in ("option mem 4G", "frobnicate x", "option mem=*\ndefault gpu=0 extra"):
        with pytest.raises(JobsError):
            SlurmConfig.parse("command sbatch\n" + bad)
    with pytest.raises(JobsError, match="no 'command'"):
        SlurmConfig.parse("option mem=* --mem=$0")
    for example in ("egs/aishell/conf/slurm.conf", "egs/mini/conf/slurm.conf"):
        SlurmBackend(JobOptions(gpu=1, num_threads=2, extra={"config": str(ROOT / example), "mem": "4G",
                                                             "time": "1:0:0"}))


def test_array_helpers():
    assert array_ids([5, 1, 2, 3, 7, 8]) == "1-3,5,7-8" and array_ids([4]) == "4"
    assert parse_task_ids("3") == [3] and parse_task_ids("[2-4,7%2]") == [2, 3, 4, 7]
    assert parse_task_ids("N/A") == []
    assert job_name([Job(3, "true", Path("exp/log/mel.3.log"))]) == "mel"
    assert job_name([Job(1, "true", Path("log/one.log"))]) == "one"


# -- on the cluster -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_jobs_succeed_with_header_and_footer(cluster, tmp_path):
    r = slurm_pl(cluster, tmp_path, "--num-threads", "2", "--mem", "1G", "JOB=1:3", "log/x.JOB.log",
                 "echo", "job=JOB", "$OMP_NUM_THREADS", ">", "out.JOB")
    assert r.returncode == 0, r.stderr
    for n in (1, 2, 3):
        assert (tmp_path / f"out.{n}").read_text() == f"job={n} 2\n"
        lines = (tmp_path / "log" / f"x.{n}.log").read_text().splitlines()
        assert lines[0] == f"# echo job={n} $OMP_NUM_THREADS > out.{n}"
        assert lines[1].startswith("# Started at ") and lines[2].startswith("# Running on ")
        assert lines[3] == "# Environment: MKL_NUM_THREADS=2 OMP_NUM_THREADS=2"
        assert re.match(r"^# Accounting: time=\d+ threads=2$", lines[-2])
        assert footer_code(tmp_path / "log" / f"x.{n}.log") == 0
    assert list((tmp_path / "log" / ".slurm").iterdir()) == []  # task files cleaned up


@pytest.mark.slow
def test_failed_task_is_counted_and_rerun_resubmits_only_it(cluster, tmp_path):
    (tmp_path / "job.sh").write_text(JOB_SH)
    (tmp_path / "fail.2").touch()
    r = slurm_pl(cluster, tmp_path, "JOB=1:3", "log/x.JOB.log", "bash", "job.sh", "JOB")
    assert r.returncode == 1, r.stderr
    assert "slurm.pl: 1 / 3 failed, log is in log/x.*.log" in r.stderr
    assert "job 2 failed with code 3" in r.stderr
    assert [footer_code(tmp_path / "log" / f"x.{n}.log") for n in (1, 2, 3)] == [0, 3, 0]
    assert sorted((tmp_path / "runs.txt").read_text().split()) == ["1", "2", "3"]

    (tmp_path / "fail.2").unlink()
    (tmp_path / "runs.txt").unlink()
    r = slurm_pl(cluster, tmp_path, "--rerun-failed", "JOB=1:3", "log/x.JOB.log", "bash", "job.sh", "JOB")
    assert r.returncode == 0, r.stderr
    assert "1 task(s) submitted" in r.stderr
    assert (tmp_path / "runs.txt").read_text().split() == ["2"]
    assert all(succeeded(tmp_path / "log" / f"x.{n}.log") for n in (1, 2, 3))

    r = slurm_pl(cluster, tmp_path, "log/single.log", "exit", "5")
    assert r.returncode == 1 and "slurm.pl: job failed, log is in log/single.log" in r.stderr
    r = slurm_pl(cluster, tmp_path, "--no-such-option", "1", "log/y.log", "true")
    assert r.returncode == 2 and "not described" in r.stderr
    (tmp_path / "bad.conf").write_text("command sbatch --partition=no_such_partition\n")
    r = slurm_pl(cluster, tmp_path, "--config", "bad.conf", "log/y.log", "true")
    assert r.returncode == 2 and "slurm.pl: sbatch failed" in r.stderr and "partition" in r.stderr
    assert not (tmp_path / "log" / "y.log").exists()


@pytest.mark.slow
def test_sigterm_cancels_the_array(cluster, tmp_path):
    err = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([str(SLURM_PL), "--max-jobs-run", "2", "JOB=1:3", "log/x.JOB.log", "sleep", "60"],
                            cwd=tmp_path, env=cluster, stderr=err)
    logs = [tmp_path / "log" / f"x.{n}.log" for n in (1, 2, 3)]
    deadline = time.monotonic() + 30
    while sum(log.is_file() for log in logs) < 2:  # two running, one held back by %2
        assert time.monotonic() < deadline and proc.poll() is None, "tasks did not start"
        time.sleep(0.1)
    assert len(squeue(cluster).splitlines()) == 3
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    err.close()
    assert "interrupted by SIGTERM" in (tmp_path / "stderr.txt").read_text()
    assert squeue(cluster) == ""
    started = [log for log in logs if log.is_file()]
    assert len(started) == 2
    for log in started:
        assert "killed" in log.read_text().splitlines()[-1] and not succeeded(log)


def copy_recipe(dest: Path) -> Path:
    """The mini recipe with its conf/ (the example slurm.conf) in a temporary copy; its egs/mini."""
    shutil.copytree(ROOT / "egs", dest / "egs", ignore=shutil.ignore_patterns("data", "exp"))
    shutil.copytree(ROOT / "utils", dest / "utils")
    shutil.copy2(ROOT / "path.sh", dest / "path.sh")
    return dest / "egs" / "mini"


def read_tokens(recipe: Path) -> Dict[str, list]:
    import kaldi_native_io

    out = {}
    for line in (recipe / "data" / "test" / "tokens.scp").read_text().splitlines():
        key, where = line.split(" ", 1)
        out[key] = list(kaldi_native_io.read_int32_vector(where if where.startswith("/") else
                                                          str(recipe / where)))
    return out


@pytest.mark.slow
def test_mini_recipe_through_slurm_matches_run_pl(cluster, ref, tmp_path):
    model = str(ref / "models" / f"{MODEL}.onnx")
    tokens = {}
    for backend in ("slurm.pl", "run.pl"):
        recipe = copy_recipe(tmp_path / backend)
        r = subprocess.run(["./run.sh", "--model", model, "--nj", "3", "--sets", "test", "--stop_stage", "3"],
                           cwd=recipe, env={**cluster, "S3TOK_BACKEND": backend}, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        tokens[backend] = read_tokens(recipe)
        submitted = "3 task(s) submitted as Slurm job" in r.stderr
        assert submitted == (backend == "slurm.pl"), r.stderr[-2000:]
    slurm_log = tmp_path / "slurm.pl" / "egs" / "mini" / "exp" / MODEL / "test" / "log" / "tokenize.2.log"
    assert footer_code(slurm_log) == 0
    assert len(tokens["slurm.pl"]) == 3 and all(tokens["slurm.pl"].values())
    assert tokens["slurm.pl"] == tokens["run.pl"]


@pytest.mark.slow
def test_webdataset_recipe_through_slurm_matches_run_pl(cluster, tmp_path):
    """egs/webdataset (tar shards read in place) as Slurm array jobs: tokens and speaker embeddings equal
    run.pl's, the parquet lists name the same utterances."""
    import torch

    got = {}
    for backend in ("slurm.pl", "run.pl"):
        recipe = copy_recipe(tmp_path / backend).parent / "webdataset"
        r = subprocess.run(["./run.sh", "--sets", "test", "--dev_sets", "test", "--stop_stage", "7"], cwd=recipe,
                           env={**cluster, "S3TOK_BACKEND": backend}, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        assert ("task(s) submitted as Slurm job" in r.stderr) == (backend == "slurm.pl"), r.stderr[-2000:]
        d = recipe / "data" / "test"
        got[backend] = ((d / "tokens.scp").read_text().split("\n")[0].split()[0],
                        [ln.split(" ", 1)[1] for ln in (recipe / "exp" / "demo" / "test" / "tokens.1.txt")
                         .read_text().splitlines()],
                        torch.load(d / "utt2embedding.pt"), (recipe / "data" / "dev.data.list").is_file())
    assert got["slurm.pl"] == got["run.pl"] and got["run.pl"][3] and len(got["run.pl"][2]) == 3
