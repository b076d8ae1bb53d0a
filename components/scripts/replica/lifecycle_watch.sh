#!/usr/bin/env bash
# Watches this replica's Auto Scaling lifecycle state and drains it when the group terminates it
# (scale-in, instance refresh, a failed health check): IMDSv2
# latest/meta-data/autoscaling/target-lifecycle-state turns `Terminated` once the termination
# hook holds the instance in Terminating:Wait (AWS "Retrieve the target lifecycle state through
# instance metadata"). Then runs drain.sh once and exits. Runs as vllm-replica-lifecycle.service.
# On a spot replica it also looks at latest/meta-data/spot/instance-action (404 until EC2 plans to
# interrupt the instance, then its JSON, two minutes ahead; issue 26) and runs spot_drain.sh
# once, then keeps watching (a termination hook that still arrives is completed by drain.sh).
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
spot_done=0
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
  if ((spot_done == 0)) && notice=$(imds_get spot/instance-action 2>/dev/null) && [[ -n "$notice" ]]; then
    log "spot interruption notice: $notice"
    # Done only once it succeeded: a failed drain is tried again at the next poll, with the
    # bound counted from when drain mode went on (spot_drain.sh).
    if bash "$REPLICA_HERE/spot_drain.sh"; then
      spot_done=1
    else
      log "spot_drain.sh failed; trying again (EC2 ends the instance at the notice's time)"
    fi
  fi
  sleep "$poll"
done
