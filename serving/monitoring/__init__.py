"""What the monitoring containers run with (monitoring: true), pure: pinned images and loopback
ports (services), Prometheus's flags, scrape configuration and alerting rules (prometheus), the
Grafana dashboards (dashboards) and provisioning (grafana), and the metric names each exporter
really serves, kept as data with their sources (catalog, metrics/)."""
