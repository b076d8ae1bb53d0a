"""`tools/plan [STACK]`: what `pulumi up` would create for a stack, before you pay for it.

Runs the real program (`__main__.py`) against `Pulumi.<STACK>.yaml` and the Pulumi.yaml defaults
with an in-process engine (plan.engine, Pulumi's mocks API), in preview mode: no Pulumi CLI, no
AWS credentials, no network (except the model hub for a model the catalog does not know, as
`pulumi preview` would). Prints the sizing report, the resources, the vLLM command line, the
cost, and on request the nginx config; `--json` prints the same for machines.

Exit status: 0 with a plan, 1 when the program refuses the stack (printed as `pulumi preview`
prints it), 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import pulumi

from components.host_setup import SMOKE_IMAGE
from components.proxy import CERTBOT_IMAGE, proxy_config
from config.image_pins import tag_only, with_digest
from config.validation import parse
from plan import engine, render
from plan.summary import UNKNOWN, summarize
from plan.world import offline_world
from serving.proxy_limits import stack_limits
from serving.vllm_args import VLLM_PORT
from sizing.choice import plan as choose_plan
from stack.pulumi_config import UNREADABLE_SECRETS_ENV

# Stands in for this machine's public address (sshAllowedCidrs: auto) unless
# VLLM_DEPLOY_PUBLIC_IP says otherwise: a documentation address (RFC 5737), never a real one.
PLACEHOLDER_PUBLIC_IP = "192.0.2.1"
PLACEHOLDER_ELASTIC_IP = "192.0.2.10"  # documentation range (RFC 5737), never a real host
DEFAULT_REGION = "us-east-1"


class StackFileError(Exception):
    """The stack file is missing or unreadable; the message says which stacks exist."""


def stacks(root: Path = engine.ROOT) -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def load_stack(stack: str, root: Path = engine.ROOT) -> tuple[dict[str, Any], dict[str, str]]:
    """(config, secrets) of Pulumi.<stack>.yaml. Encrypted values (`secure:`) cannot be read
    without the stack's passphrase; they pass as secrets whose value is a placeholder."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = ", ".join(stacks(root)) or "none"
        raise StackFileError(f"no stack file {path.name} (stacks here: {known}); "
                             f"create one with `pulumi stack init {stack}` or name another stack")
    try:
        values = engine.stack_config(stack, root)
    except Exception as exc:  # noqa: BLE001 - YAML errors have several types
        raise StackFileError(f"{path.name} is not valid YAML: {exc}") from None
    config: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            secrets[key] = "[secret]"
        elif _has_secure_leaf(value):  # e.g. apiKeys.<tenant>.key: Pulumi makes the whole value secret
            secrets[key] = json.dumps(_placeholders(value, key))
        else:
            config[key] = value
    return config, secrets


def _has_secure_leaf(value: Any) -> bool:
    if isinstance(value, dict):
        return set(value) == {"secure"} or any(_has_secure_leaf(v) for v in value.values())
    return isinstance(value, list) and any(_has_secure_leaf(v) for v in value)


