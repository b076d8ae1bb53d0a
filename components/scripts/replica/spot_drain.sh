#!/usr/bin/env bash
# Drains this spot replica within EC2's two-minute interruption notice (issue 26, fleet-pitfalls
# P17). Run once by lifecycle_watch.sh when IMDSv2 latest/meta-data/spot/instance-action answers
# (AWS "Spot Instance interruption notices": two minutes before, best effort). Unlike a scale-in,
# the load balancer has NOT drained this replica first, so:
#   1. drain mode at once: nginx answers /health and every new /v1 call with the JSON 503 (the
#      load balancer marks the target unhealthy and the group replaces it; Capacity Rebalancing
#      has often started the replacement already);
#   2. the streams in flight run on while vLLM's running requests (its /metrics gauge
#      vllm:num_requests_running, on loopback) are above 0, for at most
#      VLLM_DEPLOY_SPOT_STREAM_BOUND_S minus vLLM's --shutdown-timeout;
#   3. `docker stop -t <shutdown timeout + 15>`: vLLM's own graceful stop gives what still runs
#      its --shutdown-timeout, then SIGKILL. Worst case: (bound - shutdown) + shutdown + 15 s,
#      105 s with the defaults, inside the two minutes; a stream longer than ~90 s is cut.
# No lifecycle action here: EC2 terminates the instance; if the group's termination hook gets to
# it first, lifecycle_watch.sh completes it (drain.sh finds vLLM already stopped).
# Idempotent: a second run finds the flag set and vLLM stopped; a run restarted part-way (killed,
# or lifecycle_watch.sh retrying a failed one) counts the bound from when drain mode went on (the
# flag's time), never afresh. Stdout: VLLM_DEPLOY_SPOT_DRAINED=<s>
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=replica_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/replica_lib.sh"

load_replica_env
require_env VLLM_DEPLOY_RUN_DIR VLLM_DEPLOY_VLLM_CONTAINER VLLM_DEPLOY_SHUTDOWN_TIMEOUT_S VLLM_DEPLOY_VLLM_PORT
require_uint VLLM_DEPLOY_SHUTDOWN_TIMEOUT_S
# components/fleet_scaling.py SPOT_STREAM_BOUND_S (a test holds the two equal).
bound=${VLLM_DEPLOY_SPOT_STREAM_BOUND_S:-90}
poll=${VLLM_DEPLOY_SPOT_POLL_S:-1}
shutdown=$VLLM_DEPLOY_SHUTDOWN_TIMEOUT_S
container=$VLLM_DEPLOY_VLLM_CONTAINER
wait_s=$((bound > shutdown ? bound - shutdown : 0))
install -d -m 0755 "$VLLM_DEPLOY_RUN_DIR"
flag=$VLLM_DEPLOY_RUN_DIR/draining
elapsed=0
if [[ -f "$flag" ]]; then
  now_s=$(date +%s)
  flag_s=$(stat -c %Y "$flag") || flag_s=$now_s
  elapsed=$((now_s - flag_s))
  ((elapsed >= 0)) || elapsed=0
else
  touch "$flag"
fi
started=$((SECONDS - elapsed))
log "spot interruption notice: drain mode on; streams may run up to ${wait_s}s, then vLLM gets ${shutdown}s more"

# running: vLLM's running requests (summed over engines), or nothing when /metrics does not answer.
running() {
  curl -fsS --max-time 2 "http://127.0.0.1:$VLLM_DEPLOY_VLLM_PORT/metrics" 2>/dev/null |
    awk '$1 ~ /^vllm:num_requests_running($|\{)/ {sum += $NF; seen = 1} END {if (seen) printf "%d\n", sum}'
}

while ((SECONDS - started < wait_s)); do
  now=$(running) || now=""
  if [[ -z "$now" ]]; then
    log "vLLM's /metrics does not answer: nothing left to wait for"
    break
  fi
  if ((now == 0)); then
    log "no request running after $((SECONDS - started))s"
    break
  fi
  sleep "$poll"
done

if container_exists "$container"; then
  log "stopping $container (docker stop -t $((shutdown + 15)))"
  docker stop -t "$((shutdown + 15))" "$container" >/dev/null ||
    die "docker stop $container failed" "EC2 ends the instance anyway at the notice's time"
fi
touch "$VLLM_DEPLOY_RUN_DIR/spot-drained"
log "spot drain done after $((SECONDS - started))s"
printf 'VLLM_DEPLOY_SPOT_DRAINED=%s\n' "$((SECONDS - started))"
