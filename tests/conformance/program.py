"""The program's side of the conformance corpus: its decision on a stack config, and the
`vllm serve` run that decision stands for.

`decide` runs what `pulumi preview` runs before the first resource (__main__.py): the config
validated (config.validation.parse, what stack.pulumi_config.load applies), sized (stack.preflight.size:
the local-directory check, the model's facts, the instance choice) and turned into the vLLM
argv (stack.preflight.vllm_command: every vllmExtraArgs check). A ConfigError or pulumi.RunError
is a refusal; anything else is a bug and propagates.

`vllm_request` is what vLLM 0.33 is then asked: for an accepted config, the program's argv on
the planned instance; for a refused one, the argv the user would naturally have run instead
(the case's `natural`: the program's argv for the config without the offending setting, with
that setting applied as flags). The GPU is described as vLLM sees it: its name as CUDA reports
it, compute capability, the CUDA total the program budgets against, the instance's GPU count,
and free memory at worker start = that total minus what the program assumes is taken by then
(sizing.startup_memory.pre_snapshot_gib).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pulumi

from stack import preflight
from config.validation import ConfigError, parse
from serving.container_paths import IMAGE_EXAMPLES_DIR
from sizing import gpus
from sizing.formats import BYTES_16BIT
from sizing.gpus import GpuInstance
from sizing.hub import resolve
from sizing.memory import GIB, kv_bytes_per_token, kv_bytes_per_token_per_layer
from sizing.models import ModelSpec
from sizing.pipeline import pipeline_stages, stage_spec
from sizing.plan import SizingPlan
from sizing.startup_memory import pre_snapshot_gib
from tests.conformance.corpus import Case
from tests.conformance.model_dirs import catalog_model_dir, local_model_dir

# What CUDA calls each catalog GPU (torch.cuda.get_device_name on the AWS instance; vLLM's batch
# defaults look for "a100" in it, vllm/engine/arg_utils.py get_batch_defaults).
CUDA_DEVICE_NAMES = {
    "NVIDIA T4": "Tesla T4",
    "NVIDIA A10G": "NVIDIA A10G",
    "NVIDIA L4": "NVIDIA L4",
    "NVIDIA L40S": "NVIDIA L40S",
    "NVIDIA A100 40GB": "NVIDIA A100-SXM4-40GB",
    "NVIDIA A100 80GB": "NVIDIA A100-SXM4-80GB",
    "NVIDIA H100": "NVIDIA H100 80GB HBM3",
    "NVIDIA H200": "NVIDIA H200",
    "NVIDIA B200": "NVIDIA B200",
    "NVIDIA B300": "NVIDIA B300 SXM6 AC",
    "NVIDIA RTX PRO 4500 Blackwell": "NVIDIA RTX PRO 4500 Blackwell",
    "NVIDIA RTX PRO 6000 Blackwell Server Edition": "NVIDIA RTX PRO 6000 Blackwell Server Edition",
}

LOCAL = "local:"  # a case's model "local:<fixture>" is tests/fixtures/models/<fixture> as a local dir

# The local fixtures' checkpoint sizes (bytes), for the safetensors index the program reads.
LOCAL_WEIGHTS_BYTES = {"qwen2.5-14b-instruct-gptq-int4": 9_990_000_000}


@dataclass
class Decision:
    """The program's answer at preview."""

    accepted: bool
    message: str = ""  # the refusal as pulumi preview prints it
    argv: list[str] = field(default_factory=list)  # after `vllm serve`, model path first
    plan: Optional[SizingPlan] = None
    spec: Optional[ModelSpec] = None

    def kv_bytes_per_token_per_gpu(self, kv_cache_dtype: str) -> tuple[int, int]:
        """(per layer, over the full-attention layers) per GPU, as the sizing counts them."""
        assert self.plan is not None and self.spec is not None
        dtype_bytes = 1 if kv_cache_dtype == "fp8" else BYTES_16BIT
        tp = self.plan.tensor_parallel_size
        return (kv_bytes_per_token_per_layer(self.spec, dtype_bytes, tp),
                kv_bytes_per_token(self.spec, dtype_bytes, tp))

    def pipeline_stages(self, kv_cache_dtype: str) -> list[dict[str, Any]]:
        """Each pipeline stage as the sizing counts it (sizing.pipeline: one stage per node):
        its decoder layers [start, end), its attention layers (every decoder layer of the
        catalog's families), and one GPU's KV bytes per token over all of them and over its
        full-attention layers (stage_spec: sliding layers in proportion, rounded down)."""
        assert self.plan is not None and self.spec is not None
        dtype_bytes = 1 if kv_cache_dtype == "fp8" else BYTES_16BIT
        tp = self.plan.tensor_parallel_size
        per_layer = kv_bytes_per_token_per_layer(self.spec, dtype_bytes, tp)
        return [{
            "layers": [stage.start, stage.end],
            "attention_layers": stage.layers,
            "kv_bytes_per_token_per_rank": per_layer * stage.layers,
            "kv_bytes_per_token_per_rank_full_layers": kv_bytes_per_token(stage_spec(self.spec, stage), dtype_bytes, tp),
        } for stage in pipeline_stages(self.spec.num_layers, self.plan.pipeline_parallel_size)]


