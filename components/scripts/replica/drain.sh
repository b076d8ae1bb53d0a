#!/usr/bin/env bash
# Drains this replica, in AWS's order (fleet-pitfalls.md P7): when the termination hook runs,
# the load balancer has already deregistered the replica and waited its deregistration delay
# for in-flight requests. Then:
#   1. drain mode: nginx answers /health and every new /v1 call with a JSON 503 (Retry-After),
#      at once, for the few seconds the load balancer may still send (the flag file
#      $VLLM_DEPLOY_RUN_DIR/draining, which nginx tests on each request: no reload);
#   2. a heartbeat, so the hook's timeout counts from here;
#   3. `docker stop -t <shutdown timeout + margin>` vLLM: SIGTERM, vLLM 0.33 finishes in-flight
#      requests for up to --shutdown-timeout, then exits; SIGKILL only after the margin;
#   4. complete-lifecycle-action CONTINUE on the termination hook (once, after the streams).
# Idempotent: a second run finds vLLM stopped and no action pending. Run by lifecycle_watch.sh;
# an operator may run it by hand (sudo /opt/vllm-deploy/replica/drain.sh) before a stop.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=replica_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/replica_lib.sh"

load_replica_env
require_env VLLM_DEPLOY_REGION VLLM_DEPLOY_RUN_DIR VLLM_DEPLOY_TERMINATE_HOOK \
  VLLM_DEPLOY_VLLM_CONTAINER VLLM_DEPLOY_DOCKER_STOP_TIMEOUT_S
require_uint VLLM_DEPLOY_DOCKER_STOP_TIMEOUT_S
run_dir=$VLLM_DEPLOY_RUN_DIR
hook=$VLLM_DEPLOY_TERMINATE_HOOK
container=$VLLM_DEPLOY_VLLM_CONTAINER
stop_timeout=$VLLM_DEPLOY_DOCKER_STOP_TIMEOUT_S

install -d -m 0755 "$run_dir"
touch "$run_dir/draining"
log "drain mode on: /health and new API calls answer 503"

instance="" group=""
if instance=$(imds_get instance-id) && group=$(asg_group "$instance"); then
  heartbeat "$hook" "$group" "$instance" || log "no heartbeat recorded for $hook (no action pending?)"
else
  log "cannot tell this instance's Auto Scaling group (IMDS or autoscaling:DescribeAutoScalingInstances); draining anyway"
fi

if container_exists "$container"; then
  started=$SECONDS
  log "stopping $container (docker stop -t $stop_timeout: vLLM finishes its in-flight requests first)"
  docker stop -t "$stop_timeout" "$container" >/dev/null ||
    die "docker stop $container failed" "inspect: docker ps -a; journalctl -u docker"
  log "$container stopped after $((SECONDS - started))s"
else
  log "no $container container: nothing to stop"
fi

if [[ -z "$group" ]]; then
  die "drained, but the termination hook $hook cannot be completed without the instance's group" \
    "check the instance profile allows autoscaling:DescribeAutoScalingInstances and IMDS answers; the hook times out by itself"
fi
complete_lifecycle "$hook" "$group" "$instance" CONTINUE ||
  die "complete-lifecycle-action CONTINUE on $hook failed" \
    "check the instance profile allows autoscaling:CompleteLifecycleAction on this group; the hook times out by itself"
touch "$run_dir/drained"
log "drained"
