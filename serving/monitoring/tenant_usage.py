"""Per-tenant usage as Prometheus metrics (issue 29): mtail reading the proxy's usage log.

In tenant mode (``apiKeys`` set) nginx writes one JSON line per request to its usage log,
naming the tenant (never the key) with the status, bytes, time and the token counts of the
`usage` vLLM sent. On the host, mtail (the Debian/Ubuntu package `mtail`, a systemd service
installed by components/scripts/install_tenant_usage.sh) runs ``tenant_usage.mtail`` beside
this module over that log and serves the counters below on loopback; Prometheus scrapes them as
job USAGE_JOB; serving.monitoring.usage_dashboard draws them.

Requests without a valid key (nginx's 401) have no tenant: they are counted in a family of
their own, ``vllm_deploy_unauthenticated_requests_total``, not under a made-up tenant. A label
``tenant=""`` is no label at all to Prometheus (it would be summed into every per-tenant
aggregation as an unnamed series), and any word such as "unknown" is a valid tenant name
(config/keys_tenants.py). Kept apart, every per-tenant sum is over real tenants, and a burst
of bad keys (a scan, or a client with a revoked key) is one series to look at.

Rotation: logrotate renames the log when it passes USAGE_LOG_MAX_MIB and nginx reopens it
(`nginx -s reopen` in the proxy container). mtail reads the log through a second hard link
(MTAIL_VIEW_DIR) that is moved to the new file only after nginx has reopened: mtail reads
the old file to its end once it sees a new inode at its path, so nothing nginx wrote to the
old file in between is lost (tests/serving/test_tenant_usage_live.py rotates under load).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

from serving.monitoring.services import LOOPBACK

# The usage log as serving.tenants defines it (TENANT-CONTRACT: USAGE_LOG_HOST_DIR, the host
# directory bind-mounted on the container's /var/log/nginx-usage, file usage.log). A stand-in
# until serving/tenants.py lands; tests/serving/test_tenant_usage.py holds the two equal.
USAGE_LOG_HOST_DIR = "/var/log/vllm-deploy/proxy-usage"
USAGE_LOG_NAME = "usage.log"

PROGRAM_FILE = Path(__file__).resolve().parent / "tenant_usage.mtail"
# Where the host keeps it: mtail loads every *.mtail in --progs.
PROGRAM_DIR = "/etc/vllm-deploy/mtail"
# A second name of the live log, in the same directory (a hard link must stay on one file
# system), that follows the new file only once nginx has reopened.
MTAIL_VIEW_DIR = f"{USAGE_LOG_HOST_DIR}/mtail-view"

# mtail's own default port (its --port flag, "3903"); none of serving.monitoring.services'
# containers, vLLM (8000) or Ray use it.
MTAIL_PORT = 3903
USAGE_JOB = "tenant_usage"
SYSTEMD_SERVICE = "vllm-deploy-tenant-usage.service"

# Rotation: past this size the log is renamed (checked every ROTATE_EVERY_MINUTES by a systemd
# timer); KEEP rotated files stay, all but the newest gzip'd. Worst case on disk: the live file
# at USAGE_LOG_MAX_MIB plus what nginx writes between two checks, one uncompressed and KEEP - 1
# compressed copies (JSON lines compress about tenfold).
USAGE_LOG_MAX_MIB = 100
USAGE_LOG_KEEP = 5
ROTATE_EVERY_MINUTES = 10


@dataclass(frozen=True)
class UsageMetric:
    """One counter family the mtail program exports, as a scrape stores it."""

    name: str
    labels: tuple[str, ...]
    meaning: str


USAGE_METRICS = (
    UsageMetric("vllm_deploy_tenant_requests_total", ("tenant", "status_class"),
                "Requests the proxy answered for this tenant, by status class (2xx ... 5xx)."),
    UsageMetric("vllm_deploy_tenant_rate_limited_requests_total", ("tenant",),
                "Of those, answered 429: over the tenant's or a per-address or capacity limit."),
    UsageMetric("vllm_deploy_tenant_prompt_tokens_total", ("tenant",),
                "Prompt tokens, from the `usage` vLLM sent (responses without one add nothing)."),
    UsageMetric("vllm_deploy_tenant_completion_tokens_total", ("tenant",),
                "Completion (generated) tokens, from the same `usage`."),
    UsageMetric("vllm_deploy_tenant_request_bytes_total", ("tenant",),
                "Bytes of the requests, headers included (nginx's $request_length)."),
    UsageMetric("vllm_deploy_tenant_response_bytes_total", ("tenant",),
                "Bytes sent to the client, headers included (nginx's $bytes_sent)."),
    UsageMetric("vllm_deploy_tenant_request_seconds_total", ("tenant",),
                "Seconds from the request's first byte to the response's last (nginx's "
                "$request_time), summed: divided by requests, the mean time per request."),
    UsageMetric("vllm_deploy_unauthenticated_requests_total", ("status_class",),
                "Requests without a valid key (no tenant): nginx's 401s, by status class."),
    UsageMetric("vllm_deploy_usage_log_unparsed_lines_total", (),
                "Lines that are not a usage log entry: the log format and the program disagree."),
)

_DECLARATION = re.compile(r"^counter\s+(\w+)(?:\s+by\s+([\w,\s]+?))?\s*$", re.M)


def declared_counters(program: str) -> dict[str, tuple[str, ...]]:
    """`counter NAME by a, b` declarations of an mtail program: name -> labels."""
    return {
        match.group(1): tuple(label.strip() for label in (match.group(2) or "").split(",") if label.strip())
        for match in _DECLARATION.finditer(program)
    }


def program_text() -> str:
    return PROGRAM_FILE.read_text()


def program_base64() -> str:
    """The program as the host script takes it (VLLM_DEPLOY_MTAIL_PROGRAM_B64): one line."""
    return base64.b64encode(PROGRAM_FILE.read_bytes()).decode()


def scrape_address() -> str:
    return f"{LOOPBACK}:{MTAIL_PORT}"


def install_env(*, metrics: bool, nginx_container: str) -> dict[str, str]:
    """The environment of install_tenant_usage.sh. `metrics`: mtail too (monitoring on);
    without it only the rotation is installed (the log grows in tenant mode either way)."""
    env = {
        "VLLM_DEPLOY_USAGE_LOG_DIR": USAGE_LOG_HOST_DIR,
        "VLLM_DEPLOY_USAGE_LOG_NAME": USAGE_LOG_NAME,
        "VLLM_DEPLOY_USAGE_LOG_MAX_MIB": str(USAGE_LOG_MAX_MIB),
        "VLLM_DEPLOY_USAGE_LOG_KEEP": str(USAGE_LOG_KEEP),
        "VLLM_DEPLOY_USAGE_ROTATE_MINUTES": str(ROTATE_EVERY_MINUTES),
        "VLLM_DEPLOY_NGINX_CONTAINER": nginx_container,
        "VLLM_DEPLOY_USAGE_METRICS": "1" if metrics else "0",
    }
    if metrics:
        env["VLLM_DEPLOY_MTAIL_PROGRAM_B64"] = program_base64()
        env["VLLM_DEPLOY_MTAIL_ADDRESS"] = LOOPBACK
        env["VLLM_DEPLOY_MTAIL_PORT"] = str(MTAIL_PORT)
    return env
