"""Starts a stack's stopped host and waits until its endpoint answers (`tools/wake [STACK]`).

The host stops itself after `idleStopMinutes` without requests (or AWS stops a spot instance);
`pulumi up` then refuses to run until it is started again. This reads the stack's outputs
(`pulumi stack output --json`: instanceId, region, endpoint, caCertificate), starts the
instance with EC2's StartInstances (boto3, with your usual AWS credentials: AWS_PROFILE,
`aws configure`, SSO), waits until it runs, then until `https://<endpoint>/health` answers 200
through the proxy, which happens once vLLM has loaded the model from the model volume.

    tools/wake            the selected stack
    tools/wake prod       another stack
    tools/wake dev --no-wait --timeout 45
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Optional

import boto3
import wake_spot
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

EXIT_OK, EXIT_FAILED = 0, 1
GONE = ("shutting-down", "terminated")


class WakeError(Exception):
    """What went wrong and what to do, for the user."""


def say(message: str) -> None:
    print(f"[wake] {message}", file=sys.stderr, flush=True)


def stack_outputs(stack: Optional[str]) -> dict[str, Any]:
    """The stack's outputs, as `pulumi stack output --json` prints them (secrets stay hidden)."""
    argv = ["pulumi", "stack", "output", "--json", *(["--stack", stack] if stack else [])]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise WakeError("the Pulumi CLI is not on PATH; install it (README, Prerequisites)") from None
    if done.returncode != 0:
        raise WakeError(f"`{' '.join(argv)}` failed:\n{done.stderr.strip()}")
    outputs = json.loads(done.stdout or "{}")
    if not outputs.get("instanceId"):
        raise WakeError(f"stack {stack or '(selected)'} has no instanceId output: is it deployed? (pulumi up)")
    return outputs


def node_instance_ids(outputs: dict[str, Any]) -> list[str]:
    """Every node's instance (the `nodes` output: a cluster's workers too, which a spot
    interruption may have stopped), head first; `instanceId` alone for a stack deployed before
    that output existed."""
    ids = [node["instanceId"] for node in outputs.get("nodes") or [] if node.get("instanceId")]
    return ids or [outputs["instanceId"]]


def describe(ec2: Any, instance_id: str) -> dict[str, Any]:
    """EC2's DescribeInstances ``Instance`` for one id."""
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservations[0]["Instances"][0]


def instance_state(ec2: Any, instance_id: str) -> str:
    return describe(ec2, instance_id)["State"]["Name"]


def spot_request(ec2: Any, request_id: str) -> dict[str, Any]:
    """EC2's DescribeSpotInstanceRequests ``SpotInstanceRequest`` for one id."""
    return ec2.describe_spot_instance_requests(SpotInstanceRequestIds=[request_id])["SpotInstanceRequests"][0]


def check_spot(ec2: Any, instance: dict[str, Any]) -> Optional[str]:
    """For a stopped spot instance (its DescribeInstances ``Instance``): the request id once AWS
    allows starting it; raises WakeError saying what AWS will do and when when it does not
    (wake_spot.verdict). None for an on-demand instance (no call made)."""
    request_id = wake_spot.request_id(instance)
    if request_id is None:
        return None
    verdict = wake_spot.verdict(instance, spot_request(ec2, request_id))
    if not verdict.can_start:
        raise WakeError(verdict.message)
    say(verdict.message)
    return request_id


def start_instance(ec2: Any, instance_id: str, request_id: Optional[str], *, poll: float, window: float) -> None:
    """StartInstances; for a spot instance, retried through the brief IncorrectSpotRequestState
    that follows a stop (wake_spot), for at most `window` seconds."""
    deadline = time.monotonic() + window
    started = time.monotonic()
    while True:
        try:
            ec2.start_instances(InstanceIds=[instance_id])
            return
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code != "IncorrectSpotRequestState" or request_id is None:
                raise WakeError(_start_advice(instance_id, exc)) from None
            if time.monotonic() >= deadline:
                raise WakeError(wake_spot.incorrect_state_advice(
                    instance_id, spot_request(ec2, request_id), time.monotonic() - started)) from None
            say(f"{instance_id}: the spot request is not ready to start yet (IncorrectSpotRequestState, right "
                "after a stop); trying again")
            time.sleep(poll)


def wait_for_state(ec2: Any, instance_id: str, wanted: str, *, timeout: float, poll: float) -> None:
    deadline = time.monotonic() + timeout
    while (state := instance_state(ec2, instance_id)) != wanted:
        if state in GONE:
            raise WakeError(f"{instance_id} is {state}: the host is gone; `pulumi up` creates a new one "
                            "(the model volume keeps the weights)")
        if time.monotonic() > deadline:
            raise WakeError(f"{instance_id} is still {state} after {timeout:.0f}s; see the EC2 console")
        time.sleep(poll)


