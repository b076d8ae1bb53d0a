"""README's config table says what each default is: "(derived)" was printed for every None
default, including ones that are off or simply unset. Now: the literal value, "off", "none",
"generated", or "derived: <how>", per field, from the field itself."""

import re
import sys
from pathlib import Path

import pytest

from config.settings import StackConfig
from config.validation import parse

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import config_reference  # noqa: E402

FIELDS = {field.alias: field for field in StackConfig.model_fields.values()}
DEFAULT_COLUMN = re.compile(r"\*\*required\*\*|`.*`|off|none|generated|derived: \S.*")


def column(alias: str) -> str:
    return config_reference._default(FIELDS[alias])


def test_no_default_is_a_bare_derived():
    table = config_reference.table()
    assert "(derived)" not in table
    for row in table.splitlines()[2:]:
        cell = row.split(" | ")[2]
        assert DEFAULT_COLUMN.fullmatch(cell), row


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("idleStopMinutes", "off"),  # "(default: off)"
        ("rateLimitPerMinute", "off"),
        ("reasoningParser", "off"),  # no parser unless asked for
        ("domain", "none"),  # simply unset
        ("maxHourlyPriceUsd", "none"),
        ("sshPublicKey", "generated"),
        ("modelRevision", "`main`"),
        ("maxModelLen", "derived: the model's context, capped at 32768"),
        ("maxLoras", "derived: the number of loraAdapters"),
        ("modelVolumeSizeGb", "derived: the weights + 10% (at least 10 GB) headroom"),
    ],
)
def test_each_default_says_what_it_is(alias, expected):
    assert column(alias) == expected


def test_a_default_called_off_or_none_is_an_unset_key():
    """What the table calls off or none is what a stack gets without the key: nothing set."""
    config = parse({"model": "Qwen/Qwen2.5-1.5B-Instruct"})
    for alias, field in FIELDS.items():
        if column(alias) in ("off", "none"):
            assert getattr(config, next(n for n, f in StackConfig.model_fields.items() if f is field)) is None, alias


def test_a_description_that_names_its_default_is_never_none():
    for alias, field in FIELDS.items():
        if field.default is None and "default: " in (field.description or ""):
            assert column(alias) != "none", alias
