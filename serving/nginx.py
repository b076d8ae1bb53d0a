"""The TLS reverse proxy in front of vLLM, as a typed model: ``NginxSite`` holds every value the
proxy needs, each checked (serving.nginx_conf renders it into a complete nginx.conf). Pure: no
Pulumi, no files written, so the rules are unit-tested directly and the rendered file is run by
a real nginx in tests/serving/test_nginx_live.py.

In production the file is mounted read-only as /etc/nginx/nginx.conf into the official
``NGINX_IMAGE`` container, which shares the host's network, so the upstream is vLLM's
loopback port. The defaults below are that container's paths; tests override them with
paths in a temporary directory so an unprivileged nginx can run the same file.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serving.proxy_limits import UPSTREAM_KEEPALIVE, ProxyLimits
from serving.tenants import TENANT_DIR_CONTAINER, USAGE_LOG_CONTAINER

# Stable line of the official image as of 2026-10-21 (docker-library/repo-info,
# repos/nginx/remote/stable-alpine.md: NGINX_VERSION=1.30.6). The template uses only
# directives that nginx 1.22 (Debian bookworm, what the tests run) also understands.
NGINX_IMAGE = "nginx:1.30.6-alpine"
NGINX_IMAGE_VERSION = (1, 30, 6)
# nginx 1.25.1 moved HTTP/2 from a `listen` parameter to the `http2` directive and warns about
# the old form (src/http/ngx_http_core_module.c); 1.22 knows only the old one.
HTTP2_DIRECTIVE_SINCE = (1, 25, 1)

# Where the official image expects things; its access/error logs are symlinks to the
# container's stdout/stderr, so `docker logs` shows them.
CONTAINER_CONF_PATH = "/etc/nginx/nginx.conf"
CONTAINER_TLS_DIR = "/etc/nginx/tls"
CONTAINER_CERT_PATH = f"{CONTAINER_TLS_DIR}/server.crt"
CONTAINER_KEY_PATH = f"{CONTAINER_TLS_DIR}/server.key"

# njs (ngx_http_js_module) in the official image: the alpine variant installs nginx.org's
# nginx-module-njs package (nginxinc/docker-nginx, stable/alpine/Dockerfile), whose module sits in
# /usr/lib/nginx/modules, linked from /etc/nginx/modules. Debian's libnginx-mod-http-js (the
# tests' nginx) puts it in /usr/lib/nginx/modules/ngx_http_js_module.so.
CONTAINER_NJS_MODULE_PATH = "/etc/nginx/modules/ngx_http_js_module.so"

# After a reload (a tenant added, removed or re-keyed) the old workers finish their requests,
# streams included, then exit; past this bound nginx closes what they still hold, so a stream
# older than the reload is cut there (the client sees it end early, the log "complete": false)
# and a revoked key's streams end by then. Without a bound, repeated reloads pile up old
# workers (shared/reference/fleet-pitfalls.md P24).
DEFAULT_WORKER_SHUTDOWN_TIMEOUT_S = 900

# A long answer from a large model can stream for many minutes with long gaps while a
# batch is busy; nginx's 60 s default would cut it off mid-generation.
DEFAULT_UPSTREAM_TIMEOUT_S = 3600

# vLLM 0.33 runs uvicorn with timeout_keep_alive=VLLM_HTTP_TIMEOUT_KEEP_ALIVE, default 5 s
# (vllm/envs.py; passed in vllm/entrypoints/launchers/api_server/entry.py). nginx must drop an
# idle connection before uvicorn does: a request sent on a connection uvicorn is closing fails,
# and nginx does not retry a POST, so the client would get a 502.
UVICORN_KEEP_ALIVE_S = 5
DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT_S = 4

# A replica's keep-alive sits above the load balancer's idle timeout, which an ALB caps at 4000 s
# (serving.replica); a little room above that.
CLIENT_KEEPALIVE_MAX_S = 4100

# A client that stops reading holds a stream and a vLLM slot. nginx's send_timeout runs between
# two successive writes to the client, so a slow reader that keeps reading is never cut; one
# that stops is cut this long after its socket buffers fill.
DEFAULT_CLIENT_SEND_TIMEOUT_S = 30


# Anything that ends up inside an nginx directive: no whitespace, quotes, braces or `;`,
# which would let a value close the directive and start another one.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/@+-]*$")
_SERVER_NAME = re.compile(
    r"^(_|localhost|(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})$"
)
_UNIX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class NginxSite(BaseModel):
    """Everything the reverse proxy needs. Field docs say what each value controls."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- upstream: the vLLM server --------------------------------------------------
    upstream_host: str = Field(
        "127.0.0.1", description="IP address vLLM listens on (host networking: loopback)."
    )
    upstream_port: int = Field(
        ge=1, le=65535, description="vLLM's --port; must be the port vLLM really uses."
    )
    upstream_keepalive: int = Field(
        UPSTREAM_KEEPALIVE, ge=1, le=1024, description="Idle connections to vLLM kept per worker."
    )
    upstream_keepalive_timeout_s: int = Field(
        DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT_S,
        ge=1,
        lt=UVICORN_KEEP_ALIVE_S,
        description="How long an idle connection to vLLM is kept; below uvicorn's 5 s.",
    )
    upstream_read_timeout_s: int = Field(
        DEFAULT_UPSTREAM_TIMEOUT_S,
        ge=1,
        description="Longest silence allowed from vLLM while it generates (seconds).",
    )
    upstream_send_timeout_s: int = Field(
        DEFAULT_UPSTREAM_TIMEOUT_S,
        ge=1,
        description="Longest stall allowed while sending a request body to vLLM (seconds).",
    )
    upstream_connect_timeout_s: int = Field(10, ge=1, le=60, description="Connecting to vLLM.")

    # --- clients ------------------------------------------------------------------
    client_send_timeout_s: int = Field(
        DEFAULT_CLIENT_SEND_TIMEOUT_S,
        ge=1,
        le=60,
        description="Longest a write to a client may stay blocked (it stopped reading); "
        "the timer restarts on every write, so slow readers are never cut.",
    )
    client_sndbuf_kib: int = Field(
        64,
        ge=8,
        le=4096,
        description="Kernel send buffer per client connection (the kernel doubles it). Fixed, not "
        "autotuned: a stalled client pins at most this much, and a reader is never cut while it "
        "drains a third of it per client_send_timeout_s (the kernel wakes a blocked writer then).",
    )
    client_header_timeout_s: int = Field(
        15, ge=1, le=300, description="Time to receive a request's headers (408 after)."
    )
    client_body_timeout_s: int = Field(
        60, ge=1, le=600, description="Longest pause between two reads of a request body (408 after)."
    )
    client_keepalive_timeout_s: int = Field(
        75,
        ge=0,
        le=CLIENT_KEEPALIVE_MAX_S,
        description="How long an idle client connection stays open (a replica's: above the load "
        "balancer's idle timeout, serving.replica).",
    )
    header_line_kib: int = Field(
        16, ge=1, le=64, description="Largest request header line (and URI), in KiB."
    )
    limits: ProxyLimits = Field(
        description="Workers, connections, file limits and stream limits (serving.proxy_limits)."
    )

    # --- listeners ----------------------------------------------------------------
    listen_address: str = Field(
        "0.0.0.0", description="IPv4 address nginx listens on; tests use 127.0.0.1."
    )
    https_port: int = Field(443, ge=1, le=65535, description="HTTPS (API) port.")
    http_port: int = Field(
        80, ge=1, le=65535, description="Plain HTTP port: ACME challenges, else a JSON refusal."
    )
    listen_backlog: int = Field(
        4096, ge=16, le=65535, description="Pending connections the kernel queues per listener."
    )
    server_name: str = Field(
        "_", description="DNS name clients use (the certificate's name), or _ for any."
    )
    canonical_host: Optional[str] = Field(
        None,
        description="The name or address clients should use (the domain, else the public IP): "
        "redirects and messages name it and vLLM receives it as Host, never the client's Host.",
    )
    nginx_version: tuple[int, int, int] = Field(
        NGINX_IMAGE_VERSION, description="Version of the nginx that runs the file (directive syntax)."
    )

    # --- TLS ----------------------------------------------------------------------
    tls_certificate_path: str = Field(
        CONTAINER_CERT_PATH, description="PEM certificate chain, server first."
    )
    tls_key_path: str = Field(CONTAINER_KEY_PATH, description="PEM private key of the certificate.")
    hsts_max_age_s: int = Field(
        31536000, ge=0, description="Strict-Transport-Security max-age; 0 tells browsers to forget it."
    )
    acme_webroot: Optional[str] = Field(
        None,
        description="Directory served at /.well-known/acme-challenge/ on the HTTP port "
        "(Let's Encrypt http-01); None = the HTTP port only redirects.",
    )

    # --- process and files ----------------------------------------------------------
    worker_user: Optional[str] = Field(
        "nginx",
        description="User the workers drop to when the master runs as root (the image's "
        "`nginx`); None when nginx is started unprivileged.",
    )
    worker_group: Optional[str] = Field(
        None, description="Group for the workers; None = the group named like the user."
    )
    pid_path: str = Field("/var/run/nginx.pid", description="PID file.")
    temp_dir: str = Field(
        "/var/cache/nginx", description="Parent of nginx's client-body and proxy temp dirs."
    )
    access_log_path: str = Field("/var/log/nginx/access.log", description="Access log file.")
    error_log_path: str = Field("/var/log/nginx/error.log", description="Error log file.")

    # --- request policy -------------------------------------------------------------
    client_max_body_size_mb: int = Field(
        64, ge=1, le=1024, description="Largest request body accepted, in MiB; larger gets 413."
    )
    metrics_allowed_cidrs: list[str] = Field(
        default_factory=list,
        description="Who may read /metrics; everyone else gets 403 (empty: nobody).",
    )
    rate_limit_per_minute: Optional[int] = Field(
        None, ge=1, le=60000, description="API requests per minute per client IP; None = off."
    )
    rate_limit_burst: int = Field(
        20,
        ge=0,
        le=100000,
        description="Requests above the rate served at once before 429s start.",
    )

    # --- a replica behind the fleet's load balancer (serving.replica) --------------------
    real_ip_from: list[str] = Field(
        default_factory=list,
        description="Load balancer subnets whose X-Forwarded-For nginx trusts for the client's "
        "address (limits, /metrics allow-list, access log); empty: the peer's address, never a header.",
    )
    drain_flag_path: Optional[str] = Field(
        None,
        description="While this file exists, /health and new /v1/ calls answer a JSON 503 (the "
        "replica is draining); None: no drain switch (a single host).",
    )

    # --- Grafana at /grafana/ (monitoring: true) -------------------------------------
    grafana_upstream_port: Optional[int] = Field(
        None,
        ge=1,
        le=65535,
        description="Grafana's port on upstream_host; None = no /grafana/ location.",
    )
    grafana_allowed_cidrs: list[str] = Field(
        default_factory=list,
        description="Who may open /grafana/; everyone else gets 403 (empty: nobody).",
    )

    # --- tenants: named keys checked by nginx (serving.tenants) -------------------------
    tenants_dir: Optional[str] = Field(
        None,
        description="Directory of the tenants' files (serving.tenants) nginx includes; set: nginx "
        "checks every /v1/ key itself (401 from nginx), names the tenant in its logs and applies "
        "the tenants' limits; None: vLLM checks the one apiKey (no njs, the file as before).",
    )
    njs_module_path: str = Field(
        CONTAINER_NJS_MODULE_PATH, description="ngx_http_js_module.so (tenant mode only)."
    )
    usage_log_path: str = Field(
        USAGE_LOG_CONTAINER,
        description="Per-tenant usage log, JSON lines (serving.tenants.USAGE_LOG_FIELDS); tenant mode only.",
    )
    worker_shutdown_timeout_s: int = Field(
        DEFAULT_WORKER_SHUTDOWN_TIMEOUT_S,
        ge=1,
        le=DEFAULT_UPSTREAM_TIMEOUT_S,
        description="How long old workers may finish their streams after a reload (tenant mode); "
        "past it their connections are closed and those streams cut.",
    )

    # --- validators ---------------------------------------------------------------
    @field_validator("upstream_host", "listen_address")
    @classmethod
    def _ipv4(cls, value: str, info) -> str:
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise ValueError(
                f"{info.field_name}={value!r} is not an IPv4 address; use e.g. 127.0.0.1"
            ) from None

    @field_validator(
        "tls_certificate_path",
        "tls_key_path",
        "acme_webroot",
        "pid_path",
        "temp_dir",
        "access_log_path",
        "error_log_path",
        "drain_flag_path",
        "tenants_dir",
        "njs_module_path",
        "usage_log_path",
    )
    @classmethod
    def _safe_path(cls, value: Optional[str], info) -> Optional[str]:
        if value is None or _SAFE_PATH.match(value):
            return value
        raise ValueError(
            f"{info.field_name}={value!r} must be an absolute path of letters, digits and "
            f"._/@+- only (no spaces, quotes, braces or ';', which nginx would parse)"
        )

    @field_validator("server_name")
    @classmethod
    def _server_name(cls, value: str) -> str:
        if _SERVER_NAME.match(value):
            return value.lower()
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(
                f"server_name={value!r} must be a DNS name such as llm.example.com, "
                f"an IP address, or _ for any name"
            ) from None

    @field_validator("worker_user", "worker_group")
    @classmethod
    def _unix_name(cls, value: Optional[str], info) -> Optional[str]:
        if value is None or _UNIX_NAME.match(value):
            return value
        raise ValueError(
            f"{info.field_name}={value!r} must be a Unix user/group name such as nginx"
        )

    @field_validator("canonical_host")
    @classmethod
    def _canonical(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            pass
        if value != "_" and _SERVER_NAME.match(value) and not value.startswith("*"):
            return value.lower()
        raise ValueError(
            f"canonical_host={value!r} must be a DNS name such as llm.example.com or an IPv4 address"
        )

    @field_validator("limits")
    @classmethod
    def _limits_fit_nginx(cls, value: ProxyLimits) -> ProxyLimits:
        if value.worker_connections > 65535:
            raise ValueError(f"worker_connections={value.worker_connections} is above nginx's 65535")
        return value

    @field_validator("metrics_allowed_cidrs", "grafana_allowed_cidrs", "real_ip_from")
    @classmethod
    def _cidrs(cls, value: list[str], info) -> list[str]:
        checked = []
        for raw in value:
            try:
                checked.append(str(ipaddress.ip_network(raw, strict=True)))
            except ValueError as exc:
                raise ValueError(
                    f"{info.field_name} entry {raw!r} is not a CIDR block ({exc}); "
                    f"write e.g. 10.0.0.0/8 or 203.0.113.7/32"
                ) from None
        return checked

    @model_validator(mode="after")
    def _ports_distinct(self) -> "NginxSite":
        if self.https_port == self.http_port:
            raise ValueError(
                f"https_port and http_port are both {self.https_port}; nginx needs a "
                f"separate port for each (443 and 80 in production)"
            )
        if self.upstream_port in (self.https_port, self.http_port):
            raise ValueError(
                f"upstream_port={self.upstream_port} is also a port nginx listens on; "
                f"vLLM and nginx share the host network, so give vLLM another port"
            )
        if self.grafana_upstream_port in (self.https_port, self.http_port, self.upstream_port):
            raise ValueError(
                f"grafana_upstream_port={self.grafana_upstream_port} is already taken by nginx "
                f"or vLLM on the host network; give Grafana its own port"
            )
        return self

    # --- derived ------------------------------------------------------------------
    @property
    def public_authority(self) -> Optional[str]:
        """canonical_host plus the HTTPS port when it is not 443; None when not configured."""
        if self.canonical_host is None:
            return None
        return self.canonical_host if self.https_port == 443 else f"{self.canonical_host}:{self.https_port}"

    @property
    def public_https_url(self) -> Optional[str]:
        return f"https://{self.public_authority}/" if self.public_authority else None

    @property
    def upstream_authority(self) -> str:
        """Host vLLM receives: the public name, else its own address (never the client's Host)."""
        return self.public_authority or f"{self.upstream_host}:{self.upstream_port}"

    @property
    def http2_in_listen(self) -> bool:
        """Whether this nginx takes HTTP/2 as a `listen` parameter (before 1.25.1)."""
        return self.nginx_version < HTTP2_DIRECTIVE_SINCE
