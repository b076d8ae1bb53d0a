#!/usr/bin/env bash
# Watches this replica's Auto Scaling lifecycle state and drains it when the group terminates it
# (scale-in, instance refresh, a failed health check): IMDSv2
# latest/meta-data/autoscaling/target-lifecycle-state turns `Terminated` once the termination
# hook holds the instance in Terminating:Wait (AWS "Retrieve the target lifecycle state through
# instance metadata"). Then runs drain.sh once and exits. Runs as vllm-replica-lifecycle.service.
#
# Environment: replica.env; VLLM_DEPLOY_LIFECYCLE_POLL_S seconds between looks (default 5).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=replica_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/replica_lib.sh"

load_replica_env
poll=${VLLM_DEPLOY_LIFECYCLE_POLL_S:-5}
last=""
log "watching the target lifecycle state every ${poll}s"
while true; do
  # A token expires (6 h): fetch a new one whenever a look fails.
  if ! state=$(imds_get autoscaling/target-lifecycle-state 2>/dev/null); then
    IMDS_TOKEN=""
    state="unknown"
  fi
  if [[ "$state" != "$last" ]]; then
    log "target lifecycle state: $state"
    last=$state
  fi
  if [[ "$state" == Terminated ]]; then
    exec bash "$REPLICA_HERE/drain.sh"
  fi
  sleep "$poll"
done