def _placeholders(value: Any, path: str) -> Any:
    """`value` with each encrypted leaf replaced by a placeholder distinct per path, of a given
    key's form (config.keys_tenants), so the program accepts it; the program is told these
    values are unreadable (UNREADABLE_SECRETS_ENV) and they only ever sit inside secrets."""
    if isinstance(value, dict) and set(value) == {"secure"}:
        return "unreadable-secret-placeholder." + hashlib.sha256(path.encode()).hexdigest()[:32]
    if isinstance(value, dict):
        return {k: _placeholders(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_placeholders(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def offline_nginx_config(config: dict[str, Any]) -> str:
    """The proxy's nginx.conf for this stack, rendered as components/proxy.py renders it, with a
    placeholder Elastic IP. Only called after the program itself accepted the stack."""
    prefix = f"{engine.PROJECT}:"
    values = {**engine.project_defaults(), **config}
    settings = parse({k.removeprefix(prefix): v for k, v in values.items() if ":" not in k.removeprefix(prefix)})
    limits = stack_limits(settings, choose_plan(settings))
    return proxy_config(settings, limits, public_ip=PLACEHOLDER_ELASTIC_IP, upstream_port=VLLM_PORT)


def preview_error(error: BaseException, stack: str) -> str:
    """The failure as `pulumi preview` shows it: the RunError's message under the stack's
    diagnostics; any other exception is a bug in the program and keeps its traceback."""
    if isinstance(error, pulumi.RunError):
        message = str(error)
    else:
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        message = f"Program failed with an unhandled exception:\n{trace.rstrip()}"
    body = message.replace("\n", "\n    ")
    return f"Diagnostics:\n  pulumi:pulumi:Stack ({engine.PROJECT}-{stack}):\n    error: {body}\n"


def _notes(run: engine.ProgramRun, region: str, placeholder_ip: Optional[str]) -> list[str]:
    notes = [
        f"offline: every catalog instance type is taken as offered in {region}; "
        "`pulumi preview` asks EC2 (and sizing may then pick another type)",
        "image, VPC and subnet ids in <...> are looked up by `pulumi preview`; "
        "ids and addresses marked (known after apply) exist once `pulumi up` creates them",
    ]
    rules = run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    if placeholder_ip and any(r.plain.get("cidrIpv4") == f"{placeholder_ip}/32" for r in rules):
        notes.append(
            f"sshAllowedCidrs auto is shown as {placeholder_ip}/32 (a documentation address); "
            "`pulumi preview` puts this machine's public IPv4 address there (or VLLM_DEPLOY_PUBLIC_IP)"
        )
    notes.append(_image_pins(run))
    return notes


def _image_pins(run: engine.ProgramRun) -> str:
    """Which images the plan runs by digest and which by tag only (config/image-digests.json)."""
    images = [str(r.plain.get("name")) for r in run.of_type("docker:index/remoteImage:RemoteImage")]
    if any(r.name.endswith("-gpu-check") for r in run.resources):
        images.append(with_digest(SMOKE_IMAGE))
    if any(r.name.endswith("-certificate") and r.type == "command:remote:Command" for r in run.resources):
        images.append(with_digest(CERTBOT_IMAGE))
    loose = tag_only(images)
    pinned = sorted({i.split("@", 1)[0] for i in images if "@sha256:" in i})
    return (
        f"images pinned by digest: {', '.join(pinned) or 'none'}; by tag only (no verified digest, "
        f"config/image-digests.json says why; `tools/pin-images` pins them when online): "
        f"{', '.join(loose) or 'none'}"
    )


def _quiet_dead_event_loops(unraisable: "sys.UnraisableHookArgs") -> None:
    """Drop one known piece of exit noise, pass everything else on.

    An event loop left behind by Pulumi's runtime can be collected at interpreter exit after
    its self-pipe socket is already closed; its __del__ then raises "Invalid file descriptor:
    -1", which Python prints under the diagnostics as "Exception ignored". The run's result
    is unaffected, so only that case is silenced."""
    obj = getattr(unraisable, "object", None)
    if (
        isinstance(unraisable.exc_value, ValueError)
        and "Invalid file descriptor" in str(unraisable.exc_value)
        and getattr(obj, "__qualname__", "") == "BaseEventLoop.__del__"
    ):
        return
    sys.__unraisablehook__(unraisable)


# `pulumi config set --path` syntax: a.b, a[0], a["b.c"].
_PATH_STEP = re.compile(r'\.|\[')
_PATH_TOKEN = re.compile(r'\["([^"]*)"\]|\[(\d+)\]|\.?([^.\[\]]+)')


def _set_path(config: dict, namespace: str, path: str, value: object) -> None:
    """Set `value` at `path` (pulumi config set --path syntax) inside config["<namespace>:<first>"],
    making the objects and arrays on the way. Raises ValueError for a path it cannot follow."""
    steps: list[object] = []
    at = 0
    while at < len(path):
        match = _PATH_TOKEN.match(path, at)
        if not match or match.end() == at:
            raise ValueError(f"cannot read the path at {path[at:]!r} (write a.b, a[0] or a[\"b.c\"])")
        quoted, index, name = match.groups()
        steps.append(int(index) if index is not None else (quoted if quoted is not None else name))
        at = match.end()
    if not steps or not isinstance(steps[0], str):
        raise ValueError("a path starts with a key name")
    root_key = f"{namespace}:{steps[0]}"
    holder, slot = config, root_key
    for step in steps[1:]:
        current = holder[slot] if (isinstance(holder, dict) and slot in holder) or (
            isinstance(holder, list) and isinstance(slot, int) and slot < len(holder)) else None
        if current is None:
            current = [] if isinstance(step, int) else {}
        elif isinstance(step, int) != isinstance(current, list):
            raise ValueError(f"{'.'.join(map(str, steps[:steps.index(step)]))} is not an "
                             f"{'array' if isinstance(step, int) else 'object'}")
        if isinstance(holder, list):
            while len(holder) <= slot:  # type: ignore[operator]
                holder.append(None)
        holder[slot] = current  # type: ignore[index]
        holder, slot = current, step
    if isinstance(holder, list):
        while len(holder) <= slot:  # type: ignore[operator]
            holder.append(None)
    holder[slot] = value  # type: ignore[index]


def main(argv: Optional[list[str]] = None) -> int:
    sys.unraisablehook = _quiet_dead_event_loops
    return _main(argv)


def _main(argv: Optional[list[str]]) -> int:
    parser = argparse.ArgumentParser(prog="tools/plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", nargs="?", default="dev", help="stack name: reads Pulumi.<stack>.yaml (default dev)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON (nginx config included)")
    parser.add_argument("--nginx", action="store_true", help="also print the proxy's nginx config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a stack value for this plan only, e.g. --set replicas=3; a path sets "
                        "inside an object or array as `pulumi config set --path` does, e.g. --set "
                        "apiKeys.team-a.rateLimitPerMinute=600; a value in [..] or {..} is JSON (repeatable)")
    args = parser.parse_args(argv)
    overrides: dict[str, str] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set {item!r}: write KEY=VALUE, e.g. --set replicas=3")
        if value.strip().startswith(("[", "{")):  # a list or an object, as the stack file would hold it
            try:
                value = json.loads(value)
            except ValueError:
                parser.error(f"--set {item!r}: the value starts like JSON but is not valid JSON, "
                             "e.g. --set 'allowedCidrs=[\"203.0.113.0/24\"]'")
        overrides[key if ":" in key else f"{engine.PROJECT}:{key}"] = value

    paths = {key: value for key, value in overrides.items() if _PATH_STEP.search(key.partition(":")[2])}
    stack = args.stack
    if stack.startswith("Pulumi.") and stack.endswith(".yaml"):  # the stack file's name works too
        stack = Path(stack).name[len("Pulumi."):-len(".yaml")]
    args.stack = stack
    try:
        config, secrets = load_stack(args.stack)
    except StackFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config.update({key: value for key, value in overrides.items() if key not in paths})
    for key, value in paths.items():
        namespace, _, path = key.partition(":")
        try:
            _set_path(config, namespace, path, value)
        except ValueError as exc:
            parser.error(f"--set {path}={value}: {exc}")
    region = str(config.get("aws:region") or DEFAULT_REGION)
    placeholder_ip = None
    if not os.environ.get("VLLM_DEPLOY_PUBLIC_IP"):
        placeholder_ip = os.environ["VLLM_DEPLOY_PUBLIC_IP"] = PLACEHOLDER_PUBLIC_IP
    # Encrypted values cannot be read here: tell the program, so that it never sends their
    # placeholders to the hub as if they were tokens.
    os.environ[UNREADABLE_SECRETS_ENV] = ",".join(k.removeprefix(f"{engine.PROJECT}:") for k in secrets)
    run = engine.run_program(config, secrets=secrets, world=offline_world(region), stack=args.stack, preview=True)
    if run.error is not None:
        sys.stderr.write(preview_error(run.error, args.stack))
        return 1
    notes = _notes(run, region, placeholder_ip)
    summary = summarize(run, args.stack, notes)
    if summary.nginx_config in (None, UNKNOWN):
        # The proxy renders its config around the Elastic IP, which only `pulumi up` knows.
        structured = {k: json.loads(v) for k, v in secrets.items() if v != "[secret]"}  # apiKeys' placeholders
        summary = dataclasses.replace(summary, nginx_config=offline_nginx_config({**config, **structured}))
        notes.append(f"the nginx config is shown for an Elastic IP of {PLACEHOLDER_ELASTIC_IP} "
                     "(a documentation address); AWS assigns the real one at `pulumi up`")
    if args.json:
        print(render.to_json(summary))
    else:
        render.to_text(summary, sys.stdout, nginx=args.nginx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