def stack_values(case: Case, models: Path) -> dict[str, Any]:
    """The case's stack config with a local model's placeholder made a real directory."""
    values = dict(case.config)
    if str(values.get("model", "")).startswith(LOCAL):
        fixture = values["model"][len(LOCAL):]
        values["model"] = str(local_model_dir(fixture, models, LOCAL_WEIGHTS_BYTES[fixture]))
    return values


def decide(values: dict[str, Any]) -> Decision:
    """The program's decision on a stack config (keys as in Pulumi.<stack>.yaml)."""
    try:
        settings = parse(values)
        plan = preflight.size(settings, offered=None)
        argv = preflight.vllm_command(settings, plan)
    except (ConfigError, pulumi.RunError) as exc:
        return Decision(False, str(exc))
    spec = resolve(settings.model, settings.model_source, settings.model_revision)
    return Decision(True, argv=argv, plan=plan, spec=spec)


def gpu_facts(instance: GpuInstance, tensor_parallel_size: int) -> dict[str, Any]:
    """The GPU as the fake CUDA platform reports it to vLLM (tests/conformance/vllm_harness)."""
    total = math.floor(instance.cuda_memory_gib * GIB)
    major, minor = str(instance.compute_capability).split(".")
    return {
        "name": CUDA_DEVICE_NAMES[instance.gpu_model],
        "compute_capability": [int(major), int(minor)],
        "total_memory_bytes": total,
        "free_memory_bytes": total - math.ceil(pre_snapshot_gib(tensor_parallel_size) * GIB),
        "count": instance.gpu_count,
    }


def _model_dir(values: dict[str, Any], models: Path) -> Path:
    model = str(values["model"])
    return Path(model) if model.startswith("/") else catalog_model_dir(model, models)


def _flag_value(argv: list[str], flag: str, default: str) -> str:
    value = default
    for index, token in enumerate(argv[:-1]):
        if token == flag:
            value = argv[index + 1]
    return value


def _image_file(arg: str, models: Path) -> str:
    """A file of the vllm/vllm-openai image's examples directory (serving.container_paths), as a
    stand-in file here: the vLLM wheel in the venv ships no examples/ (only the image has them),
    and vLLM checks that a --chat-template path exists (validate_chat_template). The stand-in is
    a plain chat template: what is judged is the argv, not the template's text."""
    if not arg.startswith(IMAGE_EXAMPLES_DIR + "/"):
        return arg
    stand_in = models / "image-examples" / arg[len(IMAGE_EXAMPLES_DIR) + 1:]
    stand_in.parent.mkdir(parents=True, exist_ok=True)
    stand_in.write_text(
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return str(stand_in)


def vllm_request(case: Case, decision: Decision, values: dict[str, Any], models: Path) -> dict[str, Any]:
    """What vLLM 0.33 is asked for this case (run_batch.py's request)."""
    if decision.accepted:
        assert decision.plan is not None
        argv, instance = decision.argv, decision.plan.instance
    else:
        natural = case.natural
        assert natural is not None, f"{case.id}: a refused case names the argv a user would have run"
        base_values = {k: v for k, v in values.items() if k not in natural.drop}
        base_values.update(natural.set)
        base = decide(base_values)
        assert base.accepted and base.plan is not None, (
            f"{case.id}: the program must accept the config without {natural.drop}: {base.message}"
        )
        argv = [*base.argv, *natural.flags]
        name = natural.instance or str(values.get("instanceType", "auto"))
        instance = base.plan.instance if name == "auto" else gpus.get(name)
    tp = int(_flag_value(argv, "--tensor-parallel-size", "1"))
    return {
        "id": case.id,
        "argv": [str(_model_dir(values, models)), *[_image_file(a, models) for a in argv[1:]]],
        "gpu": gpu_facts(instance, tp),
    }
