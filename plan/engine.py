"""An in-process Pulumi engine: runs the program (`__main__.py`) against Pulumi's own mocks API
(`pulumi.runtime.set_mocks`) and records what it registers.

It stands in for the engine and the cloud, nothing else: every registered resource (type, name,
inputs with secretness kept, parent, dependencies, resource options), every invoke (answered by
`plan.world.AwsWorld`), every log line and the stack exports are recorded. `tools/plan` reads a
preview from the recording; the tests (tests/harness.py) assert invariants and wiring on it.

In a preview (`preview=True`) a resource's outputs are its inputs and nothing else: whatever a
provider computes (ids, addresses, generated keys, command output) stays unknown, as in
`pulumi preview`, and `apply` callbacks on such values do not run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.sync_await import _sync_await

from plan.world import AwsWorld, InvokeFailure

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "__main__.py"
PROJECT = "vllm-deploy"

# What a provider computes for a resource of (type, name, inputs); merged over the inputs.
Computed = Callable[[str, str, dict[str, Any]], dict[str, Any]]

_SECRET_SIG = rpc._special_sig_key
_SECRET_VALUE = rpc._special_secret_sig


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(_SECRET_SIG) == _SECRET_VALUE


def is_unknown(value: Any) -> bool:
    """A value only known after `pulumi up` (a provider computes it)."""
    return isinstance(value, pulumi.output.Unknown) or value == rpc.UNKNOWN


def reveal(value: Any) -> Any:
    """The plain value with every secret wrapper removed (for asserting on content)."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def plain_text(value: Any) -> str:
    """Everything in `value` that is NOT under a secret wrapper, as one string to search."""
    if is_secret(value):
        return ""
    if isinstance(value, dict):
        return " ".join(f"{k} {plain_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(plain_text(v) for v in value)
    return "" if value is None else str(value)


@dataclass
class Registered:
    urn: str
    type: str
    name: str
    custom: bool
    inputs: dict[str, Any]  # as the engine receives them; secrets stay wrapped
    parent: str
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    provider: str
    replace_on_changes: list[str]
    delete_before_replace: bool
    ignore_changes: list[str]
    aliases: list[Any]
    error_hooks: list[str]
    deleted_with: str
    additional_secret_outputs: list[str]
    replacement_trigger: Any
    retain_on_delete: bool = False
    outputs: dict[str, Any] = field(default_factory=dict)  # a component's register_outputs()

    @property
    def plain(self) -> dict[str, Any]:
        return reveal(self.inputs)

    def depends_on(self, other: "Registered") -> bool:
        deps = set(self.dependencies)
        for urns in self.property_dependencies.values():
            deps.update(urns)
        return other.urn in deps


@dataclass
class Invoke:
    token: str
    args: dict[str, Any]


@dataclass
class Export:
    value: Any
    secret: bool
    known: bool


@dataclass
class LogLine:
    severity: str  # info | warning | error
    message: str


@dataclass
class ProgramRun:
    resources: list[Registered]
    invokes: list[Invoke]
    exports: dict[str, Export]
    log: list[LogLine] = field(default_factory=list)
    error: Optional[BaseException] = None

    @property
    def logs(self) -> list[str]:
        return [line.message for line in self.log]

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str) -> Registered:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, found {[r.urn for r in found]}"
        return found[0]

    def named(self, name: str) -> Registered:
        found = [r for r in self.resources if r.name == name]
        assert len(found) == 1, f"expected one resource named {name}, found {len(found)}"
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)

    def ancestors(self, res: Registered) -> Iterator[Registered]:
        urns = {r.urn: r for r in self.resources}
        parent = urns.get(res.parent)
        while parent is not None:
            yield parent
            parent = urns.get(parent.parent)

    @property
    def cloud_resources(self) -> list[Registered]:
        """Custom resources of cloud providers (not components, not providers)."""
        return [r for r in self.resources if r.custom and not r.type.startswith("pulumi:providers:")]


def _resource_id(typ: str, name: str) -> str:
    """The id the provider would assign: EC2's own shape where a host script checks it (the
    model volume's id names its device under /dev/disk/by-id)."""
    if typ == "aws:ebs/volume:Volume":
        return "vol-0" + hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name}-id"


class RecordingMocks(pulumi.runtime.Mocks):
    """Echo a resource's inputs as its outputs, plus what `computed` says a provider adds."""

    def __init__(self, world: AwsWorld, computed: Optional[Computed] = None, preview: bool = False):
        self.world = world
        self.computed = computed
        self.preview = preview
        self.invokes: list[Invoke] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        extra = self.computed(args.typ, args.name, args.inputs) if self.computed else {}
        # An empty id reads as unknown in a preview, as the engine sends it for a new resource.
        return ("" if self.preview else _resource_id(args.typ, args.name)), {**args.inputs, **extra}

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.invokes.append(Invoke(args.token, reveal(args.args)))
        try:
            return self.world.answer(args.token, args.args), []
        except InvokeFailure as failure:
            return {}, [("", str(failure))]


