"""The AWS Regions (sizing/catalog/aws-regions.csv; source in SOURCES.md) and what is wrong with
a region name. Pure: the offline plan checks `aws:region` against this list; `pulumi preview`
asks EC2 which Regions the account has enabled (components/region.py) and uses this list to name
the closest valid ones.
"""

from __future__ import annotations

import csv
import difflib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

REGIONS_CSV = Path(__file__).parent / "catalog" / "aws-regions.csv"


@dataclass(frozen=True)
class Region:
    code: str  # e.g. us-east-1
    name: str  # AWS's description, e.g. US East (N. Virginia)
    partition: str  # aws | aws-cn | aws-us-gov | an isolated partition


@functools.cache
def load_regions() -> tuple[Region, ...]:
    with REGIONS_CSV.open(newline="") as handle:
        return tuple(Region(row["region"], row["name"], row["partition"]) for row in csv.DictReader(handle))


def closest_regions(region: str, among: Optional[Iterable[str]] = None, n: int = 3) -> list[str]:
    """The `n` region codes most like `region` (difflib's ratio), from `among` or the catalog."""
    codes = sorted(set(among) if among is not None else {r.code for r in load_regions()})
    close = difflib.get_close_matches(region.strip().lower(), codes, n=n, cutoff=0.5)
    return close or [c for c in codes if c.startswith("us-east-")][:n]


def unknown_region(region: str, among: Optional[Iterable[str]] = None, why: str = "") -> str:
    """The refusal for `aws:region=<region>`, a name not among the valid ones (`among`, default:
    the catalog): the key, the value, the closest valid regions and the command that sets one."""
    close = closest_regions(region, among)
    names = {r.code: r.name for r in load_regions()}
    listed = ", ".join(f"{c} ({names[c]})" if c in names else c for c in close)
    return (
        f"aws:region={region!r} is not an AWS Region{why}; the closest valid ones: {listed}. "
        f"Fix: pulumi config set aws:region {close[0]} (every Region: aws ec2 describe-regions "
        "--all-regions, or sizing/catalog/aws-regions.csv)"
    )


def other_partition(region: str) -> Optional[str]:
    """The refusal for a Region of another AWS partition (China, GovCloud, isolated): accounts
    there are separate, no commercial account can enable them, and this program's instance
    catalog, prices and IAM policies (arn:aws:...) are the commercial partition's. None otherwise."""
    found = next((r for r in load_regions() if r.code == region), None)
    if found is None or found.partition == "aws":
        return None
    return (
        f"aws:region={region!r} ({found.name}) is in the {found.partition} partition, not the commercial "
        "`aws` partition vllm-deploy supports (its instance catalog, prices and IAM policies are for "
        "it; an account there is a separate account, which cannot be enabled from this one). Fix: "
        f"pulumi config set aws:region {closest_regions(region, [r.code for r in load_regions() if r.partition == 'aws'], 1)[0]}"
    )


def region_problem(region: str) -> Optional[str]:
    """None when `region` is a catalog Region of the commercial partition, else the refusal
    (other_partition, unknown_region)."""
    if region in {r.code for r in load_regions()}:
        return other_partition(region)
    return unknown_region(region)


def write_catalog() -> int:  # pragma: no cover - run by hand after a boto3 upgrade (SOURCES.md)
    """Rewrite aws-regions.csv from the installed botocore's endpoints.json; returns the rows."""
    import json

    import botocore

    data = json.loads((Path(botocore.__file__).parent / "data" / "endpoints.json").read_text())
    rows = [(code, about.get("description", ""), part["partition"])
            for part in data["partitions"] for code, about in sorted(part["regions"].items())]
    with REGIONS_CSV.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["region", "name", "partition"])
        writer.writerows(rows)
    load_regions.cache_clear()
    return len(rows)
