"""The monitoring containers: pinned images, and the loopback port each one listens on.

Every one of them shares the host's network (the exporters must see the host, Prometheus must
reach vLLM's 127.0.0.1:8000) and binds 127.0.0.1 by its own listen flag, so nothing here is
reachable from outside the host; Grafana is served to the outside only through nginx at
/grafana/ on 443.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Service:
    """One monitoring container."""

    container: str  # Docker container name on the host
    image: str  # pinned tag
    port: int  # TCP port on 127.0.0.1
    job: Optional[str]  # Prometheus scrape job, None when it is not scraped
    image_source: str  # where the tag was seen

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"


PROMETHEUS = Service(
    container="vllm-prometheus",
    image="prom/prometheus:v3.14.0",
    port=9090,
    job="prometheus",
    image_source="prometheus/prometheus release tag v3.14.0 (2026-08-17); README.md runs the "
    "prom/prometheus image, whose Docker Hub tags carry the v prefix",
)
GRAFANA = Service(
    container="vllm-grafana",
    image="grafana/grafana:13.2.0",
    port=3000,
    job=None,
    image_source="Grafana 13.2.0 (CHANGELOG.md entry 13.2.0, 2026-08-18); the Docker Hub tag "
    "grafana/grafana:13.2.0 as Renovate updated it in AndreiGavriliu/homelab#7187",
)
DCGM_EXPORTER = Service(
    container="vllm-dcgm-exporter",
    image="nvcr.io/nvidia/k8s/dcgm-exporter:4.5.3-4.8.2-distroless",
    port=9400,
    job="dcgm",
    image_source="NVIDIA/dcgm-exporter tag 4.5.3-4.8.2: README.md quickstart and "
    "deployment/values.yaml image.tag",
)
NODE_EXPORTER = Service(
    container="vllm-node-exporter",
    image="quay.io/prometheus/node-exporter:v1.12.1",
    port=9100,
    job="node",
    image_source="prometheus/node_exporter release tag v1.12.1 (2026-07-14); README.md runs "
    "quay.io/prometheus/node-exporter",
)

SERVICES = (PROMETHEUS, GRAFANA, DCGM_EXPORTER, NODE_EXPORTER)

# vLLM is scraped under this job name at its API port (/metrics is not behind the API key).
VLLM_JOB = "vllm"

# Where the collectors file (serving/monitoring/metrics/dcgm-exporter-*.csv) is uploaded.
DCGM_COUNTERS_PATH = "/etc/dcgm-exporter/vllm-deploy-counters.csv"
# The host's root, bind-mounted read-only for the node exporter (its README's Docker recipe).
NODE_ROOTFS = "/host"


def dcgm_exporter_args() -> list[str]:
    """dcgm-exporter flags (pkg/cmd/app.go at 4.5.3-4.8.2): -f the collectors file, -a the
    listen address (default ":9400", every interface)."""
    return ["-f", DCGM_COUNTERS_PATH, "-a", DCGM_EXPORTER.address]


def node_exporter_args() -> list[str]:
    """node_exporter flags: read the host through NODE_ROOTFS, listen on loopback only."""
    return [f"--path.rootfs={NODE_ROOTFS}", f"--web.listen-address={NODE_EXPORTER.address}"]
