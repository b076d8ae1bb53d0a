"""The catalog's EFA column against AWS's own published facts.

Expected figures are written out here from the sources (sizing/catalog/SOURCES.md "EFA"), not
read back from the catalog:

* EC2 User Guide efa.html "Supported instance types" (stored copy read 2026-11-30): the EFA
  types; in this catalog g4dn/g5/g6/g6e/g7e .8xlarge and up, gr6.8xlarge, p3dn, p4d, p4de,
  p5.4xlarge, p5.48xlarge, p5e, p5en, p6-b200, p6-b300 (and p6e-gb200, skipped by the loader).
* EC2 DescribeInstanceTypes EfaInfo.MaximumEfaInterfaces (Karpenter's generated reference):
  p5.48xlarge 32 (also AWS's efa-acc-inst-types.html: "P5 and P5e instances support up to 32
  network cards"), p4d.24xlarge 4 (AWS's fi_info example for p4d lists efa_0..efa_3),
  g6e.48xlarge 4 and g6e.24xlarge 2 (efa-acc-inst-types.html: "G6e instances support up to four
  network cards"), single-card EFA types 1.
"""

from __future__ import annotations

import csv

import pytest

from sizing import gpus

MAXIMUM_EFA_INTERFACES = {
    "p5.48xlarge": 32,
    "p5e.48xlarge": 32,
    "p4d.24xlarge": 4,
    "p4de.24xlarge": 4,
    "g6e.48xlarge": 4,
    "g6e.24xlarge": 2,
    "g5.48xlarge": 1,
    "p5.4xlarge": 1,
    "p3dn.24xlarge": 1,
}

# The catalog's types that efa.html does not list as EFA-capable.
NO_EFA = [
    "g4dn.xlarge", "g4dn.2xlarge", "g4dn.4xlarge", "g5.xlarge", "g5.4xlarge", "g6.xlarge",
    "g6.4xlarge", "g6e.xlarge", "g6e.4xlarge", "g5g.16xlarge", "g6f.4xlarge", "gr6.4xlarge",
    "p3.16xlarge", "g7e.4xlarge",
]

# efa.html "Supported instance types", as in this catalog.
AWS_EFA_TYPES = {
    "g4dn.8xlarge", "g4dn.12xlarge", "g4dn.16xlarge", "g4dn.metal",
    "g5.8xlarge", "g5.12xlarge", "g5.16xlarge", "g5.24xlarge", "g5.48xlarge",
    "g6.8xlarge", "g6.12xlarge", "g6.16xlarge", "g6.24xlarge", "g6.48xlarge",
    "g6e.8xlarge", "g6e.12xlarge", "g6e.16xlarge", "g6e.24xlarge", "g6e.48xlarge",
    "g7e.8xlarge", "g7e.12xlarge", "g7e.24xlarge", "g7e.48xlarge", "gr6.8xlarge",
    "p3dn.24xlarge", "p4d.24xlarge", "p4de.24xlarge", "p5.4xlarge", "p5.48xlarge",
    "p5e.48xlarge", "p5en.48xlarge", "p6-b200.48xlarge", "p6-b300.48xlarge",
}


@pytest.mark.parametrize("name, count", sorted(MAXIMUM_EFA_INTERFACES.items()))
def test_efa_capable_types_carry_aws_figure(name: str, count: int) -> None:
    instance = gpus.get(name)
    assert instance.efa_max_interfaces == count
    assert instance.efa_supported


@pytest.mark.parametrize("name", NO_EFA)
def test_types_without_efa_have_none(name: str) -> None:
    instance = gpus.get(name)
    assert instance.efa_max_interfaces == 0
    assert not instance.efa_supported


def test_efa_set_matches_aws_list_except_the_g7_rows() -> None:
    """Every AWS-listed EFA type has EFA here; the only extra ones are g7 (not g7e), which
    DescribeInstanceTypes (Karpenter's reference) gives EFA but the stored AWS page predates."""
    with_efa = {i.name for i in gpus.load_instances() if i.efa_supported}
    assert AWS_EFA_TYPES <= with_efa
    assert {name.split(".")[0] for name in with_efa - AWS_EFA_TYPES} == {"g7"}


def test_every_catalog_row_has_a_whole_number() -> None:
    with gpus.CATALOG_CSV.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(row["efa_max_interfaces"].isdigit() for row in rows)


def test_a_bad_value_names_the_row_and_the_column(tmp_path, monkeypatch) -> None:
    with gpus.CATALOG_CSV.open(newline="") as handle:
        text = handle.read()
    bad = tmp_path / "aws-gpu-instances.csv"
    lines = text.splitlines()
    header = lines[0].split(",")
    assert header[-1] == "efa_max_interfaces"
    g4dn = next(i for i, line in enumerate(lines) if line.startswith("g4dn.xlarge,"))
    lines[g4dn] = lines[g4dn].rsplit(",", 1)[0] + ",yes"
    bad.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(gpus, "CATALOG_CSV", bad)
    gpus._load.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"g4dn.xlarge has efa_max_interfaces 'yes'.*MaximumEfaInterfaces"):
            gpus.load_instances()
    finally:
        monkeypatch.undo()
        gpus._load.cache_clear()
