"""evaluate.py's forked workers: every chunk counted once, errors and dead workers reported."""

import os
import time

import pytest

from wsol_lightning import evaluate
from wsol_lightning.errors import WSOLInputError
from wsol_lightning.evaluate import _forked

CHUNKS = [[f"img{i}-{j}" for j in range(3)] for i in range(40)]


def _count(chunk):
    time.sleep(0.01)  # long enough that every process gets chunks
    return len(chunk), os.getpid()


def test_every_chunk_is_counted_once_over_the_processes():
    results = _forked(_count, CHUNKS, 3)
    assert sum(n for n, _ in results) == 120 and len(results) == 40
    assert len({pid for _, pid in results}) == 3 and os.getpid() in {pid for _, pid in results}  # parent too


def test_more_chunks_than_the_queue_holds_are_grouped_each_counted_once(monkeypatch):
    monkeypatch.setattr(evaluate, "MAX_QUEUED", 7)  # 40 chunks of 3: grouped 6 at a time into 7
    results = _forked(_count, CHUNKS, 2)
    assert sorted(n for n, _ in results) == [4 * 3] + [6 * 3] * 6


def _fail_on_chunk_7(chunk):
    if chunk[0] == "img7-0":
        raise WSOLInputError("img7-0: score map contains NaN")
    return len(chunk)


def test_an_error_in_any_process_is_raised_as_it_was():
    for _ in range(3):  # chunk 7 lands in the parent or a child, as the queue deals them
        with pytest.raises(WSOLInputError, match="^img7-0: score map contains NaN$"):
            _forked(_fail_on_chunk_7, CHUNKS, 3)


def test_a_worker_that_dies_is_reported():
    parent = os.getpid()

    def die_in_a_child(chunk):
        time.sleep(0.01)
        if os.getpid() != parent:
            os._exit(3)
        return len(chunk)

    with pytest.raises(RuntimeError, match="a worker process .* died"):
        _forked(die_in_a_child, CHUNKS, 2)
