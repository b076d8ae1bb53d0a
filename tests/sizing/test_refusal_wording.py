"""Refusals that are true today and short: the ways out come first, the across-nodes way says what
`pulumi up` does with it (several nodes ship) and works when applied, and tools/size prints the
long candidate table only with --all."""

from __future__ import annotations

import pytest

from config.validation import parse
from sizing import __main__ as sizing_cli
from sizing.choice import plan
from sizing.errors import SizingError

R1 = "deepseek-ai/DeepSeek-R1"
OFFERED = {"p5.48xlarge", "p4de.24xlarge"}  # neither holds R1's 627 GiB of fp8 weights alone
# 64 sequences of 160k tokens: 686 GiB of KV cache, which no 8 nodes hold either.
TOO_MUCH = [R1, "--max-model-len", "163840", "--min-concurrent-sequences", "64", "--offered", "p5.48xlarge"]


def refusal(**keys) -> str:
    with pytest.raises(SizingError) as caught:
        plan(parse({"model": R1, "maxModelLen": 65536, **keys}), offered=OFFERED)
    return str(caught.value)


def test_the_across_nodes_way_out_is_true_and_works_when_applied():
    message = refusal()
    assert "one node only" not in message and " yet" not in message
    way = next(line for line in message.splitlines() if "across nodes" in line)
    assert "2 x p4de.24xlarge across nodes" in way and "set nodes to auto (or 2) and `pulumi up` deploys them" in way
    # The fix, applied: nodes=auto (and nodes=2) size the two nodes the refusal named.
    for nodes in ("auto", 2):
        chosen = plan(parse({"model": R1, "maxModelLen": 65536, "nodes": nodes}), offered=OFFERED)
        assert (chosen.nodes, chosen.instance.name) == (2, "p4de.24xlarge")


def test_the_ways_out_come_before_the_arithmetic():
    lines = refusal().splitlines()
    assert lines[0].endswith("Ways out:")
    ways = lines.index("  why:")
    assert ways > 1 and all(line.startswith("    - ") for line in lines[1:ways])
    assert any(line.startswith("  weights: ") for line in lines[ways:])


def test_tools_size_refuses_without_the_long_table_and_says_which_flag_prints_it(capsys):
    assert sizing_cli.main([*TOO_MUCH, "--nodes", "auto"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no table before the refusal
    err = captured.err.splitlines()
    assert err[0].startswith("error: no instance can serve") and err[0].endswith("Ways out:")
    assert err[-1].startswith("  every candidate (") and err[-1].endswith("the same command with --all")
    assert len(err) < 20
    counted = int(err[-1].split("(")[1].split(")")[0])
    # With --all: every candidate at every node count (1 to 8), each with why it does not fit.
    assert sizing_cli.main([*TOO_MUCH, "--nodes", "auto", "--all"]) == 1
    table = capsys.readouterr().out.strip().splitlines()
    rows = table[2:-1]  # header, rule, rows, legend
    assert len(rows) == counted > 500
    assert all(" no " in row for row in rows)


def test_help_says_the_table_lists_only_what_fits_unless_all():
    text = sizing_cli._parser().format_help()
    assert "only the ones that fit" in text
    assert "every candidate" not in (sizing_cli.__doc__ or "").lower()
