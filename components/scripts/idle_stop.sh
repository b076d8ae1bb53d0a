#!/usr/bin/env bash
# The idle-stop watcher: powers this instance off after VLLM_DEPLOY_IDLE_STOP_MINUTES without
# requests. The instance's shutdown behaviour is "stop" (GpuHost), so a power-off from here
# stops it: its volumes, the model on them and the Elastic IP stay; `tools/wake` starts it.
# Runs as the systemd service vllm-idle-stop (install_idle_stop.sh), never as a provisioning step.
#
# It reads vLLM's Prometheus /metrics on loopback every VLLM_DEPLOY_IDLE_POLL_SECONDS. Metric
# names as vLLM 0.33 defines them (vllm/v1/metrics/loggers.py, PrometheusStatLogger):
#   vllm:num_requests_running   gauge, requests in the running batch
#   vllm:num_requests_waiting   gauge, requests queued
#   vllm:request_success_total  counter "vllm:request_success" (prometheus_client adds _total),
#                               finished requests, one series per finished_reason
# The gauges are set from the scheduler's stats after finished requests leave the batch
# (vllm/v1/core/sched/scheduler.py, update_from_output -> make_stats), so an idle server
# reports 0 and 0. Each series carries model_name and engine labels; values are summed.
#
# Not idle, and the clock starts again, whenever:
#   - /metrics does not answer (the server is starting, loading the model, or restarting);
#   - it answers without those metrics (no request metrics yet);
#   - a request is running or waiting;
#   - the request counter moved since the last look, in either direction (a restart of the
#     vLLM container resets it to 0);
#   - an SSH connection is open (a provisioning step such as a model download, `pulumi up`'s
#     Docker provider, or an operator).
# Only after VLLM_DEPLOY_IDLE_STOP_MINUTES of looks that find none of these does it power off.
#
# Environment:
#   VLLM_DEPLOY_IDLE_STOP_MINUTES  minutes without requests before stopping (required, > 0)
#   VLLM_DEPLOY_METRICS_URL        vLLM's /metrics (default http://127.0.0.1:8000/metrics)
#   VLLM_DEPLOY_IDLE_POLL_SECONDS  seconds between looks, fractions allowed (default 30)
#   VLLM_DEPLOY_IDLE_STOP_SECONDS  the idle time in seconds instead of minutes (tests)
#   VLLM_DEPLOY_SSH_PORT           the SSH port whose connections count as activity (22)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_env VLLM_DEPLOY_IDLE_STOP_MINUTES
require_uint VLLM_DEPLOY_IDLE_STOP_MINUTES
((VLLM_DEPLOY_IDLE_STOP_MINUTES > 0)) || die "VLLM_DEPLOY_IDLE_STOP_MINUTES must be above 0" \
  "set idleStopMinutes, or remove the service (install_idle_stop.sh with 0)"
: "${VLLM_DEPLOY_IDLE_STOP_SECONDS:=$((VLLM_DEPLOY_IDLE_STOP_MINUTES * 60))}"
require_uint VLLM_DEPLOY_IDLE_STOP_SECONDS
idle_limit=$VLLM_DEPLOY_IDLE_STOP_SECONDS
poll=${VLLM_DEPLOY_IDLE_POLL_SECONDS:-30}
url=${VLLM_DEPLOY_METRICS_URL:-http://127.0.0.1:8000/metrics}
ssh_port=${VLLM_DEPLOY_SSH_PORT:-22}

# metric_sum NAME < exposition: the sum of NAME's samples; fails when NAME has none.
metric_sum() {
  awk -v name="$1" '
    /^#/ { next }
    {
      line = $0
      sub(/\{[^}]*\}/, "", line)  # drop the labels, which may hold spaces
      split(line, field, " ")
      if (field[1] == name) { sum += field[2]; found = 1 }
    }
    END { if (!found) exit 1; printf "%.0f\n", sum }'
}

# Microseconds since the epoch (EPOCHREALTIME, whole seconds would make the idle time up to a
# second short); its decimal separator follows the locale.
now_us() {
  local now=$EPOCHREALTIME
  printf '%s\n' "${now//[.,]/}"
}

ssh_connections() {
  ss -Htn state established "( sport = :$ssh_port )" | wc -l
}

idle_since=""
last_count=""
last_reason=""

# busy REASON: not idle now; the idle clock starts again at the next idle look.
busy() {
  idle_since=""
  if [[ "$1" != "$last_reason" ]]; then
    log "not idle: $1"
    last_reason=$1
  fi
}

log "stopping this instance after ${idle_limit}s without requests (looking at $url every ${poll}s)"
while true; do
  if ! metrics=$(curl -fsS --max-time 5 "$url" 2>/dev/null); then
    busy "vLLM's /metrics does not answer (starting, loading the model, or restarting)"
  elif ! running=$(metric_sum vllm:num_requests_running <<<"$metrics") ||
    ! waiting=$(metric_sum vllm:num_requests_waiting <<<"$metrics") ||
    ! count=$(metric_sum vllm:request_success_total <<<"$metrics"); then
    busy "vLLM answers without request metrics yet"
  elif ((running + waiting > 0)); then
    busy "$running request(s) running, $waiting waiting"
    last_count=$count
  elif [[ "$count" != "$last_count" ]]; then
    busy "requests finished since the last look (or the server restarted): $count in all"
    last_count=$count
  elif ! sessions=$(ssh_connections); then
    busy "cannot count SSH connections (ss failed)"
  elif ((sessions > 0)); then
    busy "$sessions SSH connection(s) open"
  else
    now=$(now_us)
    if [[ -z "$idle_since" ]]; then
      idle_since=$now
      last_reason=""
      log "idle: no requests running, waiting or finished; stopping in ${idle_limit}s unless one comes"
    fi
    if ((now - idle_since >= idle_limit * 1000000)); then
      log "no requests for $(((now - idle_since) / 1000000))s: stopping this instance (start it with tools/wake)"
      if systemctl poweroff; then
        exit 0
      fi
      log "systemctl poweroff failed; trying again at the next look"
    fi
  fi
  sleep "$poll"
done
