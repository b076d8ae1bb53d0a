"""Rules across keys, checked by StackConfig's model validator once every value is valid. Pure.

Each rule raises ValueError naming the keys involved and a fix; `check_all` runs every rule and
raises one `CrossKeyErrors` listing each broken one (config.validation lists them one per line). Combinations that are allowed but leave a feature unreachable
are config.reachability's (parse lists them all at once).

The rules read the values they need through `CrossKeyValues` (what StackConfig has), so this
module does not import config.settings, which calls it: the import runs one way.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Protocol, Union

from config.access import inside_any
from config.constants import DISABLE_LOG_STATS, NAMESPACE
from config.images import is_pinned_vllm_image, unverified_image_message
from config.risky_args import is_pinned_revision, risky_arg_problem, trusts_remote_code


class CrossKeyValues(Protocol):
    """The validated values the rules read (config.settings.StackConfig's fields)."""

    tls: str
    domain: Optional[str]
    model: str
    model_source: str
    vllm_image: str
    allow_unverified_vllm_image: bool
    monitoring: bool
    allowed_cidrs: list[str]
    pipeline_parallel_size: int
    nodes: Union[Literal["auto"], int]
    idle_stop_minutes: Optional[int]
    vllm_extra_args: list[str]
    replicas: int
    spot: bool
    subnet_id: Optional[str]
    max_replicas: Optional[int]
    warm_replicas: int
    on_demand_replicas: int
    model_revision: Optional[str]
    speculative_model: Any  # config.keys_adapters.SpeculativeModel or None: .model, .revision
    scale_on_waiting_requests: float
    replace_stopped_host: bool

    @property
    def grafana_cidrs(self) -> list[str]: ...

    @property
    def is_local_model(self) -> bool: ...


class CrossKeyErrors(ValueError):
    """Every broken cross-key rule at once: `problems`, one message each (keys, values, fix)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def check_all(config: CrossKeyValues) -> None:
    """Every cross-key rule. Raises CrossKeyErrors listing each broken one (not just the first),
    so one preview shows every conflict."""
    rules = [_letsencrypt_needs_domain, _modelscope_needs_hub_id, _image_is_pinned_or_confirmed]
    if config.monitoring:
        rules.append(_grafana_reachable)
    rules += [_pipeline_matches_nodes, _idle_stop_needs_metrics]
    if config.replicas > 1:
        rules.append(_replicas_alone)
    rules += [_scaling_keys, _risky_extra_args]
    problems: list[str] = []
    for rule in rules:
        try:
            rule(config)
        except CrossKeyErrors as broken:
            problems += broken.problems
        except ValueError as broken:
            problems.append(str(broken))
    if problems:
        raise CrossKeyErrors(problems)


def _letsencrypt_needs_domain(config: CrossKeyValues) -> None:
    if config.tls == "letsencrypt" and not config.domain:
        raise ValueError(
            "tls=letsencrypt needs `domain` (a DNS name pointing at the host); "
            "set domain, or use tls=self-signed"
        )


def _modelscope_needs_hub_id(config: CrossKeyValues) -> None:
    if config.model_source == "modelscope" and config.model.startswith(("/", "./", "~")):
        raise ValueError("modelSource=modelscope needs a ModelScope id, not a local path")


def _image_is_pinned_or_confirmed(config: CrossKeyValues) -> None:
    if not config.allow_unverified_vllm_image and not is_pinned_vllm_image(config.vllm_image):
        raise ValueError(unverified_image_message(config.vllm_image))


def _grafana_reachable(config: CrossKeyValues) -> None:
    unreachable = [c for c in config.grafana_cidrs if not inside_any(c, config.allowed_cidrs)]
    if unreachable:
        raise ValueError(
            f"{NAMESPACE}:grafanaAllowedCidrs has {', '.join(unreachable)}, outside every "
            f"block of {NAMESPACE}:allowedCidrs {config.allowed_cidrs}: the security group "
            "lets only allowedCidrs reach port 443, so Grafana could not be reached from "
            "there. Add the block to allowedCidrs, or remove it from grafanaAllowedCidrs"
        )


def _pipeline_matches_nodes(config: CrossKeyValues) -> None:
    if config.pipeline_parallel_size > 1 and config.nodes not in ("auto", config.pipeline_parallel_size):
        raise ValueError(
            f"{NAMESPACE}:pipelineParallelSize={config.pipeline_parallel_size} puts one pipeline "
            f"stage on each node, but nodes={config.nodes}: set nodes to "
            f"{config.pipeline_parallel_size} (or auto), or leave pipelineParallelSize at 1"
        )


def _idle_stop_needs_metrics(config: CrossKeyValues) -> None:
    if config.idle_stop_minutes is not None and any(
        # vLLM reads underscores as dashes and takes `--flag=value` (serving.flag_reader).
        arg.split("=", 1)[0].replace("_", "-") == DISABLE_LOG_STATS for arg in config.vllm_extra_args
    ):
        raise ValueError(
            f"{NAMESPACE}:idleStopMinutes={config.idle_stop_minutes} reads vLLM's request metrics, "
            f"which {DISABLE_LOG_STATS} in vllmExtraArgs turns off (the host would never look "
            f"idle); remove {DISABLE_LOG_STATS} from vllmExtraArgs, or unset idleStopMinutes"
        )


def _replicas_alone(config: CrossKeyValues) -> None:
    """What a fleet (replicas >= 2) cannot be combined with yet, each with the key to change."""
    n = f"{NAMESPACE}:replicas={config.replicas}"
    problems: list[str] = []
    if config.nodes != 1:
        problems.append(
            f"{n} with nodes={config.nodes}: a fleet of multi-node (Ray) replicas is not supported "
            "yet (it will come after single-host replicas have run in production); set nodes to 1 "
            "(the model must then fit one instance), or replicas to 1"
        )
    if config.idle_stop_minutes is not None:
        problems.append(
            f"{n} with idleStopMinutes={config.idle_stop_minutes}: a replica that stops itself is "
            "replaced by the Auto Scaling group (it keeps `replicas` hosts running); unset "
            "idleStopMinutes, or set replicas to 1"
        )
    if config.tls == "letsencrypt":
        problems.append(
            f"{n} with tls=letsencrypt: the load balancer terminates TLS with an ACM certificate "
            "(DNS-validated for `domain` when the account has its Route 53 zone); set tls to "
            "self-signed (clients keep using caCertificate unless domain is set), or replicas to 1"
        )
    if config.subnet_id:
        problems.append(
            f"{n} with subnetId={config.subnet_id!r}: a fleet spreads over one subnet per zone "
            "(the load balancer needs two zones at least); remove subnetId and set vpcId to the "
            "subnet's VPC, or set replicas to 1"
        )
    if problems:
        raise CrossKeyErrors(problems)


def _scaling_keys(config: CrossKeyValues) -> None:
    """maxReplicas, warmReplicas and onDemandReplicas (issue 26): each needs a fleet, and the
    combinations AWS or the design cannot run are refused naming every key and a fix."""
    n = f"{NAMESPACE}:replicas={config.replicas}"
    problems: list[str] = []
    top = config.max_replicas
    if top is not None and top < config.replicas:
        problems.append(
            f"{NAMESPACE}:maxReplicas={top} is below {n}: with maxReplicas the fleet scales between "
            f"replicas (the minimum) and maxReplicas; set maxReplicas to {config.replicas} or more, "
            "or remove it for a fixed fleet"
        )
    if config.replicas == 1 and top is not None and top > 1:
        problems.append(
            f"{NAMESPACE}:maxReplicas={top} with {n}: replicas 1 is one host without a load balancer, "
            "which cannot scale; set replicas to 2 (the fleet's minimum) or more, or remove maxReplicas"
        )
    if config.replicas == 1 and config.warm_replicas:
        problems.append(
            f"{NAMESPACE}:warmReplicas={config.warm_replicas} with {n}: a warm pool belongs to a fleet's "
            "Auto Scaling group; set replicas to 2 or more, or warmReplicas to 0"
        )
    if top is not None and top > config.replicas and not config.monitoring:
        problems.append(
            f"{NAMESPACE}:maxReplicas={top} with monitoring=false: the fleet scales on vLLM's waiting "
            "requests, which each replica's CloudWatch agent publishes only with monitoring on; set "
            f"monitoring to true, or remove maxReplicas (or set it to {config.replicas})"
        )
    if config.spot and config.warm_replicas:
        problems.append(
            f"{NAMESPACE}:warmReplicas={config.warm_replicas} with spot=true: AWS refuses a warm pool "
            "on an Auto Scaling group with a mixed-instances policy or spot instances (PutWarmPool); "
            "set warmReplicas to 0 to keep spot, or spot to false to keep the warm pool"
        )
    # Keys set (away from their defaults: Pulumi.yaml declares the defaults, which the CLI passes
    # as if set) where they would do nothing: refused like toolCallParser without toolCalling, so
    # a user never believes a setting is in force when it is not.
    given = {name for name in ("on_demand_replicas", "scale_on_waiting_requests")
             if getattr(config, name) != _default(config, name)}
    if "on_demand_replicas" in given and not (config.replicas > 1 and config.spot):
        problems.append(
            f"{NAMESPACE}:onDemandReplicas={config.on_demand_replicas} does nothing without a spot fleet "
            f"({n}, spot={str(config.spot).lower()}): it is the on-demand base of a fleet with spot "
            "replicas; set replicas to 2 or more and spot to true, or drop onDemandReplicas "
            "(pulumi config rm onDemandReplicas)"
        )
    if "scale_on_waiting_requests" in given and not (top is not None and top > config.replicas):
        problems.append(
            f"{NAMESPACE}:scaleOnWaitingRequests={config.scale_on_waiting_requests:g} does nothing without "
            f"maxReplicas above replicas ({n}): set maxReplicas to the most replicas to scale to, or drop "
            "scaleOnWaitingRequests (pulumi config rm scaleOnWaitingRequests)"
        )
    if config.replace_stopped_host and config.replicas > 1:
        problems.append(
            f"{NAMESPACE}:replaceStoppedHost=true with {n}: a fleet's Auto Scaling group replaces a "
            "stopped replica itself; drop replaceStoppedHost (pulumi config rm replaceStoppedHost)"
        )
    if config.replicas > 1 and config.spot and config.on_demand_replicas > config.replicas:
        problems.append(
            f"{NAMESPACE}:onDemandReplicas={config.on_demand_replicas} is above {n}: the on-demand "
            "base is part of the fleet's minimum; set onDemandReplicas to at most "
            f"{config.replicas} (1, the default, keeps one replica off spot), or raise replicas"
        )
    if problems:
        raise CrossKeyErrors(problems)


def _default(config: CrossKeyValues, name: str) -> Any:
    """The default of field `name` of the config's model (pydantic's model_fields)."""
    return type(config).model_fields[name].default  # type: ignore[attr-defined]


def _risky_extra_args(config: CrossKeyValues) -> None:
    """--trust-remote-code without a pinned modelRevision, --allowed-local-media-path / (issue 27;
    the reasons, from vLLM's source, in config/risky_args.py)."""
    problem = risky_arg_problem(config.vllm_extra_args, config.model, config.model_revision, config.is_local_model)
    if problem:
        raise ValueError(problem)
    draft = config.speculative_model
    if (trusts_remote_code(config.vllm_extra_args) and draft is not None and draft.model
            and not draft.model.startswith(("/", "./", "~")) and not is_pinned_revision(draft.revision)):
        # vLLM 0.33 builds the draft's ModelConfig with the target's trust_remote_code
        # (vllm/config/speculative.py, SpeculativeConfig.__post_init__): the draft's repository
        # runs code on the host too.
        given = f"revision={draft.revision!r}" if draft.revision else "no revision (the main branch)"
        raise ValueError(
            f"{NAMESPACE}:vllmExtraArgs has --trust-remote-code and {NAMESPACE}:speculativeModel "
            f"{draft.model} has {given}: vLLM loads the draft with the same trust, so whoever can push "
            "to its repository runs code on the host. Fix: pin the draft's reviewed commit, "
            "speculativeModel.revision: <40-hex commit id> (pulumi config set --path "
            "'speculativeModel.revision' <commit>), or remove --trust-remote-code"
        )
