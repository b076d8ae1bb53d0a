"""One name per sizing quantity (sizing/quantities.py) in every output a user reads: the sizing
report (preview, tools/plan, tools/size), the candidate table, tools/size's one-GPU answer and
JSON, the refusals, the `sizing` stack output and docs/. The same 7B model on an L4 used to show
"KV cache" as 0.88, 3.50 and 4.74 GiB: three quantities under one name, and tools/size assuming 1
concurrent sequence where a stack assumes 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from config.settings import StackConfig
from config.validation import ConfigError, parse
from sizing import __main__ as sizing_cli
from sizing import quantities as q
from sizing.choice import candidates, plan
from sizing.errors import SizingError
from sizing.report import format_report, format_table

REPO = Path(__file__).resolve().parents[2]
MODEL = "Qwen/Qwen2.5-7B-Instruct"
KV_BYTES_PER_TOKEN = 57_344  # Qwen2.5-7B: 28 layers x 2 (K, V) x 4 KV heads x 128 x 2 B

# "KV cache" as a label of a figure ("KV cache 3.50 GiB", "= KV cache 4.74", "KV cache: ..."), or
# the old labels: each names one of three quantities without saying which.
BARE_KV = re.compile(
    r"\bKV cache\b(?! for the requested sequences| vLLM will allocate| dtype| usage)\s*[:=]?\s*[~\d-]"
    r"|KV cache holds|= KV cache\b(?! for the requested sequences| vLLM will allocate)"
    r"|\bKV\s+[\d.]+\s*GiB|\bkv cache (auto|fp8)"
)


def stack_plan(**keys):
    return plan(parse({"model": MODEL, "instanceType": "g6.xlarge", **keys}))


def what_if_text(capsys, *args) -> str:
    sizing_cli.main([MODEL, "--gpu", "L4", *args])
    return capsys.readouterr().out


def what_if_json(capsys, *args) -> dict:
    sizing_cli.main([MODEL, "--gpu", "L4", *args, "--json"])
    return json.loads(capsys.readouterr().out)


def test_each_quantity_has_one_label_and_one_key_per_output():
    for attribute in ("label", "column", "output_key", "json_key"):
        names = [getattr(quantity, attribute) for quantity in q.QUANTITIES if getattr(quantity, attribute)]
        assert len(names) == len(set(names)), f"two quantities share a {attribute}"
    assert all(quantity.label != "KV cache" for quantity in q.QUANTITIES)
    # The three KV figures are told apart by name.
    assert len({q.KV_FOR_SEQUENCES.label, q.KV_ALLOCATED.label, q.KV_TOKENS.label}) == 3


def test_the_same_7b_on_an_l4_shows_each_kv_figure_under_its_one_name_everywhere(capsys):
    """KV cache for the requested sequences: 2 (the stack's default) x 32768 tokens x 57,344 B =
    3.50 GiB; the KV cache vLLM will allocate: what the budget leaves, 4.74 GiB. Every output
    shows both figures under the same names, with the stack's defaults."""
    for_sequences = 2 * 32768 * KV_BYTES_PER_TOKEN / 2**30
    chosen = stack_plan()
    report = format_report(chosen)
    output = chosen.to_output()["perGpu"]
    text = what_if_text(capsys)
    result = what_if_json(capsys)["per_gpu_gib"]
    allocated = result[q.KV_ALLOCATED.json_key]
    assert allocated == pytest.approx(4.74, abs=0.02)
    assert result[q.KV_FOR_SEQUENCES.json_key] == output[q.KV_FOR_SEQUENCES.output_key] == pytest.approx(for_sequences, abs=0.01)
    assert output[q.KV_ALLOCATED.output_key] == pytest.approx(allocated, abs=0.01)
    assert f"{q.KV_FOR_SEQUENCES.label} {for_sequences:.2f} GiB" in report
    assert f"{q.KV_ALLOCATED.label}: {allocated:.2f} GiB per GPU" in report
    assert f"{q.KV_FOR_SEQUENCES.label}: minConcurrentSequences 2 x 32,768 tokens = {for_sequences:.2f} GiB" in text
    assert re.search(rf"= {q.KV_ALLOCATED.label}\s+{allocated:.2f}", text)
    # The other per-GPU figures by the same names in the report and the one-GPU answer.
    for quantity in (q.WEIGHTS, q.ACTIVATION_PEAK, q.CUDA_GRAPHS, q.NON_TORCH, q.BUDGET, q.HEADROOM,
                     q.KV_TOKENS, q.MAX_CONCURRENCY):
        assert quantity.label in report
    for quantity in (q.WEIGHTS, q.ACTIVATION_PEAK, q.CUDA_GRAPHS, q.NON_TORCH, q.BUDGET, q.KV_TOKENS,
                     q.MAX_CONCURRENCY):
        assert quantity.label in text
    # The output keys are the table's.
    keyed = {quantity.output_key for quantity in q.QUANTITIES if quantity.output_key}
    assert keyed <= set(output) | set(chosen.to_output())


def test_the_candidate_table_spells_out_its_short_headers():
    table = format_table(candidates(parse({"model": MODEL})))
    header, legend = table.splitlines()[0], table.splitlines()[-1]
    for quantity in (q.WEIGHTS, q.KV_FOR_SEQUENCES, q.OVERHEAD, q.BUDGET, q.HEADROOM):
        assert quantity.column in header
    assert f"{q.KV_FOR_SEQUENCES.column} = {q.KV_FOR_SEQUENCES.label}" in legend
    assert f"{q.OVERHEAD.label} = {q.ACTIVATION_PEAK.label} + {q.CUDA_GRAPHS.label} + {q.NON_TORCH.label}" in legend


def outputs(capsys) -> dict[str, str]:
    """Every text output a user reads, for a model that fits and one that does not."""
    texts = {
        "report": format_report(stack_plan()),
        "report across nodes": format_report(plan(parse({
            "model": "meta-llama/Llama-3.1-405B-Instruct", "nodes": 2, "maxModelLen": 16384}))),
        "table": format_table(candidates(parse({"model": MODEL})), show_all=True),
        "what-if": what_if_text(capsys),
    }
    sizing_cli.main([MODEL, "--gpu", "T4"])
    texts["what-if, no fit"] = capsys.readouterr().out
    with pytest.raises(SizingError) as caught:
        plan(parse({"model": "deepseek-ai/DeepSeek-R1", "maxModelLen": 163840, "minConcurrentSequences": 64}))
    texts["refusal"] = str(caught.value)
    return texts


def test_no_output_labels_a_figure_plain_kv_cache(capsys):
    for where, text in outputs(capsys).items():
        assert not BARE_KV.search(text), f"{where}: {BARE_KV.search(text).group(0)!r} in\n{text}"
    assert BARE_KV.search("per GPU: weights 14.19 GiB + KV cache 0.88 GiB")  # the old wording is caught


@pytest.mark.parametrize("doc", sorted((REPO / "docs").glob("*.md")), ids=lambda p: p.name)
def test_no_doc_labels_a_figure_plain_kv_cache(doc):
    found = [m.group(0) for m in BARE_KV.finditer(doc.read_text())]
    assert not found, f"{doc.name}: {found} (use the names in sizing/quantities.py)"


def test_tools_size_defaults_are_the_stacks():
    """An option left out is the stack key's default, so `tools/size MODEL` sizes what a stack
    naming only MODEL would deploy (minConcurrentSequences 2, not 1)."""
    args = sizing_cli._parser().parse_args([MODEL])
    assert sizing_cli._cli_config(args) == parse({"model": MODEL})
    assert args.min_concurrent_sequences is None  # left to parse(): the stack's default applies
    assert sizing_cli.stack_default("min_concurrent_sequences") == parse({"model": MODEL}).min_concurrent_sequences == 2
    # No option carries a default of its own that could drift from the stack's, but the one whose
    # stack key has no default (speculativeModel.numSpeculativeTokens is required in a stack).
    own = {a.dest: a.default for a in sizing_cli._parser()._actions
           if a.default not in (None, False) and a.dest != "help"}
    assert own == {"num_speculative_tokens": sizing_cli.NUM_SPECULATIVE_TOKENS}
    assert StackConfig.model_fields["speculative_model"].default is None
    with pytest.raises(ConfigError, match="numSpeculativeTokens is required"):
        parse({"model": MODEL, "speculativeModel": {"method": "ngram"}})
