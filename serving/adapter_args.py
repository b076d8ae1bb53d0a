"""The `vllm serve` flags for LoRA adapters and a speculative draft, and the refusals of
vllmExtraArgs that would fight them or could never load.

Where the container sees them: each adapter at ``ADAPTERS_PATH/<name>`` and the draft at
``DRAFT_PATH``, read-only bind mounts of their directories on the model volume
(components.vllm_server). vLLM 0.33 facts:

* ``--lora-modules`` (vllm/entrypoints/common/cli_args.py ``LoRAParserAction``, nargs "+"):
  each item is ``name=path`` (no "," in it) or a JSON object ``{"name", "path",
  "base_model_name"}``; the path is loaded at startup (vllm/entrypoints/openai/models/serving.py
  ``init_static_loras``), and any failure stops the server. The container runs offline
  (HF_HUB_OFFLINE=1) and sees only its mounts, so a host path or a Hub id fails there
  (vllm-project/vllm#30690 "No adapter found", #29049);
* LoRA is on only with ``--enable-lora`` (vllm/engine/arg_utils.py ``create_engine_config``
  builds a LoRAConfig only then); without it the static adapters cannot load;
* ``--max-loras`` / ``--max-lora-rank``: vllm/config/lora.py (ranks 1, 8, 16, 32, 64, 128, 256,
  320, 512);
* ``--speculative-config`` JSON: ``method``, ``model``, ``num_speculative_tokens``
  (vllm/config/speculative.py ``SpeculativeConfig``).
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Optional

from config.constants import NAMESPACE
from config.settings import StackConfig
from serving.flag_reader import FlagReader, Option
from sizing.hub import local_model_problems
from sizing.plan import SizingPlan

ADAPTERS_PATH = "/models/adapters"
DRAFT_PATH = "/models/draft"

# Flags the add-on keys set; in vllmExtraArgs they would contradict them.
_OWNED = {
    "--enable-lora": "loraAdapters",
    "--lora-modules": "loraAdapters",
    "--max-loras": "maxLoras",
    "--max-lora-rank": "maxLoraRank",
    "--speculative-config": "speculativeModel",
}


def adapter_container_path(name: str) -> str:
    """Where vLLM sees adapter `name` (a read-only mount of its directory)."""
    return f"{ADAPTERS_PATH}/{name}"


def addon_args(config: StackConfig, plan: SizingPlan) -> list[str]:
    """The LoRA and speculative-decoding flags for `config` (none when it has neither); the
    limits are the plan's (sizing.addon_facts read the ranks)."""
    args: list[str] = []
    if config.lora_adapters:
        args += ["--enable-lora", "--max-loras", str(plan.max_loras), "--max-lora-rank", str(plan.max_lora_rank)]
        args += ["--lora-modules", *(f"{a.name}={adapter_container_path(a.name)}" for a in config.lora_adapters)]
    spec = config.speculative_model
    if spec is not None:
        speculative: dict[str, object] = {"method": spec.method, "num_speculative_tokens": spec.num_speculative_tokens}
        if spec.model:
            speculative["model"] = DRAFT_PATH
        args += ["--speculative-config", json.dumps(speculative, sort_keys=True, separators=(",", ":"))]
    return args


def addon_problems(config: StackConfig, model_path: str, plan: Optional[SizingPlan] = None) -> list[str]:
    """What in vllmExtraArgs fights the add-on keys or cannot load in the container, and add-ons
    on a plan across nodes (the workers' containers mount only the weights): each message names
    the key or flag, the value and a fix."""
    where = f"{NAMESPACE}:vllmExtraArgs"
    if plan is not None and plan.nodes > 1 and (config.lora_adapters or config.speculative_model):
        key = "loraAdapters" if config.lora_adapters else "speculativeModel"
        return [
            f"{NAMESPACE}:{key} with a plan across {plan.nodes} nodes: the adapters and drafts are "
            "mounted on one host only, not yet on the Ray workers; serve a model that fits one node "
            f"(nodes: 1), or drop {key}"
        ]
    reading = FlagReader(config.vllm_extra_args, "vllmExtraArgs").run()
    problems: list[str] = []
    modules: list[Option] = []
    lora_on = False
    for option in reading.options:
        if option.spec is None:
            continue
        name = option.spec.negation_of or option.spec.name
        key = _OWNED.get(name)
        if key and _set_by_keys(config, key):
            problems.append(
                f"{where}: {option.written} is set by this stack from {NAMESPACE}:{key}; remove it "
                f"from vllmExtraArgs (the {key} key passes it, with container paths and sized limits)"
            )
            continue
        if name == "--enable-lora":
            lora_on = option.spec.negation_of is None
        elif name == "--lora-modules":
            modules.append(option)
    for option in modules:
        problems += _module_problems(option, model_path, where)
    if modules and not lora_on and not config.lora_adapters:
        problems.append(
            f"{where}: --lora-modules without --enable-lora: vLLM 0.33 builds no LoRA config, and "
            "the adapters cannot load at startup; use the loraAdapters key (it downloads, mounts "
            "and enables them), or add --enable-lora"
        )
    return problems + _name_clashes(config) + local_problems(config)


