"""The Ray cluster scripts run for real against Ray from PyPI (the `cluster` tier:
./tools/test-cluster, which .ci/run runs; not part of the quick ./tools/test).

A head and a worker start as two local `ray start --block` processes with ray_node.sh, on
loopback (tests/cluster/processes.py); wait_for_ray_gpus.sh counts the custom Ray resource
`fake_gpu` standing in for GPUs. Every process a test starts is stopped at its end, and the test
checks nothing of it is left.
"""

from __future__ import annotations

import pytest

from tests.cluster.processes import GPUS_PER_NODE, HEAD_IP, WORKER_IP

pytestmark = pytest.mark.cluster


def test_a_worker_joins_the_head_and_the_head_waits_for_all_the_gpus(cluster):
    nodes = f"node-0={HEAD_IP} node-1={WORKER_IP}"
    cluster.start("head", "node-0", HEAD_IP)
    cluster.start("worker", "node-1", WORKER_IP)
    done = cluster.wait(nodes, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["NODES_JOINED=2", f"RAY_GPUS={2 * GPUS_PER_NODE}"]
    assert f"Ray reports {2 * GPUS_PER_NODE} fake_gpu on 2 nodes" in done.stderr


def test_a_worker_that_never_joins_fails_the_wait_naming_it(cluster):
    cluster.start("head", "node-0", HEAD_IP)
    nodes = f"node-0={HEAD_IP} node-1={WORKER_IP}"
    done = cluster.wait(nodes, timeout=25)
    assert done.returncode == 1
    assert f"Ray reports {GPUS_PER_NODE} of {2 * GPUS_PER_NODE} fake_gpu; not joined:" in done.stderr
    assert f"node-1 ({WORKER_IP}): 0 of {GPUS_PER_NODE} fake_gpu" in done.stderr
    assert "node-0 (" not in done.stderr.split("not joined:")[1].split("---")[0]  # the head joined
    assert f"{HEAD_IP} {GPUS_PER_NODE}" in done.stderr  # what Ray reported
