"""Read a ``vllm serve`` argument list the way vLLM 0.33's argparse parser does, and report every
flag it would reject (unknown, removed, abbreviated, wrong type, outside its choices) at once.

A typo or a flag copied from an old guide would otherwise surface as a container that exits at
start, after the instance was bought and the weights downloaded.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from config.constants import NAMESPACE
from config.images import PINNED_VLLM_VERSION
from config.validation import ConfigError
from serving.json_values import dotted_value, json_value_problem
from serving.vllm_flags import (
    SECRET_FLAGS,
    LATE_CHECKED_CHOICES,
    REMOVED_FLAGS,
    FlagSpec,
    is_json_type,
    long_names,
    are_opposites,
    flag_catalog,
    opposite_switch,
)


# vLLM's rewriting before argparse (vllm/utils/argparse_utils.py): -O<n> means
# --optimization-level <n>, and -O.<key> a key of --compilation-config.
_OPT_LEVEL_FLAG = "--optimization-level"

_OPT_CONFIG_FLAG = "--compilation-config"

_BARE_O_LEVELS = ("0", "1", "2", "3")

# argparse's own rule: these look like numbers, not options, so they can be values.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")

_HUMAN_INT = re.compile(r"^\d+$|^\d+(\.\d+)?[kmgt]$|^\d+[KMGT]$")


@dataclass
class Option:
    """One option occurrence in an argument list."""

    written: str  # the option as the user wrote it, without any =value
    spec: Optional[FlagSpec]  # None when unknown or removed
    position: int  # index in the argument list
    values: list[str] = field(default_factory=list)
    dotted_key: Optional[str] = None  # for --flag.key value


@dataclass
class Reading:
    options: list[Option] = field(default_factory=list)
    # (argv index, the option it concerns or None for a stray token, the message)
    findings: list[tuple[int, Optional[Option], str]] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [message for _, _, message in self.findings]


def _looks_like_option(token: str) -> bool:
    """argparse's _parse_optional: `--flag=value` is an option even when the value holds spaces
    (a JSON object); otherwise a space makes the token a positional."""
    return (
        token.startswith("-")
        and len(token) > 1
        and not _NEGATIVE_NUMBER.match(token)
        and " " not in token.split("=", 1)[0]
    )


def _normalize_long(name: str) -> str:
    """vLLM turns underscores into dashes in the flag name (not in a dotted key's path)."""
    head, dot, rest = name.partition(".")
    return "--" + head[2:].replace("_", "-") + dot + rest


class FlagReader:
    """Walks argv once, the way vLLM's FlexibleArgumentParser + argparse would."""

    def __init__(self, args: Sequence[str], source: str):
        self.args = list(args)
        self.where = f"{NAMESPACE}:{source}"
        self.reading = Reading()
        self.pos = 0

    def problem(self, message: str) -> None:
        self.reading.findings.append((self.pos - 1, None, f"{self.where}: {message}"))

    def option_problem(self, option: Option, message: str) -> None:
        self.reading.findings.append((option.position, option, f"{self.where}: {message}"))

    def run(self) -> Reading:
        while self.pos < len(self.args):
            token = self.args[self.pos]
            self.pos += 1
            if not isinstance(token, str) or not token:
                self.problem(f"{token!r} is not a non-empty string; each list item is one argument")
            elif token.startswith("-") and len(token.split()) > 1 and "=" not in token.split()[0]:
                flag, value = token.split(None, 1)
                self.problem(
                    f"{token!r} holds a flag and its value in one item; vllm serve reads each "
                    f"item as one argument: write two items ({flag!r}, {value!r}) or {flag}={value}"
                )
            elif not _looks_like_option(token):
                self.problem(
                    f"{token!r} is not the value of any flag; vllm serve takes one positional "
                    "argument, the model, which this stack passes from the `model` key "
                    "(remove it, or put it right after the flag it belongs to)"
                )
            elif token.startswith("-O") and not token.startswith("--"):
                self.read_o_shorthand(token)
            else:
                self.read_option(token)
        return self.reading

    # -- options ---------------------------------------------------------------------
    def read_option(self, token: str) -> None:
        written, eq, explicit = token.partition("=")
        explicit_value = explicit if eq else None
        name = _normalize_long(written) if written.startswith("--") else written
        base, dot, dotted_key = name.partition(".")
        if dotted_key.endswith("+"):  # --flag.key+ a,b appends to a list
            dotted_key = dotted_key[:-1]
        option = Option(written, None, self.pos - 1, dotted_key=dotted_key or None)
        self.reading.options.append(option)
        option.spec = spec = self.resolve(base, option)
        if spec is None:
            self.skip_values()  # values of an unknown flag would only repeat the same problem
            return
        if dot:
            self.read_dotted(option, explicit_value)
        else:
            self.read_values(option, explicit_value)

    def resolve(self, base: str, option: Option) -> Optional[FlagSpec]:
        catalog = flag_catalog()
        written = option.written
        if base in catalog:
            return catalog[base]
        if base in REMOVED_FLAGS:
            self.option_problem(
                option,
                f"{written!r} was removed before vLLM {PINNED_VLLM_VERSION}; {REMOVED_FLAGS[base]}"
            )
            return None
        short_value = self.attached_short_value(base)
        if short_value is not None:
            option.written = base[:2]
            return short_value
        if base.startswith("--"):
            matches = [name for name in long_names() if name.startswith(base)]
            if len(matches) == 1:
                # argparse would take the abbreviation, but a later vLLM flag with the same
                # prefix would silently change its meaning; the full name is stable.
                self.option_problem(
                    option, f"{written!r} is an abbreviation; write it in full: {matches[0]}"
                )
                return catalog[matches[0]]
            if matches:
                self.option_problem(
                    option,
                    f"{written!r} is an ambiguous abbreviation of {', '.join(matches[:6])}; "
                    "write the flag in full"
                )
                return None
        opposite = opposite_switch(base)
        if opposite is not None:
            self.option_problem(
                option,
                f"{written!r} is not a vllm serve flag in vLLM {PINNED_VLLM_VERSION}: "
                f"{opposite} is a switch without that opposite spelling; leave {written} out "
                "to keep vLLM's default",
            )
            return None
        self.option_problem(
            option,
            f"{written!r} is not a vllm serve flag in vLLM {PINNED_VLLM_VERSION}{_suggest(base)}",
        )
        return None

    def attached_short_value(self, base: str) -> Optional[FlagSpec]:
        """argparse reads -qawq as -q awq for two-character options."""
        spec = flag_catalog().get(base[:2])
        if base.startswith("--") or len(base) <= 2 or spec is None or not spec.takes_value:
            return None
        self.args.insert(self.pos, base[2:])
        return spec

    def read_values(self, option: Option, explicit_value: Optional[str]) -> None:
        spec = option.spec
        assert spec is not None
        if explicit_value is not None:
            if not spec.takes_value:
                self.option_problem(option, _switch_with_value(option.written, explicit_value))
                return
            option.values.append(explicit_value)
        elif spec.arity == "one":
            self.take_value(option, required=True)
        elif spec.arity == "optional":
            self.take_value(option, required=False)
        elif spec.arity == "many":
            if self.take_value(option, required=True):
                while self.take_value(option, required=False):
                    pass
        self.check_values(option)

    def read_dotted(self, option: Option, explicit_value: Optional[str]) -> None:
        spec = option.spec
        assert spec is not None
        if not spec.accepts_json:
            json_flags = sorted(s.name for s in set(flag_catalog().values()) if s.accepts_json)
            self.option_problem(
                option,
                f"{option.written!r}: dotted keys only set fields of config-object flags "
                f"({', '.join(json_flags[:5])}, ...); {spec.name} is not one"
            )
        if explicit_value is not None:
            option.values.append(explicit_value)
        elif not self.take_value(option, required=True):
            return
        if spec.accepts_json and option.dotted_key:
            problem = dotted_value(spec, option.dotted_key, option.values[-1], option.written)
            if problem:
                self.option_problem(option, problem)

    def take_value(self, option: Option, *, required: bool) -> bool:
        if self.next_is_value():
            option.values.append(self.args[self.pos])
            self.pos += 1
            return True
        if required:
            self.option_problem(
                option,
                f"{option.written!r} needs a value; write it as the next list item or as "
                f"{option.written}=<value>"
            )
        return False

    def skip_values(self) -> None:
        while self.next_is_value():
            self.pos += 1

    def next_is_value(self) -> bool:
        if self.pos >= len(self.args):
            return False
        token = self.args[self.pos]
        return isinstance(token, str) and not _looks_like_option(token)

    def read_o_shorthand(self, token: str) -> None:
        catalog = flag_catalog()
        if token.startswith("-O."):
            # vllm/utils/argparse_utils.py FlexibleArgumentParser.parse_args turns any -O<x>
            # into --optimization-level <x>, so -O.key is read as the level ".key".
            self.problem(
                f"{token!r} is read by vLLM {PINNED_VLLM_VERSION} as --optimization-level "
                f"{token[2:]!r}, not as a compilation setting; write "
                f"{_OPT_CONFIG_FLAG}{token[2:]} <value> instead"
            )
            self.skip_values()
            return
        if token == "-O":
            option = Option(token, catalog[_OPT_LEVEL_FLAG], self.pos - 1)
            self.reading.options.append(option)
            if self.pos < len(self.args) and self.args[self.pos] in _BARE_O_LEVELS:
                option.values.append(self.args[self.pos])
                self.pos += 1
            else:
                self.option_problem(option, "'-O' needs a level: write -O0, -O1, -O2 or -O3")
            return
        level = token[3:] if token[2] == "=" else token[2:]
        option = Option("-O", catalog[_OPT_LEVEL_FLAG], self.pos - 1, [level])
        self.reading.options.append(option)
        if level not in _BARE_O_LEVELS:
            # vllm/config/vllm.py OptimizationLevel is O0..O3.
            self.option_problem(option, f"'-O{level}' is not an optimization level: write -O0, -O1, -O2 or -O3")

    # -- values ----------------------------------------------------------------------
    def check_values(self, option: Option) -> None:
        spec = option.spec
        assert spec is not None
        if spec.name in SECRET_FLAGS:
            return  # never echo a secret, not even to say it is malformed
        allowed = spec.choices or LATE_CHECKED_CHOICES.get(spec.name)
        for value in option.values:
            if allowed is not None and value not in allowed:
                self.option_problem(
                    option,
                    f"{option.written} {value!r} is not allowed: expected one of "
                    f"{_listing(allowed)}{_suggest_value(value, allowed)}",
                )
            elif allowed is None and is_json_type(spec.value_type):
                problem = json_value_problem(spec, value, option.written)
                if problem:
                    self.option_problem(option, problem)
            elif allowed is None and not _value_fits_type(spec.value_type, value):
                self.option_problem(
                    option, f"{option.written} {value!r} is not a valid {spec.value_type} value"
                )


def _listing(allowed: Sequence[str], shown: int = 10) -> str:
    if len(allowed) <= shown:
        return ", ".join(allowed)
    return f"{', '.join(allowed[:shown])}, ... ({len(allowed)} in all)"


def _suggest(name: str) -> str:
    candidates = [n for n in long_names() if not are_opposites(n, name)]
    guess = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean {guess[0]}?" if guess else ""


def _switch_with_value(written: str, value: str) -> str:
    spec = flag_catalog().get(_normalize_long(written) if written.startswith("--") else written)
    turning_off = value.strip().lower() in ("false", "0", "no", "off")
    partner = None
    if spec is not None:
        partner = spec.negation_of or next(
            (n for n, s in flag_catalog().items() if s.negation_of == spec.name and not s.not_in_help),
            None,
        )
    if turning_off and partner:
        return f"{written!r} takes no value; to turn it off write {partner}"
    if turning_off:
        return f"{written!r} takes no value and has no off spelling; to keep it off, leave it out"
    return f"{written!r} takes no value; write {written} alone"


def _suggest_value(value: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    same_letters = [a for a in allowed if a.lower() == value.lower()]
    guess = same_letters or difflib.get_close_matches(value, allowed, n=1, cutoff=0.6)
    return f"; did you mean {guess[0]!r}?" if guess else ""


def _value_fits_type(value_type: str, value: str) -> bool:
    optional = value_type.startswith("optional[")
    base = value_type.removeprefix("optional[").removesuffix("]") if optional else value_type
    if optional and value in ("", "None"):
        return True
    if base == "int":
        return _parses(int, value)
    if base == "float":
        return _parses(float, value)
    if base == "human_readable_int":
        return bool(_HUMAN_INT.match(value.strip()))
    if base == "human_readable_int_or_auto":
        return value in ("auto", "-1") or bool(_HUMAN_INT.match(value.strip()))
    return True


def _parses(convert: Any, value: str) -> bool:
    try:
        convert(value)
    except ValueError:
        return False
    return True


# --- public checks -----------------------------------------------------------------------------


def check_flags(args: Sequence[str], *, source: str = "vllmExtraArgs") -> None:
    """Raise ConfigError listing every flag in `args` the pinned `vllm serve` would reject.

    `args` are options only (no model positional). Accepted: --flag value, --flag=value,
    underscores for dashes, --config-flag.key value, -O<n>, short aliases (-tp, -q...).
    Refused: unknown and removed flags, abbreviations, values outside a flag's choices,
    values of the wrong type, a value flag without its value, and stray positionals.
    """
    problems = FlagReader(args, source).run().problems
    if problems:
        raise ConfigError(problems)
