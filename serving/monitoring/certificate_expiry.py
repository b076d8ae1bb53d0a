"""Warnings before the stack's own server certificate expires (tls: self-signed).

The certificate (components/certificates.py) is valid for a year and renewed only by a
`pulumi up` within its early-renewal window (the last 30 days); nothing renews it on its own. So:

- on the host, Prometheus alerts from the start of that window (warning: a `pulumi up` now renews
  it) and again a week before the end (critical). The rules carry the certificate's notAfter as
  a constant, rendered at deploy; a renewal is a new certificate and re-renders them;
- a fleet imports the certificate into ACM, which publishes ``DaysToExpiry`` for it (namespace
  ``AWS/CertificateManager``, dimension ``CertificateArn``; ACM's "Supported CloudWatch metrics"),
  and a CloudWatch alarm watches that (components/load_balancer.py);
- a preview near expiry warns (components/certificates.py).

Times: notAfter as the tls provider's ``validity_end_time`` (RFC 3339) or Unix seconds; windows in
days.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from serving.monitoring.prometheus import AlertRule

RENEWAL_WINDOW_DAYS = 30  # components.certificates.SERVER_CERT_EARLY_RENEWAL_HOURS / 24
CRITICAL_DAYS = 7
DAY_S = 86400


def unix_seconds(rfc3339: str) -> int:
    """``2027-12-07T13:00:00Z`` (the tls provider's validity_end_time) -> Unix seconds.

    Raises ValueError for a string that is not RFC 3339."""
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp())


# Prometheus's alert templating (Go templates): the time left, or "expired".
SUMMARY = ("the endpoint's TLS certificate {{ if lt $value 0.0 }}has expired{{ else }}expires in "
           "{{ $value | humanizeDuration }}{{ end }}")


def expiry_alert_rules(not_after_unix: int) -> tuple[AlertRule, AlertRule]:
    """Prometheus rules for a server certificate valid until `not_after_unix`. Each expr is the
    seconds left, present while fewer than its window's remain (``vector`` makes it a series)."""
    left = f"vector({not_after_unix}) - time()"
    return (
        AlertRule(
            "ServerCertificateExpiresSoon",
            f"{left} < {RENEWAL_WINDOW_DAYS * DAY_S}",
            "0s",
            "warning",
            SUMMARY,
            "The stack's own server certificate is renewed only by `pulumi up` in its last "
            f"{RENEWAL_WINDOW_DAYS} days: run `pulumi up` on this stack now (clients that trust the "
            "stack's CA, the caCertificate output, keep working).",
        ),
        AlertRule(
            "ServerCertificateExpiresVerySoon",
            f"{left} < {CRITICAL_DAYS * DAY_S}",
            "0s",
            "critical",
            SUMMARY,
            "After it expires every client refuses the endpoint. Run `pulumi up` on this stack now.",
        ),
    )


# The fleet's CloudWatch alarm on the certificate imported into ACM: ACM publishes DaysToExpiry
# once a day for each certificate (AWS docs, ACM "Supported CloudWatch metrics").
ACM_NAMESPACE = "AWS/CertificateManager"
ACM_METRIC = "DaysToExpiry"
ACM_DIMENSION = "CertificateArn"
ACM_PERIOD_S = DAY_S
ACM_ALARM_DESCRIPTION = (
    f"The stack's own server certificate (imported into ACM, served by the load balancer) has fewer "
    f"than {RENEWAL_WINDOW_DAYS} days left; it is renewed only by `pulumi up` on this stack: run it now."
)


def days_left(not_after_rfc3339: str, now: Optional[datetime] = None) -> float:
    """Days from `now` (default: this moment, UTC) to notAfter; negative once expired."""
    now = now or datetime.now(timezone.utc)
    return (unix_seconds(not_after_rfc3339) - now.timestamp()) / DAY_S


def preview_warning(not_after_rfc3339: str, now: Optional[datetime] = None) -> Optional[str]:
    """The warning a preview shows when the certificate is in its renewal window, else None."""
    left = days_left(not_after_rfc3339, now)
    if left >= RENEWAL_WINDOW_DAYS:
        return None
    if left <= 0:
        return (f"the endpoint's TLS certificate expired on {not_after_rfc3339}: clients refuse it until "
                "`pulumi up` issues a new one (this update does)")
    return (f"the endpoint's TLS certificate expires on {not_after_rfc3339} (in {left:.0f} days): "
            "`pulumi up` renews it (this update does when it runs)")
