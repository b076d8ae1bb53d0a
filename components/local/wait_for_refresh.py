"""Runs where `pulumi up` runs, after a fleet's Auto Scaling group was updated: waits for the
group's newest instance refresh to end and reports it, so `pulumi up` succeeds only when the
replicas serve the new launch template (fleet-pitfalls P14: the provider starts the refresh and
does not wait for it). No refresh (the group's first deploy): returns at once.

Exit 0 when the refresh succeeded (or there is none), 1 when it failed, was cancelled or rolled
back (the reason printed), 2 when it still runs at the timeout (it goes on in AWS).
AWS credentials: the default chain of where `pulumi up` runs (as tools/wake).

Environment: GROUP_NAME, AWS_REGION, TIMEOUT_SECONDS (7200), POLL_SECONDS (30).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Optional

RUNNING = {"Pending", "InProgress", "Cancelling", "RollbackInProgress", "Baking"}


def newest_refresh(client: Any, group: str) -> Optional[dict[str, Any]]:
    refreshes = client.describe_instance_refreshes(AutoScalingGroupName=group, MaxRecords=1)["InstanceRefreshes"]
    return refreshes[0] if refreshes else None


def wait(client: Any, group: str, timeout_s: float, poll_s: float,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    deadline = clock() + timeout_s
    refresh = newest_refresh(client, group)
    if refresh is None:
        print(f"{group}: no instance refresh", flush=True)
        return 0
    while refresh["Status"] in RUNNING:
        print(f"{group}: instance refresh {refresh['InstanceRefreshId']} {refresh['Status']}, "
              f"{refresh.get('PercentageComplete', 0)}% done", flush=True)
        if clock() >= deadline:
            print(f"{group}: the refresh still runs after {int(timeout_s)} s and goes on in AWS; check it with "
                  f"`aws autoscaling describe-instance-refreshes --auto-scaling-group-name {group}`", flush=True)
            return 2
        sleep(poll_s)
        refresh = newest_refresh(client, group) or refresh
    status, reason = refresh["Status"], refresh.get("StatusReason", "")
    print(f"{group}: instance refresh {refresh['InstanceRefreshId']} {status}. {reason}".rstrip(), flush=True)
    return 0 if status == "Successful" else 1


def main() -> int:
    try:
        import boto3
    except ImportError:
        print("wait_for_refresh: boto3 is not installed for this Python "
              f"({sys.executable}); run `pulumi up` from the project with its .venv "
              "(python3 -m venv .venv && .venv/bin/pip install --require-hashes -r requirements.lock)",
              file=sys.stderr, flush=True)
        return 1

    client = boto3.client("autoscaling", region_name=os.environ["AWS_REGION"])
    return wait(client, os.environ["GROUP_NAME"], float(os.environ.get("TIMEOUT_SECONDS", "7200")),
                float(os.environ.get("POLL_SECONDS", "30")))


if __name__ == "__main__":
    sys.exit(main())
