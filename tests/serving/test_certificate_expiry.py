"""The certificate-expiry warnings (issue 27): the Prometheus rules evaluated by the real promtool
(`promtool test rules`, whose clock starts at Unix time 0), and the preview's warning."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta, timezone

import yaml

from serving.monitoring import prometheus
from serving.monitoring.certificate_expiry import (
    DAY_S,
    expiry_alert_rules,
    preview_warning,
    unix_seconds,
)
from tests.serving.test_monitoring import promtool

NOT_AFTER_DAY = 40  # a certificate valid until day 40 of promtool's clock


def _run_promtool_test(tmp_path, alerts_at: dict[str, dict[str, list[str]]]) -> subprocess.CompletedProcess:
    """Each eval time ("11d") -> alert -> the severities expected to fire, with the annotations
    Prometheus renders (the summary's time left comes from the rule's own template)."""
    rules = tmp_path / "rules.yml"
    generated = expiry_alert_rules(NOT_AFTER_DAY * DAY_S)
    rules.write_text(prometheus.rules_yaml(generated))
    descriptions = {rule.name: rule.description for rule in generated}
    cases = []
    for at, by_alert in alerts_at.items():
        left = NOT_AFTER_DAY - int(at.removesuffix("d"))
        summary = (f"the endpoint's TLS certificate expires in {left}d 0h 0m 0s" if left > 0
                   else "the endpoint's TLS certificate has expired")
        for alert, severities in by_alert.items():
            cases.append({"eval_time": at, "alertname": alert, "exp_alerts": [
                {"exp_labels": {"severity": s},
                 "exp_annotations": {"summary": summary, "description": descriptions[alert]}}
                for s in severities]})
    spec = {"rule_files": [str(rules)], "evaluation_interval": "1d",
            "tests": [{"interval": "1d", "input_series": [], "alert_rule_test": cases}]}
    path = tmp_path / "test.yml"
    path.write_text(yaml.safe_dump(spec))
    return subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True)


def test_the_rules_fire_from_the_renewal_window_and_turn_critical_a_week_before(tmp_path):
    soon, very_soon = "ServerCertificateExpiresSoon", "ServerCertificateExpiresVerySoon"
    checked = _run_promtool_test(tmp_path, {
        "9d": {soon: [], very_soon: []},  # 31 days left: quiet
        "11d": {soon: ["warning"], very_soon: []},  # 29 days left: `pulumi up` renews it now
        "34d": {soon: ["warning"], very_soon: ["critical"]},  # 6 days left
        "41d": {soon: ["warning"], very_soon: ["critical"]},  # expired: still firing
    })
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_wrong_expectation_fails_promtool(tmp_path):
    """The harness can fail: the warning does not fire 31 days before expiry."""
    checked = _run_promtool_test(tmp_path, {"9d": {"ServerCertificateExpiresSoon": ["warning"]}})
    assert checked.returncode != 0


def test_the_rendered_rules_file_with_the_expiry_rules_passes_promtool(tmp_path):
    rules = tmp_path / "rules.yml"
    all_rules = prometheus.alert_rules(requests_waiting=4) + expiry_alert_rules(unix_seconds("2027-12-07T13:00:00Z"))
    rules.write_text(prometheus.rules_yaml(all_rules))
    checked = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert checked.returncode == 0 and "10 rules found" in checked.stdout, checked.stdout + checked.stderr


def test_the_preview_warns_only_inside_the_renewal_window():
    now = datetime(2027, 11, 1, tzinfo=timezone.utc)
    later = (now + timedelta(days=45)).strftime("%Y-%m-%dT%H:%M:%SZ")
    soon = (now + timedelta(days=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    gone = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert preview_warning(later, now) is None
    assert "in 12 days" in preview_warning(soon, now) and "`pulumi up` renews it" in preview_warning(soon, now)
    assert "expired" in preview_warning(gone, now)


# --- in the program, under mocks --------------------------------------------------------------

SMALL = {"model": "Qwen/Qwen2.5-1.5B-Instruct", "maxModelLen": 8192}


def _rules_uploaded(run) -> dict:
    from tests.harness import reveal

    container = run.named("vllm-monitoring-prometheus")
    [rules] = [u["content"] for u in reveal(container.inputs["uploads"]) if u["file"] == prometheus.RULES_PATH]
    return {rule["alert"]: rule for rule in yaml.safe_load(rules)["groups"][0]["rules"]}


def test_the_hosts_prometheus_counts_down_to_the_stacks_certificate(program):
    from tests.harness import MOCK_CERT_NOT_AFTER

    run = program(SMALL)
    rules = _rules_uploaded(run)
    assert not [line for line in run.log if "TLS certificate" in line.message], "far from expiry: no warning"
    expected = unix_seconds(MOCK_CERT_NOT_AFTER)
    assert rules["ServerCertificateExpiresSoon"]["expr"] == f"vector({expected}) - time() < {30 * DAY_S}"
    assert rules["ServerCertificateExpiresVerySoon"]["labels"] == {"severity": "critical"}


def test_with_letsencrypt_certbot_renews_and_there_is_no_expiry_rule(program):
    run = program({**SMALL, "tls": "letsencrypt", "domain": "llm.example.com", "letsencryptEmail": "ops@example.com"})
    assert "ServerCertificateExpiresSoon" not in _rules_uploaded(run)


def test_a_preview_near_expiry_warns(program, monkeypatch):
    from tests import harness

    soon = (datetime.now(timezone.utc) + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    monkeypatch.setattr(harness, "MOCK_CERT_NOT_AFTER", soon)
    run = program(SMALL)
    warnings = [line.message for line in run.log if line.severity == "warning" and "TLS certificate" in line.message]
    assert warnings and f"expires on {soon}" in warnings[0]


def test_a_fleet_alarms_on_acms_days_to_expiry_of_the_imported_certificate(program):
    from serving.monitoring.certificate_expiry import ACM_METRIC, ACM_NAMESPACE
    from tests.components.test_fleet_program import prod_fleet

    run = prod_fleet(program)
    [alarm] = [a for a in run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm") if a.plain["namespace"] == ACM_NAMESPACE]
    imported = run.one("aws:acm/certificate:Certificate")
    plain = alarm.plain
    assert plain["metricName"] == ACM_METRIC and plain["comparisonOperator"] == "LessThanThreshold"
    assert plain["threshold"] == 30 and plain["period"] == DAY_S
    assert set(plain["dimensions"]) == {"CertificateArn"} and alarm.depends_on(imported)
    assert "pulumi up" in plain["alarmDescription"]
