"""Grafana behind nginx at https://<address>/grafana/: its settings and provisioned files.

Settings are Grafana's GF_<SECTION>_<KEY> environment variables (Grafana docs, "Configure
Grafana", override with environment variables). The admin password is not among them: it is a
secret and joins the container's environment in components/monitoring.py only.
"""

from __future__ import annotations

import json

import yaml

from serving.monitoring.dashboards import DATASOURCE_UID, dashboard_files, dashboard_json
from serving.monitoring.prometheus import SCRAPE_INTERVAL_S
from serving.monitoring.services import GRAFANA, LOOPBACK, PROMETHEUS
from serving.monitoring.usage_dashboard import USAGE

SUB_PATH = "/grafana/"
ADMIN_USER = "admin"
# The image reads provisioning from here (GF_PATHS_PROVISIONING's default in the image).
PROVISIONING_DIR = "/etc/grafana/provisioning"
DASHBOARDS_DIR = "/etc/grafana/dashboards/vllm-deploy"


def root_url(address: str) -> str:
    """The URL users open: `address` is the stack's domain or Elastic IP."""
    return f"https://{address}{SUB_PATH}"


def environment(url: str) -> list[str]:
    """Non-secret settings as `NAME=value`. `url` is root_url(): Grafana builds its links and
    redirects from it, and Grafana Live accepts WebSocket connections only from its origin."""
    return [
        f"GF_SERVER_HTTP_ADDR={LOOPBACK}",
        f"GF_SERVER_HTTP_PORT={GRAFANA.port}",
        f"GF_SERVER_ROOT_URL={url}",
        # nginx passes /grafana/... through unchanged; Grafana strips the prefix itself.
        "GF_SERVER_SERVE_FROM_SUB_PATH=true",
        f"GF_SECURITY_ADMIN_USER={ADMIN_USER}",
        "GF_SECURITY_COOKIE_SECURE=true",  # only ever served over HTTPS
        "GF_SECURITY_DISABLE_GRAVATAR=true",  # no requests to outside services from the browser
        "GF_AUTH_ANONYMOUS_ENABLED=false",
        "GF_USERS_ALLOW_SIGN_UP=false",
        "GF_ANALYTICS_REPORTING_ENABLED=false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES=false",
        "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES=false",
        "GF_NEWS_NEWS_FEED_ENABLED=false",
        f"GF_PATHS_PROVISIONING={PROVISIONING_DIR}",
    ]


def datasource_yaml() -> str:
    """The Prometheus data source, on the host's loopback; `timeInterval` = the scrape
    interval, so $__rate_interval spans at least four scrapes."""
    source = {
        "name": "Prometheus",
        "type": "prometheus",
        "uid": DATASOURCE_UID,
        "access": "proxy",
        "url": f"http://{PROMETHEUS.address}",
        "isDefault": True,
        "editable": False,
        "jsonData": {"timeInterval": f"{SCRAPE_INTERVAL_S}s", "httpMethod": "POST"},
    }
    return yaml.safe_dump({"apiVersion": 1, "datasources": [source]}, sort_keys=False)


def dashboard_provider_yaml() -> str:
    """Grafana loads the dashboards from DASHBOARDS_DIR into a `vllm-deploy` folder; edits in
    the UI are not saved over them (save a copy instead)."""
    provider = {
        "name": "vllm-deploy",
        "folder": "vllm-deploy",
        "type": "file",
        "disableDeletion": True,
        "allowUiUpdates": False,
        "options": {"path": DASHBOARDS_DIR},
    }
    return yaml.safe_dump({"apiVersion": 1, "providers": [provider]}, sort_keys=False)


def provisioned_files(*, tenant_usage: bool = False) -> dict[str, str]:
    """Container path -> content of every file Grafana needs at start. `tenant_usage` (apiKeys
    set): the "Usage by tenant" dashboard too (serving.monitoring.usage_dashboard)."""
    files = {
        f"{PROVISIONING_DIR}/datasources/prometheus.yaml": datasource_yaml(),
        f"{PROVISIONING_DIR}/dashboards/vllm-deploy.yaml": dashboard_provider_yaml(),
    }
    files.update({f"{DASHBOARDS_DIR}/{name}": text for name, text in dashboard_files().items()})
    if tenant_usage:
        files[f"{DASHBOARDS_DIR}/{USAGE.uid}.json"] = json.dumps(dashboard_json(USAGE), indent=2, sort_keys=True) + "\n"
    return files
