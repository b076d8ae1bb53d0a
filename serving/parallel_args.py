"""What the parallelism flags in vllmExtraArgs mean on this stack's one host, checked as vLLM
0.33.0 checks them at startup (vllm/config/parallel.py `ParallelConfig._validate_parallel_config`,
vllm/engine/arg_utils.py `EngineArgs.create_engine_config`, vllm/v1/worker/gpu_worker.py
`Worker.init_device`):

* the GPUs: data parallel x prefill context parallel x tensor parallel x pipeline parallel GPUs
  must exist on the host (each data-parallel engine's workers take the next GPU indices,
  ParallelConfig.get_local_gpu_index; an index the host lacks stops the worker);
* expert-parallel load balancing: --enable-eplb needs --enable-expert-parallel and more than one
  GPU in the expert-parallel group (TP x PCP x DP > 1); redundant experts
  (--eplb-config num_redundant_experts) need --enable-eplb; --enable-elastic-ep needs
  --enable-eplb;
* one host, one server: the data-parallel load-balancing modes and multi-node flags make this
  server run some ranks and wait for others launched elsewhere, which this stack never does;
* NUMA binding: --numa-bind-nodes and --numa-bind-cpus need --numa-bind.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Protocol

from sizing.plan import SizingPlan

# Flags that split the data-parallel ranks between servers or nodes (vllm/engine/arg_utils.py
# data-parallel modes: external, hybrid and multi-port load balancing; --nnodes/--node-rank).
_MULTI_SERVER_FLAGS = {
    "--data-parallel-external-lb": "runs one data-parallel rank per server behind an external "
    "load balancer",
    "--data-parallel-rank": "makes this server one rank of a data-parallel group served by "
    "several servers",
    "--data-parallel-hybrid-lb": "splits the data-parallel ranks between nodes",
    "--data-parallel-start-rank": "splits the data-parallel ranks between nodes",
    "--data-parallel-multi-port-external-lb": "runs the data-parallel ranks behind an external "
    "load balancer, one port each",
    "--nnodes": "spreads the engine over several nodes",
    "--node-rank": "makes this host one node of several",
}


class _Args(Protocol):
    def value(self, flag: str) -> Optional[str]: ...

    def on(self, flag: str) -> bool: ...

    @property
    def objects(self) -> dict[str, dict[str, Any]]: ...


def parallel_problems(args: _Args, plan: SizingPlan, where: str) -> list[str]:
    """Every problem of the parallelism flags, each naming the flag, its value and the fix."""
    return (
        _single_host(args, where) + _gpus(args, plan, where) + _eplb(args, plan, where)
        + _numa(args, where) + _across_nodes(args, plan, where)
    )


def _across_nodes(args: _Args, plan: SizingPlan, where: str) -> list[str]:
    """Across nodes the stack runs vLLM's Ray executor (it sets --distributed-executor-backend
    ray): another backend starts every rank on node 0, and vLLM stops at worker start ("DP
    adjusted local rank 8 is out of bounds for 8 devices", vllm/v1/worker/gpu_worker.py
    init_device; found by the conformance tier, case pp-backend-mp). Data-parallel engines
    across a Ray cluster are a deployment of their own (--data-parallel-backend ray, one API
    server per node), which this stack does not build."""
    if plan.nodes == 1:
        return []
    problems = []
    backend = args.value("--distributed-executor-backend")
    if backend is not None and backend != "ray":
        problems.append(
            f"{where}: --distributed-executor-backend {backend} runs every rank on one node, and "
            f"this plan spans {plan.nodes} nodes (pipeline parallel across them, on a Ray cluster): "
            "vLLM would stop at worker start with ranks beyond node 0's GPUs. Drop it: the stack "
            "sets --distributed-executor-backend ray across nodes"
        )
    dp = _int(args.value("--data-parallel-size"))
    if dp > 1:
        problems.append(
            f"{where}: --data-parallel-size {dp} across {plan.nodes} nodes is not deployed by this "
            "stack (it runs one engine, pipeline parallel across the nodes); drop it, or serve "
            "replicas as separate stacks on one node each"
        )
    return problems


def _numa(args: _Args, where: str) -> list[str]:
    return [
        f"{where}: {flag} needs --numa-bind, which is off (vLLM stops: \"numa_bind_nodes and "
        'numa_bind_cpus require numa_bind=True"); add --numa-bind, or drop ' + flag
        for flag in ("--numa-bind-nodes", "--numa-bind-cpus")
        if args.value(flag) is not None and not args.on("--numa-bind")
    ]


def _single_host(args: _Args, where: str) -> list[str]:
    problems = []
    for flag, what in _MULTI_SERVER_FLAGS.items():
        value = args.value(flag)
        if flag == "--nnodes":
            used = _int(value) > 1
        elif flag == "--node-rank":
            used = value is not None and value != "0"
        else:  # a switch, or a rank that makes this server one of several
            used = args.on(flag) or (value is not None and value != "None")
        if used:
            problems.append(
                f"{where}: {flag} {what}; this stack runs one vLLM server on one host, which would "
                "wait for ranks that are never started. Drop it: --data-parallel-size N alone "
                "runs N data-parallel engines on this host behind one API server"
            )
    local = args.value("--data-parallel-size-local")
    dp = _int(args.value("--data-parallel-size"))
    if local is not None and _int(local) != dp:
        problems.append(
            f"{where}: --data-parallel-size-local {local} differs from --data-parallel-size {dp}: "
            "vLLM refuses a larger one (data_parallel_size_local must be <= data_parallel_size) "
            "and expects the other ranks on other nodes when it is smaller; on this one host "
            "every rank is local: drop --data-parallel-size-local"
        )
    return problems


def _gpus(args: _Args, plan: SizingPlan, where: str) -> list[str]:
    dp = _int(args.value("--data-parallel-size"))
    pcp = _int(args.value("--prefill-context-parallel-size"))
    used = plan.tensor_parallel_size * dp * pcp  # one pipeline stage per node (sizing.pipeline)
    if used <= plan.instance.gpu_count:
        return []
    return [
        f"{where}: --data-parallel-size {dp} x --prefill-context-parallel-size {pcp} x "
        f"tensor parallel {plan.tensor_parallel_size} x pipeline parallel "
        f"{plan.pipeline_parallel_size} needs {used} GPUs, and {plan.instance.name} has "
        f"{plan.instance.gpu_count}; lower --data-parallel-size, or set instanceType to auto so "
        "the sizing picks a host with that many GPUs"
    ]


def _eplb(args: _Args, plan: SizingPlan, where: str) -> list[str]:
    problems = []
    eplb = args.on("--enable-eplb")
    if eplb and not args.on("--enable-expert-parallel"):
        problems.append(
            f"{where}: --enable-eplb balances the experts of expert parallelism, which is off "
            '(vLLM stops: "enable_expert_parallel must be True to use EPLB"); add '
            "--enable-expert-parallel, or drop --enable-eplb"
        )
    ranks = (
        plan.tensor_parallel_size * _int(args.value("--prefill-context-parallel-size"))
        * _int(args.value("--data-parallel-size"))
    )
    if eplb and ranks <= 1:
        problems.append(
            f"{where}: --enable-eplb needs more than one GPU in the expert-parallel group "
            "(tensor x prefill-context x data parallel), and the plan runs one (vLLM stops: "
            '"EPLB requires tensor, prefill-context, or data parallelism"); set '
            "tensorParallelSize to 2 or more, add --data-parallel-size 2, or drop --enable-eplb"
        )
    redundant = _redundant_experts(args)
    if redundant and not eplb:
        problems.append(
            f"{where}: --eplb-config num_redundant_experts={redundant} needs --enable-eplb (vLLM "
            'stops: "num_redundant_experts is set ... but EPLB is not enabled"); add '
            "--enable-eplb, or drop num_redundant_experts"
        )
    if args.on("--enable-elastic-ep") and not eplb:
        problems.append(
            f"{where}: --enable-elastic-ep needs --enable-eplb (vLLM stops: \"Elastic EP is only "
            'supported with enable_eplb=True"); add --enable-eplb, or drop --enable-elastic-ep'
        )
    return problems


def _redundant_experts(args: _Args) -> int:
    value = args.objects.get("--eplb-config", {}).get("num_redundant_experts", 0)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _int(value: Optional[str]) -> int:
    try:
        return max(1, int(value)) if value is not None else 1
    except ValueError:
        return 1
