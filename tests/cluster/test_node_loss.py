"""Node loss during the head's wait, for real against Ray from PyPI (the cluster tier): a worker
that joined and then died is reported as missing, not counted; a head that dies during the wait
fails it saying the head did not answer. Every process the test starts is stopped."""

from __future__ import annotations

import signal
import time

import pytest

from tests.cluster.processes import GPUS_PER_NODE, HEAD_IP, NODES, WORKER_IP, _signal_group

pytestmark = pytest.mark.cluster


def test_a_worker_that_joined_then_died_is_named_as_missing(cluster):
    # The head's GCS declares a silent node dead after ~2 s here (about 30 s by default).
    cluster.start("head", "node-0", HEAD_IP, RAY_health_check_period_ms="500",
                  RAY_health_check_timeout_ms="500", RAY_health_check_failure_threshold="3")
    worker = cluster.start("worker", "node-1", WORKER_IP)
    assert cluster.wait(NODES, timeout=120).returncode == 0
    _signal_group(worker.pid, signal.SIGKILL)  # the worker's instance goes away
    worker.wait(timeout=30)
    time.sleep(10)
    done = cluster.wait(NODES, timeout=20)
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"node-1 ({WORKER_IP}): 0 of {GPUS_PER_NODE} fake_gpu" in done.stderr


def test_a_head_that_dies_during_the_wait_fails_it_saying_the_head_did_not_answer(cluster):
    head = cluster.start("head", "node-0", HEAD_IP)
    assert cluster.wait(f"node-0={HEAD_IP}", timeout=120).returncode == 0
    _signal_group(head.pid, signal.SIGKILL)
    head.wait(timeout=30)
    started = time.monotonic()
    done = cluster.wait(NODES, timeout=20)
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"the head at {HEAD_IP}:{cluster.port} did not answer" in done.stderr
    assert f"node-0 ({HEAD_IP}): 0 of {GPUS_PER_NODE} fake_gpu" in done.stderr
    # Bounded: the timeout plus at most one query's own limit (60 s).
    assert time.monotonic() - started < 20 + 60 + 15
