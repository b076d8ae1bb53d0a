"""What AWS does with a stopped spot host, read from its spot request (used by tools/wake).

The program's spot hosts come from a persistent spot request whose interruption behaviour is
"stop" (components/gpu_host.py). AWS documents two kinds of stopped spot instance:

- **Interrupted** (EC2 stopped it): "Only Amazon EC2 can restart an interrupted stopped Spot
  Instance", and for a persistent request it "restarts the stopped instance when capacity is
  available in the same Availability Zone and for the same instance type"
  (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/interruption-behavior.html). The request's
  status code says why: ``instance-stopped-by-price``, ``instance-stopped-no-capacity``,
  ``instance-stopped-capacity-oversubscribed``; ``marked-for-stop`` while the two-minute notice
  runs (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-request-status.html). A
  StartInstances call is refused. The request stays open until its ``ValidUntil`` (7 days after
  it was made unless set): after that AWS no longer restarts it.
- **Stopped by you** (idle stop's power-off, the console, tools): status
  ``instance-stopped-by-user``, request state ``disabled``; "if the request is persistent and you
  stop your Spot Instance, the request only opens after you start your Spot Instance" (same
  page): StartInstances works. Right after the stop, while the request is still moving to
  ``disabled``, StartInstances answers ``IncorrectSpotRequestState`` for a short while; wake
  retries through that window.

Shapes: the dicts are EC2's DescribeInstances ``Instance`` and DescribeSpotInstanceRequests
``SpotInstanceRequest`` as boto3 returns them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

# Status codes of a spot request whose instance EC2 stopped (an interruption).
INTERRUPTED = {
    "instance-stopped-by-price": "the spot price rose above the request's maximum price",
    "instance-stopped-no-capacity": "EC2 needed the capacity back",
    "instance-stopped-capacity-oversubscribed": "EC2 needed the capacity back (oversubscribed)",
}
MARKED_FOR_STOP = "marked-for-stop"
STOPPED_BY_USER = "instance-stopped-by-user"
# Request states in which AWS will never restart the instance again.
ENDED = ("closed", "cancelled", "failed")
# How long StartInstances may answer IncorrectSpotRequestState right after a stop (seconds);
# the request moves to `disabled` within about a minute in practice: twice that, then advice.
INCORRECT_STATE_WINDOW_S = 120.0


@dataclass(frozen=True)
class SpotVerdict:
    """Whether wake may start the instance, and what to tell the user."""

    can_start: bool
    message: str


def request_id(instance: dict[str, Any]) -> Optional[str]:
    """The spot request behind a DescribeInstances ``Instance``; None for an on-demand one."""
    if instance.get("InstanceLifecycle") != "spot":
        return None
    return instance.get("SpotInstanceRequestId")


def way_out(instance_id: str) -> str:
    """The ways out that the program accepts when AWS will not start the host (docs/operations.md)."""
    return (
        "to replace it now instead (a new host in the model volume's zone; the weights stay): "
        "`pulumi config set replaceStoppedHost true`, then `pulumi up --replace <the instance's URN>` "
        "(the refusal of a plain `pulumi up` prints it), or `pulumi config set spot false` and the same; "
        f"or terminate {instance_id} (`aws ec2 terminate-instances --instance-ids {instance_id}`) and run `pulumi up`"
    )


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value) if value else "its expiry"


def verdict(instance: dict[str, Any], request: dict[str, Any]) -> SpotVerdict:
    """What AWS will do with a stopped (or stopping) spot instance and whether StartInstances may
    work, from its ``Instance`` and ``SpotInstanceRequest``."""
    instance_id = instance.get("InstanceId", "the instance")
    where = f"{instance.get('InstanceType', 'its type')} in {instance.get('Placement', {}).get('AvailabilityZone', 'its zone')}"
    state = request.get("State", "")
    status = request.get("Status", {}) or {}
    code, text = status.get("Code", ""), status.get("Message", "")
    since = f" since {_when(status.get('UpdateTime'))}" if status.get("UpdateTime") else ""
    until = _when(request.get("ValidUntil"))
    if state in ENDED:
        return SpotVerdict(False, (
            f"{instance_id}'s spot request {request.get('SpotInstanceRequestId', '')} is {state} ({code}: {text}): "
            f"AWS will not restart it and refuses to start it; {way_out(instance_id)}"))
    if code == MARKED_FOR_STOP:
        return SpotVerdict(False, (
            f"AWS is interrupting {instance_id} now ({code}: the two-minute notice runs): it stops, then AWS "
            f"restarts it by itself when spot capacity for {where} returns, while the request is open "
            f"(until {until}). Run tools/wake again later to wait for the endpoint; {way_out(instance_id)}"))
    if code in INTERRUPTED:
        return SpotVerdict(False, (
            f"AWS stopped {instance_id}{since}: a spot interruption ({code}: {INTERRUPTED[code]}). Only AWS can "
            f"restart an interrupted spot instance: it does so by itself when spot capacity for {where} returns, "
            f"as long as the request stays open (until {until}); StartInstances is refused meanwhile. Run "
            f"tools/wake again later to wait for the endpoint; {way_out(instance_id)}"))
    if state == "disabled" or code == STOPPED_BY_USER:
        return SpotVerdict(True, f"{instance_id} was stopped by a user or from the host ({code or state}); starting it")
    # open/active with another code (e.g. still being fulfilled): let StartInstances answer.
    return SpotVerdict(True, f"{instance_id}'s spot request is {state or 'unknown'} ({code or 'no status'}); trying to start it")


def incorrect_state_advice(instance_id: str, request: Optional[dict[str, Any]], waited_s: float) -> str:
    """The message once IncorrectSpotRequestState outlasted the window after a stop."""
    status = (request or {}).get("Status", {}) or {}
    seen = f"; the request is {(request or {}).get('State', 'unknown')} ({status.get('Code', 'no status')})" if request else ""
    return (
        f"AWS still refuses to start {instance_id} after {waited_s:.0f}s (IncorrectSpotRequestState{seen}). Right "
        "after a stop the spot request needs a moment to become `disabled`; longer than that, it is no longer "
        f"yours to start: {way_out(instance_id)}"
    )
