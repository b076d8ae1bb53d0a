"""The metric names a PromQL expression reads, without a PromQL parser.

Whether an expression parses is Prometheus's business (promtool and the HTTP API check it in
the tests); this only finds which series it selects, to hold them against the exporters'
lists (serving.monitoring.catalog).
"""

from __future__ import annotations

import re

# Grouping and matching modifiers take a parenthesised label list: those names are labels.
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
# An identifier not glued to a preceding digit, letter or dot (so `5m`, `1e3` are not names).
_IDENTIFIER = re.compile(r"(?<![\w.:$])[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2",
}


def metric_names(expr: str) -> set[str]:
    """Metric names `expr` selects, e.g. {"vllm:num_requests_running"} for
    `sum by (model_name) (vllm:num_requests_running{engine="0"})`."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _LABEL_LISTS.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group(0)
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or an aggregation, or an operator keyword
        names.add(word)
    return names