def _value(proto_value) -> Any:
    """A protobuf Value as the plain Python value it carries."""
    from google.protobuf import json_format

    return json_format.MessageToDict(proto_value)


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: RecordingMocks):
        super().__init__(mocks)
        self.registered: list[Registered] = []

    def RegisterResource(self, request):  # noqa: N802 - the gRPC method's name
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registered.append(
                Registered(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    custom=bool(request.custom),
                    inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
                    parent=request.parent,
                    dependencies=list(request.dependencies),
                    property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
                    provider=request.provider,
                    replace_on_changes=list(request.replaceOnChanges),
                    delete_before_replace=bool(request.deleteBeforeReplace),
                    ignore_changes=list(request.ignoreChanges),
                    aliases=list(request.aliases),
                    error_hooks=list(request.hooks.on_error),
                    deleted_with=request.deletedWith,
                    additional_secret_outputs=list(request.additionalSecretOutputs),
                    replacement_trigger=_value(request.replacement_trigger)
                    if request.HasField("replacement_trigger")
                    else None,
                    retain_on_delete=request.HasField("retainOnDelete") and request.retainOnDelete,
                )
            )
        return response

    def RegisterResourceOutputs(self, request):  # noqa: N802 - the gRPC method's name
        outputs = rpc.deserialize_properties(request.outputs, keep_unknowns=True)
        for res in self.registered:
            if res.urn == request.urn:
                res.outputs = outputs
        return super().RegisterResourceOutputs(request)


class _LogCapture:
    """The logger MockEngine writes `pulumi.log.*` to."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []

    def debug(self, msg: str) -> None:  # pragma: no cover - trivial sink
        pass

    def info(self, msg: str) -> None:
        self.lines.append(LogLine("info", msg))

    def warning(self, msg: str) -> None:
        self.lines.append(LogLine("warning", msg))

    def error(self, msg: str) -> None:
        self.lines.append(LogLine("error", msg))


def project_defaults(root: Path = ROOT) -> dict[str, Any]:
    """The `config:` defaults of Pulumi.yaml, which the CLI (not the mocks) would apply."""
    project = yaml.safe_load((root / "Pulumi.yaml").read_text())
    defaults = {}
    for key, decl in (project.get("config") or {}).items():
        if isinstance(decl, dict) and "default" in decl:
            defaults[key] = decl["default"]
    return defaults


def stack_config(stack: str, root: Path = ROOT) -> dict[str, Any]:
    """A stack file's `config:` values as written (`vllm-deploy:` keys keep their namespace)."""
    data = yaml.safe_load((root / f"Pulumi.{stack}.yaml").read_text()) or {}
    return dict(data.get("config") or {})


def _encode(value: Any) -> str:
    # The engine passes every config value as a string; structured values as JSON.
    if isinstance(value, str):
        return value
    return json.dumps(value)


def run_program(
    config: dict[str, Any],
    *,
    secrets: Optional[dict[str, str]] = None,
    plaintext_secrets: bool = False,
    world: Optional[AwsWorld] = None,
    stack: str = "dev",
    preview: bool = False,
    with_defaults: bool = True,
    computed: Optional[Computed] = None,
    main: Path = MAIN,
) -> ProgramRun:
    """Run __main__.py with `config` (project keys with or without namespace; `aws:*` kept) on
    top of the Pulumi.yaml defaults. `secrets` (project keys) are passed as encrypted config
    unless `plaintext_secrets`. `main` is the program file. Never raises for the program's own failure: it is `run.error`."""
    world = world or AwsWorld()
    values = {**(project_defaults() if with_defaults else {}), **config}
    flat: dict[str, str] = {}
    for key, value in values.items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        flat[full] = _encode(value)
    flat.setdefault("aws:region", world.region)
    secret_keys = []
    for key, value in (secrets or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        flat[full] = value
        if not plaintext_secrets:
            secret_keys.append(full)

    mocks = RecordingMocks(world, computed, preview)
    monitor = RecordingMonitor(mocks)
    logs = _LogCapture()
    try:
        asyncio.get_event_loop()
    except RuntimeError:  # an asyncio.run() earlier in this process unset the loop when it ended
        asyncio.set_event_loop(asyncio.new_event_loop())
    settings.ROOT.set(None)  # fresh stack resource, so exports do not leak between runs
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor, logger=logs)
    pulumi.runtime.set_all_config(flat, secret_keys)
    stack_resource = settings.get_root_resource()

    error: Optional[BaseException] = None
    try:
        _sync_await(
            pulumi.runtime.stack.run_pulumi_func(lambda: runpy.run_path(str(main), run_name="__main__"))
        )
    except Exception as exc:  # noqa: BLE001 - handed to the caller, which reports it
        error = exc

    exports: dict[str, Export] = {}
    for name, value in (stack_resource.outputs.items() if error is None else ()):
        out = pulumi.Output.from_input(value)
        exports[name] = Export(
            value=_sync_await(out.future(with_unknowns=True)),
            secret=_sync_await(out.is_secret()),
            known=_sync_await(out.is_known()),
        )
    return ProgramRun(resources=monitor.registered, invokes=mocks.invokes, exports=exports, log=logs.lines, error=error)