def start_host(ec2: Any, instance_id: str, *, poll: float, timeout: float = 900,
               spot_window: float = wake_spot.INCORRECT_STATE_WINDOW_S) -> bool:
    """Starts the instance unless it runs; True when it was started. Waits until it runs. A spot
    instance that AWS interrupted is left to AWS, saying what it will do (WakeError)."""
    instance = describe(ec2, instance_id)
    state = instance["State"]["Name"]
    if state in GONE:
        raise WakeError(f"{instance_id} is {state}: the host is gone; `pulumi up` creates a new one "
                        "(the model volume keeps the weights)")
    if state == "running":
        say(f"{instance_id} is already running")
        return False
    if state == "stopping":
        say(f"{instance_id} is stopping; waiting until it has stopped")
        wait_for_state(ec2, instance_id, "stopped", timeout=timeout, poll=poll)
        state = "stopped"
    if state == "stopped":
        request_id = check_spot(ec2, instance)
        say(f"starting {instance_id}")
        start_instance(ec2, instance_id, request_id, poll=poll, window=spot_window)
    wait_for_state(ec2, instance_id, "running", timeout=timeout, poll=poll)
    say(f"{instance_id} is running")
    return True


def _start_advice(instance_id: str, exc: ClientError) -> str:
    code = exc.response.get("Error", {}).get("Code", "")
    if code in ("InsufficientInstanceCapacity", "InsufficientCapacity"):
        return (f"AWS has no capacity to start {instance_id} in its availability zone right now ({code}). "
                "Try again in a few minutes; or pick another instanceType that the zone offers and run "
                "`pulumi up` (the host is replaced in the model volume's zone, the weights stay).")
    if code == "IncorrectSpotRequestState":
        return (f"the spot request behind {instance_id} does not allow starting it ({code}); "
                + wake_spot.way_out(instance_id))
    return f"starting {instance_id} failed: {exc}"


def health_url(endpoint: str) -> str:
    """`https://<host>/v1` -> `https://<host>/health` (open through the proxy)."""
    base = endpoint.rstrip("/")
    return (base[: -len("/v1")] if base.endswith("/v1") else base) + "/health"


def wait_until_ready(url: str, ca_pem: Optional[str], *, timeout: float, poll: float) -> None:
    """Until GET `url` answers 200: nginx answers 502 while vLLM loads the model."""
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10, context=context) as response:  # noqa: S310 - the stack's endpoint
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        if time.monotonic() > deadline:
            raise WakeError(
                f"{url} did not answer 200 within {timeout / 60:.0f} min (last: {last}). vLLM may still be "
                "loading the model: look with `$(pulumi stack output sshCommand) sudo docker logs --tail 80 vllm`, "
                "or wait longer with --timeout"
            )
        time.sleep(poll)


def main(
    argv: Optional[list[str]] = None,
    *,
    ec2_client: Optional[Callable[[Optional[str]], Any]] = None,
    poll_seconds: float = 5.0,
    spot_window_seconds: float = wake_spot.INCORRECT_STATE_WINDOW_S,
) -> int:
    parser = argparse.ArgumentParser(prog="tools/wake", description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", nargs="?", help="stack name (default: the selected stack)")
    parser.add_argument("--timeout", type=float, default=30, help="minutes to wait for the endpoint (default 30)")
    parser.add_argument("--no-wait", action="store_true", help="start the instance and return")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        outputs = stack_outputs(args.stack)
        instance_id = outputs["instanceId"]
        ec2 = (ec2_client or _boto3_ec2)(outputs.get("region"))
        # Across nodes every node must run: vLLM on the head waits for each node's GPUs.
        for node_id in node_instance_ids(outputs):
            start_host(ec2, node_id, poll=poll_seconds, spot_window=spot_window_seconds)
        if args.no_wait:
            return EXIT_OK
        say(f"waiting for {health_url(outputs['endpoint'])} (vLLM loads the model from the model volume)")
        wait_until_ready(health_url(outputs["endpoint"]), outputs.get("caCertificate"),
                         timeout=args.timeout * 60, poll=poll_seconds)
    except NoCredentialsError:
        say("ERROR: no AWS credentials: run `aws configure` or `aws sso login`, or set AWS_PROFILE")
        return EXIT_FAILED
    except (BotoCoreError, ClientError) as exc:
        say(f"ERROR: AWS refused: {exc}")
        return EXIT_FAILED
    except WakeError as exc:
        say(f"ERROR: {exc}")
        return EXIT_FAILED
    cost = outputs.get("costUsd") or {}
    idle = outputs.get("idleStopMinutes") or 0
    print(f"ready: {outputs['endpoint']} ({instance_id}, {time.monotonic() - started:.0f}s)")
    if cost.get("runningPerHour") is not None:
        stops = f"; it stops again after {idle} minutes without requests" if idle else ""
        print(f"running costs ${cost['runningPerHour']}/h, stopped ${cost['stoppedPerHour']}/h{stops}")
    return EXIT_OK


def _boto3_ec2(region: Optional[str]) -> Any:
    try:
        return boto3.client("ec2", region_name=region)
    except NoRegionError:
        raise WakeError("no AWS region: the stack has no region output; set AWS_REGION") from None


if __name__ == "__main__":
    sys.exit(main())
