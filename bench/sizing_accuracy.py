"""How the sizer's figures compare with simple references, for every catalog model.

    .venv/bin/python bench/sizing_accuracy.py

Columns:
* params: the catalog's exact parameter count (billions).
* est GB: the sizer's weight bytes for the checkpoint's own format (10^9 bytes).
* ref GB: "real" here means parameter count x bytes per parameter of the checkpoint's bulk
  format (2 for bf16/fp16, 1 for fp8, 4.25/8 for mxfp4). No verified hub repository sizes exist
  in the references, so this is the closest thing to the real checkpoint size we can state; the
  sizer differs from it only where a checkpoint keeps some tensors in 16-bit (embeddings and
  lm_head of fp8 checkpoints, everything but the experts in mxfp4 ones).
* need 4k / need 32k: total GPU memory the sizer requires (all GPUs, GiB) at maxModelLen 4096 and
  at the default (model context capped at 32768), both with minConcurrentSequences 2.
* seed: the original guide's rule of thumb (7B >= 16 GB, 13B >= 24 GB, 32B >= 64 GB,
  70B >= 140 GB) for the nearest size class, "-" where the model is not within 1.5x of one.
  The need columns include the per-GPU overheads of the chosen instance, so a many-GPU choice
  (e.g. 8x T4) needs more in total than a one-GPU choice.
* chosen 4k / chosen default: the instance the sizer picks, with its us-east-1 on-demand price.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config.settings import parse  # noqa: E402
from sizing.choice import plan  # noqa: E402
from sizing.errors import SizingError  # noqa: E402
from sizing.formats import WeightFormat  # noqa: E402
from sizing.host import GB  # noqa: E402
from sizing.memory import weight_bytes  # noqa: E402
from sizing.models import ModelSpec, catalog_models  # noqa: E402

SEED_RULE_GB = ((7, 16), (13, 24), (32, 64), (70, 140))  # (model size class in B, GPU GB)
BULK_BYTES = {None: 2.0, "fp8": 1.0, "fbgemm_fp8": 1.0, "mxfp4": 4.25 / 8}


def seed_rule(params_b: float) -> str:
    """The guide's figure for the nearest size class, if the model is within 1.5x of it."""
    size, gb = min(SEED_RULE_GB, key=lambda row: abs(math.log(params_b / row[0])))
    return f">={gb}" if 1 / 1.5 <= params_b / size <= 1.5 else "-"


def chosen(spec: ModelSpec, **keys) -> tuple[str, float]:
    try:
        result = plan(parse({"model": spec.model_id, **keys}), resolver=lambda *_: spec)
    except SizingError:
        return "refused", float("nan")
    need = result.memory.required_gib * result.tensor_parallel_size
    return f"{result.instance.name} ${result.hourly_price_usd:.2f}", need


def main() -> None:
    started = time.perf_counter()
    header = (
        f"{'model':<42} {'params':>7} {'est GB':>8} {'ref GB':>8} {'diff':>6} "
        f"{'need 4k':>8} {'need 32k':>8} {'seed':>5}  {'chosen 4k':<26} chosen default"
    )
    print(header)
    print("-" * len(header))
    worst = 0.0
    for spec in catalog_models():
        fmt = WeightFormat(spec.native_quantization, spec.quant_bits, spec.quant_group_size)
        estimate = weight_bytes(spec, fmt)
        reference = spec.total_params * BULK_BYTES.get(spec.native_quantization, 2.0)
        diff = (estimate - reference) / reference
        worst = max(worst, abs(diff)) if spec.native_quantization is None else worst
        short, need_short = chosen(spec, maxModelLen=4096)
        default, need_default = chosen(spec)
        params_b = spec.total_params / 1e9
        print(
            f"{spec.model_id:<42} {params_b:>7.2f} {estimate / GB:>8.1f} {reference / GB:>8.1f} "
            f"{diff:>+6.1%} {need_short:>8.1f} {need_default:>8.1f} {seed_rule(params_b):>5}  "
            f"{short:<26} {default}"
        )
    elapsed = time.perf_counter() - started
    print()
    print(f"16-bit checkpoints: largest |estimate - params x 2 B| = {worst:.2%}")
    print("GB = 10^9 bytes; need columns are GiB summed over the instance's GPUs (TP ranks)")
    print(f"{len(catalog_models())} models sized twice in {elapsed:.2f} s")


if __name__ == "__main__":
    main()
