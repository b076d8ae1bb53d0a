"""What a fleet replica runs, as files baked into its image. Pure: no Pulumi, nothing written.

A replica (stack key ``replicas`` >= 2) is one GPU host of an Auto Scaling group behind an
Application Load Balancer. It serves exactly what a single host serves: the same ``vllm serve``
argv (serving.vllm_args, passed in as ``vllm_argv``) and the same nginx config
(serving.nginx_conf.render of the single host's ``NginxSite``) with three fleet options added by
``fleet_site``:

- client identity (shared/reference/fleet-pitfalls.md P3): ``set_real_ip_from`` each ALB subnet,
  ``real_ip_header X-Forwarded-For``, ``real_ip_recursive on``;
- keep-alive ordering (P1): nginx's client ``keepalive_timeout`` above the ALB's idle timeout,
  both from one value (``keepalive_timeouts``);
- a drain switch (P7): while ``DRAIN_FLAG_PATH`` exists, ``/health`` and new ``/v1/`` calls
  answer vLLM's JSON error shape with 503 and Retry-After at once; running streams go on. A file
  test in the two locations, not a reload with a drain include: a reload closes the idle
  keep-alive connections the ALB holds (an RST for a request that arrives then, P1/P24) and
  leaves old workers behind with the streams; a stat per request costs nothing next to a
  generation, and every worker sees the flag the moment drain.sh writes it.

Tenant mode (issue 29, ``settings.tenant_parameter`` set): the single host's site already
includes the tenants' directory (serving.nginx_conf.site_for_stack) and ``fleet_site`` keeps it;
replica.env names the SSM parameter the tenants' files come from and where nginx mounts them
(TENANTS_RUN_DIR on tmpfs -> serving.tenants.TENANT_DIR_CONTAINER); boot.sh installs them and
tenant_sync.sh (TENANT_UNITS' timer) keeps them current (serving/replica_tenants.py).

And the self-signed certificate paths: the ALB does not validate a target's certificate (P4),
so each replica makes its own at first boot (components/scripts/replica/boot.sh), never in the
image; nginx reads it at the single host's container paths.

The entry point for the Pulumi side (fleet-cloud):

    replica_files(*, vllm_argv: list[str], nginx_site: NginxSite, settings: ReplicaSettings)
        -> dict[str, str]

relative path -> text, installed as is under ``REPLICA_DIR`` by install_replica.sh (run from the
directory the files were uploaded to); no secret in any of them. ``vllm_argv``: the single
host's argv (serving.vllm_args.serve_args, as stack.preflight computes it); ``--shutdown-timeout``
is appended from ``settings`` (a ValueError if the argv already sets another value).
``nginx_site``: the single host's site (serving.nginx_conf.site_for_stack, with the ALB's name or
the domain as canonical host); its ``upstream_read_timeout_s`` must equal
``settings.upstream_timeout_s`` (one value drives the ALB idle timeout, P1/P2).
Raises ValueError naming the field and value for anything that does not fit.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from serving.nginx import CONTAINER_CERT_PATH, CONTAINER_KEY_PATH, NginxSite
from serving.nginx_conf import render
from serving.tenants import TENANT_DIR_CONTAINER
from serving.vllm_args import CONTAINER_CACHE_ROOT, CONTAINER_ENV, SERVED_MODEL_PATH, VLLM_PORT

# AWS "Application Load Balancer attributes", idle_timeout.timeout_seconds: 1-4000 s (AWS doc,
# undated copy; fleet-pitfalls.md P2, Wave-RF/WaveHouse#346).
ALB_IDLE_TIMEOUT_MAX_S = 4000
# nginx keeps an idle client connection this much longer than the ALB (the contract's +5 s): the
# ALB always closes first, so it never sends into a socket nginx is closing (P1).
KEEPALIVE_MARGIN_S = 5
# `docker stop -t` = vLLM's --shutdown-timeout + this: SIGKILL only after vLLM's own drain had its
# whole time and the API server its exit (docker stop kills after 10 s by default, P7).
DOCKER_STOP_MARGIN_S = 30
# AWS "Edit target group attributes": deregistration_delay.timeout_seconds 0-3600 (AWS doc).
DEREGISTRATION_DELAY_MAX_S = 3600

# Where things live on a replica.
REPLICA_DIR = "/opt/vllm-deploy/replica"  # these files (the image)
RUN_DIR = "/run/vllm-deploy"  # tmpfs: the drain flag (a reboot serves again); mounted into nginx
DRAIN_FLAG_PATH = f"{RUN_DIR}/draining"
SECRETS_DIR = "/run/vllm-deploy-secrets"  # tmpfs, 0700: the API key's env file, never on disk
# Tenant mode (issue 29): the tenants' nginx files from SSM, on tmpfs (never the root volume the
# image is made from, P9); its files/ subdirectory is mounted read-only into nginx at
# serving.tenants.TENANT_DIR_CONTAINER (serving/replica_tenants.py, tenant_sync.sh).
TENANTS_RUN_DIR = "/run/vllm-deploy-tenants"
TLS_DIR = "/etc/vllm-deploy/tls"  # the replica's own certificate, made at first boot
VLLM_CONTAINER = "vllm"  # the single host's names (components/vllm_server.py, proxy.py)
NGINX_CONTAINER = "vllm-proxy"

SCRIPTS_DIR = Path(__file__).resolve().parents[1] / "components" / "scripts"
REPLICA_SCRIPTS = ("replica_lib.sh", "boot.sh", "lifecycle_watch.sh", "drain.sh",
                   "install_replica.sh", "bake_cleanup.sh",
                   "spot_drain.sh",  # issue 26: the spot interruption notice's drain
                   "tenant_sync.sh")  # issue 29: the tenants' files from SSM, reloaded on change
UNITS = ("vllm-replica.service", "vllm-replica-lifecycle.service")
# Baked always, enabled by install_replica.sh only when replica.env names a tenant parameter.
TENANT_UNITS = ("vllm-replica-tenants.service", "vllm-replica-tenants.timer")

# Values written into replica.env (read by bash and systemd): no space, quote, `$` or backslash.
_ENV_SAFE = re.compile(r"^[A-Za-z0-9._/:@+=,-]+$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_PARAMETER = re.compile(r"^/[A-Za-z0-9_.\-/]{1,1010}$")  # SSM: a-zA-Z0-9_.-/ , 1011 chars
_HOOK = re.compile(r"^[A-Za-z0-9_./-]{1,255}$")  # PutLifecycleHook LifecycleHookName
_ABS_PATH = re.compile(r"^/[A-Za-z0-9._/@+-]*$")


def keepalive_timeouts(upstream_timeout_s: int) -> tuple[int, int]:
    """(ALB idle timeout, replica nginx keepalive_timeout), seconds, from one value (P1, P2).

    The ALB's idle timeout is the proxy's upstream read timeout (the longest silence vLLM may
    keep, e.g. a long prefill or a non-streaming answer), capped at the ALB's 4000 s limit; nginx
    keeps idle client connections KEEPALIVE_MARGIN_S longer, so the ALB always closes first.
    Raises ValueError for a timeout below 1 s.
    """
    if isinstance(upstream_timeout_s, bool) or not isinstance(upstream_timeout_s, int) or upstream_timeout_s < 1:
        raise ValueError(f"upstream_timeout_s={upstream_timeout_s!r} must be a whole number of seconds >= 1")
    alb = min(upstream_timeout_s, ALB_IDLE_TIMEOUT_MAX_S)
    nginx = alb + KEEPALIVE_MARGIN_S
    assert nginx > alb  # the P1 rule, held here and by tests/serving/test_replica.py
    return alb, nginx


@dataclass(frozen=True)
class ReplicaSettings:
    """The non-secret values a replica needs (written to replica.env). Times in seconds."""

    region: str  # AWS region, e.g. us-east-1 (the SSM and Auto Scaling API calls)
    api_key_parameter: str  # SSM SecureString parameter name, /vllm-deploy/<stack>/api-key
    vllm_image: str  # the single host's vllmImage
    nginx_image: str  # serving.nginx.NGINX_IMAGE
    served_model_name: str  # what /v1/models lists (logs only; vLLM has it in the argv)
    model_host_dir: str  # the weights on the replica (model volume mount), -> /models/served
    shutdown_timeout_s: int  # vLLM --shutdown-timeout (>0: wait for in-flight requests)
    drain_seconds: int  # the ALB deregistration delay D (the drain bound)
    launch_hook_name: str  # lifecycle hook completed once /health answers through nginx
    terminate_hook_name: str  # lifecycle hook completed after the drain
    alb_subnet_cidrs: tuple[str, ...]  # the ALB's subnets: whose X-Forwarded-For is trusted
    upstream_timeout_s: int  # the proxy's upstream read timeout; drives the ALB idle timeout
    health_timeout_s: int = 1800  # boot: how long /health may take (readinessTimeoutMinutes)
    heartbeat_interval_s: int = 300  # boot: lifecycle heartbeats while the model loads
    # vLLM's compile cache on the model volume (serving.compile_cache): boot.sh mounts
    # <base>/<its instance type>--<suffix> at VLLM_CACHE_ROOT; empty base: no cache mount.
    compile_cache_base: str = ""
    compile_cache_suffix: str = ""
    # LoRA adapters and the draft baked beside the weights: (host dir, container path) each,
    # mounted read-only where the argv names them (components.host_setup.addon_dirs).
    addon_mounts: tuple[tuple[str, str], ...] = ()
    # Tenant mode (issue 29): the SSM SecureString holding the tenants' nginx files (its name,
    # never its value); empty: no tenants, replica.env as before.
    tenant_parameter: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "alb_subnet_cidrs", tuple(self.alb_subnet_cidrs))
        problems = []
        checks = {
            "region": _REGION, "api_key_parameter": _PARAMETER, "vllm_image": _ENV_SAFE,
            "nginx_image": _ENV_SAFE, "served_model_name": _ENV_SAFE, "model_host_dir": _ABS_PATH,
            "launch_hook_name": _HOOK, "terminate_hook_name": _HOOK,
        }
        if self.tenant_parameter:
            checks["tenant_parameter"] = _PARAMETER
        for name, pattern in checks.items():
            value = getattr(self, name)
            if not isinstance(value, str) or not pattern.match(value):
                problems.append(f"{name}={value!r} does not match {pattern.pattern}")
        object.__setattr__(self, "addon_mounts", tuple(tuple(m) for m in self.addon_mounts))
        for mount in self.addon_mounts:
            if len(mount) != 2 or not all(isinstance(p, str) and _ABS_PATH.match(p) for p in mount):
                problems.append(f"addon_mounts {mount!r}: two absolute paths matching {_ABS_PATH.pattern}")
        bounds = {
            "shutdown_timeout_s": (1, 3600), "drain_seconds": (0, DEREGISTRATION_DELAY_MAX_S),
            "upstream_timeout_s": (1, None), "health_timeout_s": (60, None),
            "heartbeat_interval_s": (10, None),
        }
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
                problems.append(f"{name}={value!r} must be an integer in {low}..{high or 'any'}")
        if self.compile_cache_base and (not _ABS_PATH.match(self.compile_cache_base)
                                        or not _ENV_SAFE.match(self.compile_cache_suffix or "")):
            problems.append(f"compile_cache_base={self.compile_cache_base!r} / compile_cache_suffix="
                            f"{self.compile_cache_suffix!r}: an absolute path and a non-empty safe name")
        if not self.alb_subnet_cidrs:
            problems.append("alb_subnet_cidrs is empty: name the ALB's subnets (CIDR blocks)")
        for cidr in self.alb_subnet_cidrs:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                problems.append(f"alb_subnet_cidrs entry {cidr!r} is not a CIDR block ({exc})")
        if self.heartbeat_interval_s >= self.health_timeout_s:
            problems.append(f"heartbeat_interval_s={self.heartbeat_interval_s} must be below "
                            f"health_timeout_s={self.health_timeout_s}")
        if problems:
            raise ValueError("ReplicaSettings: " + "; ".join(problems))

    @property
    def docker_stop_timeout_s(self) -> int:
        """`docker stop -t` and the container's --stop-timeout: above vLLM's own drain (P7)."""
        return self.shutdown_timeout_s + DOCKER_STOP_MARGIN_S


def fleet_site(site: NginxSite, settings: ReplicaSettings, *, drain_flag_path: str = DRAIN_FLAG_PATH) -> NginxSite:
    """The single host's `site` with the fleet's options (see the module doc); validated again.

    `drain_flag_path` is the flag's path as nginx sees it (tests point it into a temp dir).
    """
    if site.upstream_read_timeout_s != settings.upstream_timeout_s:
        raise ValueError(
            f"nginx_site.upstream_read_timeout_s={site.upstream_read_timeout_s} differs from "
            f"settings.upstream_timeout_s={settings.upstream_timeout_s}: the ALB idle timeout is "
            f"derived from the proxy's upstream timeout, so pass the same value to both"
        )
    _, keepalive = keepalive_timeouts(settings.upstream_timeout_s)
    return NginxSite.model_validate({
        **dict(site),
        "real_ip_from": list(settings.alb_subnet_cidrs),
        "client_keepalive_timeout_s": keepalive,
        "drain_flag_path": drain_flag_path,
    })


def replica_argv(vllm_argv: list[str], settings: ReplicaSettings) -> list[str]:
    """The single host's argv plus `--shutdown-timeout` (vLLM 0.33's default 0 aborts in-flight
    requests on SIGTERM, vllm/engine/arg_utils.py). Raises ValueError if the argv sets another."""
    argv = list(vllm_argv)
    given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--shutdown-timeout"]
    given += [a.split("=", 1)[1] for a in argv if a.startswith("--shutdown-timeout=")]
    if any(value != str(settings.shutdown_timeout_s) for value in given):
        raise ValueError(
            f"vllm_argv sets --shutdown-timeout {given} but settings.shutdown_timeout_s="
            f"{settings.shutdown_timeout_s}: the drain's docker stop timeout is derived from the "
            f"settings; drop the flag from vllmExtraArgs or pass its value as shutdown_timeout_s"
        )
    if not given:
        argv += ["--shutdown-timeout", str(settings.shutdown_timeout_s)]
    return argv


def replica_env(site: NginxSite, settings: ReplicaSettings) -> str:
    """replica.env: KEY=value lines the scripts read (no secret; values checked safe)."""
    values = {
        "VLLM_DEPLOY_REGION": settings.region,
        "VLLM_DEPLOY_API_KEY_PARAMETER": settings.api_key_parameter,
        "VLLM_DEPLOY_VLLM_IMAGE": settings.vllm_image,
        "VLLM_DEPLOY_NGINX_IMAGE": settings.nginx_image,
        "VLLM_DEPLOY_SERVED_MODEL": settings.served_model_name,
        "VLLM_DEPLOY_MODEL_DIR": settings.model_host_dir,
        "VLLM_DEPLOY_MODEL_MOUNT": SERVED_MODEL_PATH,
        "VLLM_DEPLOY_VLLM_PORT": str(site.upstream_port),
        "VLLM_DEPLOY_HTTPS_PORT": str(site.https_port),
        "VLLM_DEPLOY_NGINX_NOFILE": str(site.limits.container_nofile),
        "VLLM_DEPLOY_SHUTDOWN_TIMEOUT_S": str(settings.shutdown_timeout_s),
        "VLLM_DEPLOY_DOCKER_STOP_TIMEOUT_S": str(settings.docker_stop_timeout_s),
        "VLLM_DEPLOY_LAUNCH_HOOK": settings.launch_hook_name,
        "VLLM_DEPLOY_TERMINATE_HOOK": settings.terminate_hook_name,
        "VLLM_DEPLOY_HEALTH_TIMEOUT_S": str(settings.health_timeout_s),
        "VLLM_DEPLOY_HEARTBEAT_INTERVAL_S": str(settings.heartbeat_interval_s),
        "VLLM_DEPLOY_RUN_DIR": RUN_DIR,
        "VLLM_DEPLOY_SECRETS_DIR": SECRETS_DIR,
        "VLLM_DEPLOY_TLS_DIR": TLS_DIR,
        "VLLM_DEPLOY_VLLM_CONTAINER": VLLM_CONTAINER,
        "VLLM_DEPLOY_NGINX_CONTAINER": NGINX_CONTAINER,
    }
    if settings.compile_cache_base:
        values.update({
            "VLLM_DEPLOY_COMPILE_CACHE_BASE": settings.compile_cache_base,
            "VLLM_DEPLOY_COMPILE_CACHE_SUFFIX": settings.compile_cache_suffix,
            "VLLM_DEPLOY_COMPILE_CACHE_MOUNT": CONTAINER_CACHE_ROOT,
        })
    if settings.addon_mounts:  # host:container pairs, comma-separated (boot.sh mounts each :ro)
        values["VLLM_DEPLOY_ADDON_MOUNTS"] = ",".join(f"{h}:{c}" for h, c in settings.addon_mounts)
    if settings.tenant_parameter:  # tenant mode: boot.sh and tenant_sync.sh read the files from it
        values.update({
            "VLLM_DEPLOY_TENANT_PARAMETER": settings.tenant_parameter,
            "VLLM_DEPLOY_TENANT_RUN_DIR": TENANTS_RUN_DIR,
            "VLLM_DEPLOY_TENANT_DIR_CONTAINER": TENANT_DIR_CONTAINER,
        })
    for name, value in values.items():
        if not _ENV_SAFE.match(value):
            raise ValueError(f"{name}={value!r} cannot be written to replica.env (characters outside "
                             f"{_ENV_SAFE.pattern})")
    head = "# A replica's settings (serving/replica.py); no secret: the API key is read from SSM at boot.\n"
    return head + "".join(f"{k}={v}\n" for k, v in values.items())


def replica_files(*, vllm_argv: list[str], nginx_site: NginxSite, settings: ReplicaSettings) -> dict[str, str]:
    """Every file a replica's image carries under REPLICA_DIR: relative path -> text.

    replica.env, vllm.env (the container's non-secret environment, as on a single host),
    vllm-args.json (argv after the image name), nginx/nginx.conf, the scripts (lib.sh from
    components/scripts, the rest from components/scripts/replica) and the systemd units.
    """
    if nginx_site.upstream_port != VLLM_PORT:
        raise ValueError(f"nginx_site.upstream_port={nginx_site.upstream_port} is not vLLM's port {VLLM_PORT}")
    if nginx_site.tls_certificate_path != CONTAINER_CERT_PATH or nginx_site.tls_key_path != CONTAINER_KEY_PATH:
        raise ValueError(
            f"nginx_site's TLS paths ({nginx_site.tls_certificate_path}, {nginx_site.tls_key_path}) "
            f"must be the container's {CONTAINER_CERT_PATH} and {CONTAINER_KEY_PATH}: a replica mounts "
            f"the certificate it made at boot there (no Let's Encrypt behind the ALB)"
        )
    site = fleet_site(nginx_site, settings)
    files = {
        "replica.env": replica_env(site, settings),
        "vllm.env": "".join(f"{k}={v}\n" for k, v in CONTAINER_ENV.items()),
        "vllm-args.json": json.dumps(replica_argv(vllm_argv, settings), indent=1) + "\n",
        "nginx/nginx.conf": render(site),
        "lib.sh": (SCRIPTS_DIR / "lib.sh").read_text(),
    }
    for name in (*REPLICA_SCRIPTS, *UNITS, *TENANT_UNITS):
        files[name] = (SCRIPTS_DIR / "replica" / name).read_text()
    return files
