"""parse(): raw stack config in, a StackConfig or one ConfigError listing every problem out. Pure.

Each problem names the key (`vllm-deploy:<key>`), the value given and a fix: pydantic's errors are
rewritten here, with a "did you mean" for a mistyped key or choice.
"""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from config.constants import NAMESPACE, SECRET_KEYS
from config.namespaces import judge
from config.reachability import unreachable_features
from config.rules import CrossKeyErrors
from config.settings import KEYS, StackConfig


class ConfigError(ValueError):
    """Bad stack configuration. Each line names the key, the value given and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        )


_FIELD_BY_KEY = {field.alias or name: name for name, field in StackConfig.model_fields.items()}


# Keys users put in the project's namespace that belong to the AWS provider's (aws:*).
_AWS_PROVIDER_KEYS = {"region": "region", "profile": "profile", "awsregion": "region", "awsprofile": "profile"}


# Field names that differ from their camelCase key (max_model_len -> maxModelLen).
_ALIASES = {name: field.alias for name, field in StackConfig.model_fields.items() if field.alias and field.alias != name}

# Fields whose values are secrets wherever they appear (apiKeys.<tenant>.key): never echoed.
_SECRET_FIELDS = ("key", "previousKey", "previous_key")


# What an apiKeys value may show in an error: the tenants' names and their non-secret fields.
_TENANT_SHOWN = ("rateLimitPerMinute", "maxConcurrentRequests", "rotation", "keepPreviousKey")
_NOT_SHOWN = "<not shown: apiKeys may hold keys>"


def _api_keys_shown(value: Any, depth: int) -> Any:
    """An apiKeys value (depth 0: the map, 1: one tenant, 2: a tenant's field) as an error may
    show it: anything but names and the limit fields is hidden, since a key given one level too
    high (apiKeys.team-a = <key>) is a plain string where a tenant belongs."""
    if depth == 0 and isinstance(value, dict):
        return {name: _api_keys_shown(tenant, 1) for name, tenant in value.items()}
    if depth == 1 and isinstance(value, dict):
        return {k: (v if k in _TENANT_SHOWN and not isinstance(v, (dict, list, str)) or
                    (k in _TENANT_SHOWN and isinstance(v, str) and len(v) < 16) else _NOT_SHOWN)
                for k, v in value.items()}
    if depth == 2 and (isinstance(value, (int, float, bool)) or value is None):
        return value
    return _NOT_SHOWN


def _without_secrets(value: Any) -> Any:
    """`value` as an error may show it: a tenant's given keys replaced by a placeholder."""
    if isinstance(value, dict):
        return {k: ("<secret, not shown>" if k in _SECRET_FIELDS and v is not None else _without_secrets(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


def _describe_errors(err: dict[str, Any], raw: dict[str, Any]) -> list[str]:
    """One line per problem: a broken cross-key rule set (config.rules.CrossKeyErrors) gives one
    line per rule, each naming its keys and fix; any other error gives one line."""
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, CrossKeyErrors):
        return list(cause.problems)
    return [_describe_error(err, raw)]


def _describe_error(err: dict[str, Any], raw: dict[str, Any]) -> str:
    loc = err.get("loc") or ()
    key = str(loc[0]) if loc else ""
    msg = err["msg"].removeprefix("Value error, ")
    kind = err["type"]
    if len(loc) > 1:  # inside an object or list key: loraAdapters[0].rank, speculativeModel.model
        return _describe_nested(err, loc, msg, kind)
    if kind == "extra_forbidden":
        guess = difflib.get_close_matches(key, KEYS + SECRET_KEYS, n=1, cutoff=0.6)
        provider_key = _AWS_PROVIDER_KEYS.get(key.lower())
        hint = f"did you mean {NAMESPACE}:{guess[0]}?" if guess else (
            f"it is the AWS provider's setting: pulumi config set aws:{provider_key} <value>"
            if provider_key else
            f"known keys: {', '.join(KEYS)}"
        )
        fix = (f"rename it: pulumi config rm {key}, then pulumi config set {guess[0]} <the same value>"
               if guess else f"pulumi config rm {key}")
        return f"{NAMESPACE}:{key} is not a known key; {hint} ({fix})"
    if not key:  # model-level cross-field check
        return msg
    where = f"{NAMESPACE}:{key}" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
    given = _api_keys_shown(raw.get(key), 0) if key == "apiKeys" else _without_secrets(raw.get(key, "<missing>"))
    if "PRIVATE KEY" in str(given):  # a private key pasted by mistake is never echoed
        given = "<a private key, not shown>"
    if kind == "missing":
        return f"{where} is required: set it with `pulumi config set {key} <value>`"
    if kind == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        value = err.get("input")
        options = re.findall(r"'([^']*)'", allowed)
        guess = difflib.get_close_matches(str(value), options, n=1, cutoff=0.5)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        return f"{where}={value!r} is not allowed: expected {allowed}{hint}"
    field = StackConfig.model_fields.get(_FIELD_BY_KEY.get(key, ""))
    about = f" ({field.description})" if field is not None and field.description else ""
    return f"{where}={given!r}: {msg}{about}"


def _nested_model(annotation: Any) -> Any:
    """The pydantic model inside a field's type (list[LoraAdapter], Optional[SpeculativeModel])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for inner in typing.get_args(annotation):
        found = _nested_model(inner)
        if found is not None:
            return found
    return None


def _describe_nested(err: dict[str, Any], loc: tuple, msg: str, kind: str) -> str:
    """An error inside an object or list key, named by its path (loraAdapters[0].rank), with its
    own value and a fix through `pulumi config set --path`."""
    where = f"{NAMESPACE}:{loc[0]}" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
    path = str(loc[0]) + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
    parent = path.rsplit(".", 1)[0] if isinstance(loc[-1], str) else path
    if kind == "extra_forbidden":
        field = StackConfig.model_fields.get(_FIELD_BY_KEY.get(str(loc[0]), ""))
        nested = _nested_model(field.annotation) if field is not None else None
        fields = [f.alias or n for n, f in nested.model_fields.items()] if nested is not None else []
        guess = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.5)
        known = f"did you mean {guess[0]}? " if guess else ""
        return (f"{where} is not a known field here; {known}{loc[0]} takes {', '.join(fields) or 'other fields'} "
                f"(pulumi config rm --path '{path}'"
                + (f", then pulumi config set --path '{parent}.{guess[0]}' <the same value>)" if guess and isinstance(loc[-1], str) else ")"))
    if kind == "missing":
        return f"{where} is required: pulumi config set --path '{path}' <value> (inside {parent})"
    value = _api_keys_shown(err.get("input"), len(loc) - 1) if loc[0] == "apiKeys" else _without_secrets(err.get("input"))
    if "PRIVATE KEY" in str(value):
        value = "<a private key, not shown>"
    if loc[-1] in _SECRET_FIELDS:  # a tenant's given key: the value is not shown, the fix is a secret
        return f"{where}: {msg} (pulumi config set --secret --path '{path}' <value>)"
    if loc[0] == "apiKeys" and len(loc) == 2 and not isinstance(err.get("input"), dict):  # perhaps its key
        return (f"{where}={value}: {msg}; a tenant is an object of its limits; to give its key: "
                f"pulumi config set --secret --path '{path}.key' (it prompts), or to generate one: "
                f"pulumi config set --path '{path}.rotation' 0")
    if loc[0] == "apiKeys":
        return f"{where}={value}: {msg} (pulumi config set --path '{path}' <value>)"
    return f"{where}={value!r}: {msg} (pulumi config set --path '{path}' <value>)"


def parse(raw: dict[str, Any]) -> StackConfig:
    """Validate the stack's config values (camelCase keys, namespace stripped; keys of other
    namespaces, e.g. `aws:region`, with theirs: one under a mistyped namespace of ours or of a
    provider's is refused with the key meant, see config/namespaces.py).

    Raises ConfigError listing every problem at once, so one `pulumi preview` shows them all:
    bad values first, then combinations of good values that leave a feature unreachable.
    """
    secrets = sorted(k for k in raw if k in SECRET_KEYS)
    # Keys of other namespaces (`aws:region`, `vllm_deploy:maxModelLen`) keep theirs: a known
    # namespace is not ours to check, a mistyped one of ours is refused (config.namespaces).
    foreign = judge((k for k in raw if ":" in k), KEYS).refused
    values = {k: v for k, v in raw.items() if k not in SECRET_KEYS and ":" not in k}
    # The model accepts its Python field names too (populate_by_name, for the program's own
    # use); a stack file must use the documented camelCase keys, so `max_model_len` (vLLM's
    # Python spelling) is refused with the key meant, as a mistyped key is.
    foreign += [
        f"{NAMESPACE}:{k} is not a known key; did you mean {NAMESPACE}:{_ALIASES[k]}? (rename it: "
        f"pulumi config rm {k}, then pulumi config set {_ALIASES[k]} <the same value>)"
        for k in values if k in _ALIASES
    ]
    for k in [k for k in values if k in _ALIASES]:
        del values[k]
    if secrets:  # callers pass secrets separately; reaching here is a programming error
        raise ConfigError([f"{NAMESPACE}:{k} must be read as a secret" for k in secrets])
    try:
        config = StackConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(foreign + [line for e in exc.errors() for line in _describe_errors(e, values)]) from None
    if foreign:
        raise ConfigError(foreign)
    problems = unreachable_features(config)
    if problems:
        raise ConfigError(problems)
    return config