# What vLLM 0.33 loads from an adapter directory (vllm/lora/lora_model.py
# ``LoRAModel.from_local_checkpoint``: adapter_config.json, then adapter_model.safetensors,
# else adapter_model.bin or .pt).
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin", "adapter_model.pt")


def local_problems(config: StackConfig) -> list[str]:
    """Local adapter and draft directories (uploaded to the model volume as they are) must hold
    what vLLM loads from them, or the container could never see it."""
    problems = []
    for adapter in config.lora_adapters:
        if not adapter.is_local:
            continue
        directory = Path(adapter.model).expanduser()
        missing = [f for f in ("adapter_config.json",) if not (directory / f).is_file()]
        if not any((directory / f).is_file() for f in ADAPTER_WEIGHTS):
            missing.append(" or ".join(ADAPTER_WEIGHTS))
        if missing:
            problems.append(
                f"{NAMESPACE}:loraAdapters: adapter {adapter.name!r} model={adapter.model!r} is not a "
                f"LoRA adapter directory on this machine (missing {', '.join(missing)}); point model "
                "at a PEFT adapter directory, or at its hub id"
            )
    spec = config.speculative_model
    if spec is not None and spec.is_local:
        directory = Path(spec.model or "").expanduser()
        missing_dir = [] if directory.is_dir() else ["the directory itself"]
        found = missing_dir or local_model_problems(directory)
        if found:
            problems.append(
                f"{NAMESPACE}:speculativeModel.model={spec.model!r} is not a model directory vLLM "
                f"can load: {'; '.join(found)}; point it at a complete model directory, or at its hub id"
            )
    return problems


def _set_by_keys(config: StackConfig, key: str) -> bool:
    if key in ("loraAdapters", "maxLoras", "maxLoraRank"):
        return bool(config.lora_adapters)
    return config.speculative_model is not None


def _module_problems(option: Option, model_path: str, where: str) -> list[str]:
    """Each --lora-modules item's path must be a directory inside the container: under the
    model mount (vllmExtraArgs can only reach that one)."""
    problems = []
    mount = model_path.rstrip("/")
    for item in option.values:
        name, path = _name_and_path(item)
        if path is None:
            continue
        normal = posixpath.normpath(path) if path.startswith("/") else path
        if normal == mount or normal.startswith(mount + "/"):
            continue
        kind = "a Hub id" if not path.startswith(("/", ".", "~")) and path.count("/") == 1 else "a path"
        problems.append(
            f"{where}: --lora-modules {item!r}: {path!r} is {kind} the vLLM container cannot see (it "
            f"runs offline and mounts only the model directory, at {mount}; vLLM stops with 'No "
            f"adapter found', vllm-project/vllm#30690). Use the loraAdapters key instead: "
            f"loraAdapters: [{{name: {name or '<name>'}, model: <hub id or local directory>}}] downloads "
            "the adapter onto the model volume and passes its container path"
        )
    return problems


def _name_and_path(item: str) -> tuple[Optional[str], Optional[str]]:
    """As LoRAParserAction reads it: name=path, else JSON {"name", "path"}."""
    if "=" in item and "," not in item:
        name, path = item.split("=", 1)
        return name, path
    try:
        data = json.loads(item)
    except ValueError:
        return None, None  # the flag reader reports what vLLM's parser would
    if not isinstance(data, dict):
        return None, None
    path = data.get("path")
    return data.get("name"), path if isinstance(path, str) else None


def _name_clashes(config: StackConfig) -> list[str]:
    served = config.served_name
    return [
        f"{NAMESPACE}:loraAdapters: adapter name {a.name!r} is also the base model's served name; "
        "clients could not choose between them: rename the adapter"
        for a in config.lora_adapters
        if a.name == served
    ]
