"""Small shared helpers: the process-parallel map used to score videos with the tracker, the worker start method."""

import os

from dynamicrafter.utils import process_map, worker_context


def _power(base: int, exponent: int) -> tuple[int, int]:
    return base**exponent, os.getpid()


def test_process_map_keeps_the_order_and_uses_other_processes():
    items = [(b, e) for b in range(7) for e in (2, 3)]
    serial = process_map(_power, items, workers=1)
    parallel = process_map(_power, items, workers=2)
    assert [v for v, _ in parallel] == [v for v, _ in serial] == [b**e for b, e in items]
    assert {pid for _, pid in serial} == {os.getpid()}
    assert os.getpid() not in {pid for _, pid in parallel}  # the work ran in the worker processes
    assert process_map(_power, [], workers=2) == []


def test_workers_never_start_by_a_plain_fork():
    assert worker_context().get_start_method() in {"forkserver", "spawn"}
