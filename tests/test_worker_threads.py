"""Decode workers run torch's CPU ops on one thread each; the model's thread count is left as it was."""
import threading
from types import SimpleNamespace

import pytest
import torch

from s3tok.stages import pipeline as P
from s3tok.util.worker_threads import worker_pool


@pytest.fixture
def four_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


def counts_in(pool, n: int = 8):
    x = torch.randn(200_000)
    return [f.result() for f in [pool.submit(lambda: float((x * 2).sum()) and torch.get_num_threads())
                                 for _ in range(n)]]


def test_workers_run_one_thread_each(four_threads):
    with worker_pool(3) as pool:
        assert counts_in(pool) == [1] * 8
        assert torch.get_num_threads() == 4  # the main thread (the model's) keeps its count
        got = []
        t = threading.Thread(target=lambda: got.append(torch.get_num_threads()))
        t.start()
        t.join()
        assert got == [4]  # and so does any other thread started meanwhile: the default is restored


def test_the_decode_loop_runs_its_workers_on_one_thread(four_threads):
    """featurized_chunks (tokenize, embed) feeds the model from single-threaded workers (4 before)."""
    chunks = [[SimpleNamespace(key=f"u{i}") for i in range(j, j + 3)] for j in (0, 3, 6)]
    x = torch.randn(100_000)
    fails, seen = [], []
    for _, feats in P.featurized_chunks(chunks, lambda item: float((x + 1).sum()) and torch.get_num_threads(),
                                        2, lambda k, r: fails.append(k), P.RunStats()):
        seen += feats
    assert not fails and seen == [1] * 9 and torch.get_num_threads() == 4


def test_a_failing_initializer_breaks_the_pool_not_the_start(four_threads):
    def boom():
        raise RuntimeError("no device")

    with worker_pool(2, initializer=boom) as pool:  # returns (no wait on a worker that never starts)
        with pytest.raises(Exception):
            pool.submit(int).result(timeout=10)
    assert torch.get_num_threads() == 4
