"""Calibration constants of the memory model and the vLLM accounting they belong to.

The constants live in sizing/catalog/memory-calibration.csv, each with the calibration rows it
was fitted on (bench/data/vllm-startup-logs.csv) and its source in vLLM's code; the written
accuracy report is docs/sizing-accuracy.md and ``bench/sizing_accuracy.py`` prints the figures.

vLLM changed how it spends memory at startup between releases, so a constant may hold for one
*accounting* only. ``ACCOUNTING_033`` (vLLM 0.33, what the deployer runs) is the one the sizing
uses; the others exist so the bench can compare older public logs with what their own version
did, and say where 0.33 differs:

* ``v0``: the V0 engine (before 0.8): no chunked prefill up to 32k tokens, so the profile batch
  is ``max_model_len`` tokens;
* ``v1-early``: the V1 engine 0.8-0.16: a heavy sampler warm-up (~39 bytes per logit);
* ``v1``: 0.17-0.20: a lighter sampler (~15 bytes per logit), CUDA graphs outside the budget;
* ``v1-cg``: 0.21-0.24: CUDA graphs inside the budget, otherwise as ``v1`` (no log of these
  releases was found; the boundaries come from vLLM's log text and PR dates);
* ``0.33`` (from 0.25): CUDA-graph memory inside the budget, the V2 model runner's profile run
  (attention skipped, a second sampler pass with warm-up parameters), MXFP4 scales freed.
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import functools
import re
from dataclasses import dataclass
from typing import Iterator, Mapping
from pathlib import Path


CALIBRATION_CSV = Path(__file__).parent / "catalog" / "memory-calibration.csv"

TARGET = "0.33"

ACCOUNTINGS = ("0.33", "v1-cg", "v1", "v1-early", "v0")


@dataclass(frozen=True)
class Constant:
    name: str
    accounting: str  # one of ACCOUNTINGS, or "all"
    value: float
    unit: str
    term: str
    fitted_on: str
    source: str


@functools.lru_cache(maxsize=1)
def constants() -> tuple[Constant, ...]:
    """Every row of memory-calibration.csv."""
    with CALIBRATION_CSV.open(newline="") as handle:
        return tuple(
            Constant(
                name=row["name"],
                accounting=row["accounting"],
                value=float(row["value"]),
                unit=row["unit"],
                term=row["term"],
                fitted_on=row["fitted_on"],
                source=row["source"],
            )
            for row in csv.DictReader(handle)
        )


# (name, accounting) -> value: constants refitted on a subset of the calibration rows, in force
# inside ``refitted`` (bench/sizing_accuracy.py's held-out figures); empty otherwise.
_REFITTED: contextvars.ContextVar[Mapping[tuple[str, str], float]] = contextvars.ContextVar(
    "refitted_constants", default={}
)


@contextlib.contextmanager
def refitted(values: Mapping[tuple[str, str], float]) -> Iterator[None]:
    """Within the block, ``value`` (and ``accounting``) answer with these constants instead of the
    file's: keys are (name, accounting) as in memory-calibration.csv, e.g.
    ("non_torch_one_gpu", "all") or ("sampler_bytes_per_logit", "v1"); ``ACCOUNTING_033``, built at
    import, keeps the file's values (call ``accounting(key)`` inside the block). Raises KeyError for a
    (name, accounting) the file does not have, so a misspelt refit cannot pass unnoticed.
    """
    known = {(c.name, c.accounting) for c in constants()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise KeyError(f"{CALIBRATION_CSV.name} has no constant {unknown[0]!r} to refit")
    token = _REFITTED.set({**_REFITTED.get(), **values})
    try:
        yield
    finally:
        _REFITTED.reset(token)


def value(name: str, accounting: str = TARGET) -> float:
    """A constant for this accounting (falling back to the one marked "all"); a refitted one
    inside ``refitted``.

    Raises KeyError naming the constant when the file has neither.
    """
    rows = {c.accounting: c.value for c in constants() if c.name == name}
    rows.update({key: v for (n, key), v in _REFITTED.get().items() if n == name})
    if accounting in rows:
        return rows[accounting]
    if "all" in rows:
        return rows["all"]
    raise KeyError(f"{CALIBRATION_CSV.name} has no {name!r} for accounting {accounting!r}")


@dataclass(frozen=True)
class Accounting:
    """How one range of vLLM releases spends memory at startup (see the module docstring)."""

    key: str
    sampler_bytes_per_logit: float
    cuda_graphs_in_budget: bool
    mxfp4_extra_scale_bits: float
    profile_at_max_model_len: bool
    in_flight_batches: int
    warmup_extra_bytes_per_logit: float  # a sampler warm-up after the KV cache exists, beyond the profile
    warmup_mxfp4_moe_extra_gib: float  # ...and what gpt-oss's MoE warm-up adds to it


def accounting(key: str = TARGET) -> Accounting:
    """The Accounting of one release range (ACCOUNTINGS); raises ValueError for another key."""
    if key not in ACCOUNTINGS:
        raise ValueError(f"unknown vLLM accounting {key!r}; known: {', '.join(ACCOUNTINGS)}")
    return Accounting(
        key=key,
        sampler_bytes_per_logit=value("sampler_bytes_per_logit", key),
        cuda_graphs_in_budget=bool(value("cuda_graphs_in_budget", key)),
        mxfp4_extra_scale_bits=value("mxfp4_extra_scale_bits", key) if key != "v0" else 0.0,
        profile_at_max_model_len=bool(value("profile_at_max_model_len", key)),
        in_flight_batches=int(value("in_flight_batches", key)),
        warmup_extra_bytes_per_logit=value("warmup_extra_bytes_per_logit", key),
        warmup_mxfp4_moe_extra_gib=value("warmup_mxfp4_moe_extra", key),
    )


ACCOUNTING_033 = accounting(TARGET)

_VERSION = re.compile(r"^v?(\d+)\.(\d+)")


def accounting_for_version(version: str) -> str:
    """The accounting a vLLM release follows ("0.19.0" -> "v1").

    0.25-0.32 map to "0.33" (the V2 runner, graphs in the budget); their sampler profiled only
    the default pass (lighter than 0.33's, so 0.33 predicts them a little less KV cache).
    """
    match = _VERSION.match(version.strip())
    if not match:
        raise ValueError(f"not a vLLM version: {version!r}")
    major, minor = int(match.group(1)), int(match.group(2))
    if major > 0 or minor >= 25:
        return "0.33"
    if minor >= 21:
        return "v1-cg"
    if minor >= 17:
        return "v1"
    if minor >= 8:
        return "v1-early"
    return "v0"
