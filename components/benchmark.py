"""VllmBenchmark: a short, bounded `vllm bench serve` load against the deployed server, after it
is ready, and its figures as an output (serving/benchmark.py says what is sent and read)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_command as command

from components.host_handle import HostHandle
from components.naming import component_type
from config.settings import StackConfig
from serving.benchmark import BenchmarkLoad, load_for, parse_output
from serving.vllm_args import VLLM_PORT
from sizing.plan import SizingPlan

# Starting the image and loading the tokenizer, per level, on top of the level's own ceiling.
_START_MARGIN_MIN = 5


@dataclass
class VllmBenchmarkArgs:
    settings: StackConfig
    """The validated stack config (image, served name, the trigger key)."""
    plan: SizingPlan
    """The sizing decision: context length, batch limit and the hourly price."""
    host: HostHandle
    """The head node's host: SSH, instance, where the weights are (the tool reads the tokenizer there)."""
    ready: command.remote.Command
    """The readiness check: run after it, and again whenever it runs again (a new container)."""
    api_key: pulumi.Output[str]
    """Secret key vLLM checks; reaches the tool only through the environment."""
    rerun_on_trigger: bool = True
    """Run again when benchmarkTrigger changes. False on a fleet's builder: it is stopped once
    baked, so the benchmark runs with each new image only (components.fleet_image)."""


class VllmBenchmark(pulumi.ComponentResource):
    """`vllm bench serve` from the pinned image against vLLM on the host's loopback."""

    result: pulumi.Output[dict[str, Any]]
    load: BenchmarkLoad
    step: command.remote.Command  # the benchmark's run: what comes after it waits for it

    def __init__(self, name: str, args: VllmBenchmarkArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(component_type("VllmBenchmark"), name, None, opts)
        settings, plan = args.settings, args.plan
        self.load = load = load_for(plan.max_model_len, settings.max_num_seqs)
        trust_remote_code = "--trust-remote-code" in settings.vllm_extra_args
        step = args.host.steps(self, name).run(
            "run", "benchmark_vllm.sh", after=args.ready,
            env={
                "VLLM_DEPLOY_PORT": str(VLLM_PORT),
                "VLLM_DEPLOY_IMAGE": settings.vllm_image,
                "VLLM_DEPLOY_SERVED_MODEL": settings.served_name,
                "VLLM_DEPLOY_MODEL_DIR": args.host.model_dir,
                "VLLM_DEPLOY_BENCH_CONCURRENCY": " ".join(str(c) for c in load.concurrency_levels),
                "VLLM_DEPLOY_BENCH_INPUT_LEN": str(load.input_len),
                "VLLM_DEPLOY_BENCH_OUTPUT_LEN": str(load.output_len),
                "VLLM_DEPLOY_BENCH_PROMPTS_PER_CONCURRENCY": str(load.prompts_per_concurrent_request),
                "VLLM_DEPLOY_BENCH_SEED": str(load.seed),
                "VLLM_DEPLOY_BENCH_WARMUPS": str(load.warmups),
                "VLLM_DEPLOY_BENCH_LEVEL_TIMEOUT_SECONDS": str(load.level_timeout_s),
                "VLLM_DEPLOY_BENCH_TRUST_REMOTE_CODE": "1" if trust_remote_code else "0",
            },
            secret_env={"VLLM_API_KEY": args.api_key},
            # stdout is only the JSON the script builds from the tool's result files (counts and
            # timings, no request text, never the key): a plain output. stderr stays secret.
            secret_outputs=["stderr"],
            log_output=True,
            extra_triggers=[f"benchmarkTrigger={settings.benchmark_trigger or ''}"] if args.rerun_on_trigger else [],
            timeout=f"{load.timeout_s // 60 + _START_MARGIN_MIN * len(load.concurrency_levels)}m",
        )
        self.step = step
        price = plan.hourly_price_usd
        # A value, not resources, is made in apply: the figures exist once the step has run.
        self.result = step.stdout.apply(lambda out: parse_output(out, price))
        self.register_outputs({"benchmark": self.result})
