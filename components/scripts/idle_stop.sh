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
#   vllm:prompt_tokens_total, vllm:generation_tokens_total  counters of tokens prefilled and
#                               generated (optional here: progress of the requests in flight)
#
# Not idle, and the clock starts again, whenever:
#   - /metrics does not answer (the server is starting, loading the model, or restarting), or
#     answers without those metrics (no request metrics yet): for at most
#     VLLM_DEPLOY_IDLE_NO_METRICS_SECONDS in a row (the deployment's readiness timeout, the
#     longest a start may take). Longer, it is a crash loop or a server that never came up:
#     the look counts as idle, and the log says so;
#   - a request is running or waiting and the server makes progress (a request finished or a
#     token was prefilled or generated since the last look), or has not for less than
#     VLLM_DEPLOY_IDLE_STUCK_SECONDS (the proxy's upstream read timeout: after that long without
#     a token the proxy has cut every client of those requests off). Longer, the requests are
#     stuck "running": the look counts as idle, and the log says so;
#   - the request counter moved since the last look, in either direction (a restart of the
#     vLLM container resets it to 0);
#   - an SSH connection is open (a provisioning step such as a model download, `pulumi up`'s
#     Docker provider, or an operator). Always, whatever the metrics say.
# Only after VLLM_DEPLOY_IDLE_STOP_MINUTES of idle looks does it power off; the log line names
# the reason of the last look.
#
# Environment:
#   VLLM_DEPLOY_IDLE_STOP_MINUTES       minutes without requests before stopping (required, > 0)
#   VLLM_DEPLOY_METRICS_URL             vLLM's /metrics (default http://127.0.0.1:8000/metrics)
#   VLLM_DEPLOY_IDLE_POLL_SECONDS       seconds between looks, fractions allowed (default 30)
#   VLLM_DEPLOY_IDLE_STOP_SECONDS       the idle time in seconds instead of minutes (tests)
#   VLLM_DEPLOY_IDLE_NO_METRICS_SECONDS bound on missing metrics, seconds (default 1800: the
#                                       default readinessTimeoutMinutes)
#   VLLM_DEPLOY_IDLE_STUCK_SECONDS      bound on requests in flight without progress, seconds
#                                       (default 3600: the proxy's upstream read timeout)
#   VLLM_DEPLOY_SSH_PORT                the SSH port whose connections count as activity (22)
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
: "${VLLM_DEPLOY_IDLE_NO_METRICS_SECONDS:=1800}"
: "${VLLM_DEPLOY_IDLE_STUCK_SECONDS:=3600}"
require_uint VLLM_DEPLOY_IDLE_NO_METRICS_SECONDS
require_uint VLLM_DEPLOY_IDLE_STUCK_SECONDS
no_metrics_limit=$VLLM_DEPLOY_IDLE_NO_METRICS_SECONDS
stuck_limit=$VLLM_DEPLOY_IDLE_STUCK_SECONDS

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

# metric_sum_or_0 NAME < exposition: the sum, or 0 when NAME has no sample.
metric_sum_or_0() {
  metric_sum "$1" || echo 0
}

idle_since=""
last_count=""
last_reason=""
missing_since=""  # first look of the current run of looks without request metrics
stalled_since=""  # first look of the current run with requests in flight and no progress
last_progress=""

# busy REASON: not idle now; the idle clock starts again at the next idle look.
busy() {
  idle_since=""
  if [[ "$1" != "$last_reason" ]]; then
    log "not idle: $1"
    last_reason=$1
  fi
}

# idle REASON: an idle look, unless an SSH connection is open; powers off once the looks have
# been idle for the idle time.
idle() {
  local sessions
  if ! sessions=$(ssh_connections); then
    busy "cannot count SSH connections (ss failed)"
    return 0
  elif ((sessions > 0)); then
    busy "$sessions SSH connection(s) open"
    return 0
  fi
  if [[ -z "$idle_since" ]]; then
    idle_since=$now
    log "idle: $1; stopping in ${idle_limit}s unless a request comes"
    last_reason=$1
  elif [[ "$1" != "$last_reason" ]]; then
    log "idle: $1"
    last_reason=$1
  fi
  if ((now - idle_since >= idle_limit * 1000000)); then
    log "idle for $(((now - idle_since) / 1000000))s ($1): stopping this instance (start it with tools/wake)"
    if systemctl poweroff; then
      exit 0
    fi
    log "systemctl poweroff failed; trying again at the next look"
  fi
}

# no_metrics REASON: busy for the first no_metrics_limit seconds of a run of such looks, idle after.
no_metrics() {
  stalled_since=""
  [[ -n "$missing_since" ]] || missing_since=$now
  local gone=$(((now - missing_since) / 1000000))
  if ((now - missing_since >= no_metrics_limit * 1000000)); then
    idle "$1 for ${gone}s, longer than the ${no_metrics_limit}s a start may take (a crash loop, or a server that never came up)"
  else
    busy "$1"
  fi
}

log "stopping this instance after ${idle_limit}s without requests (looking at $url every ${poll}s; missing metrics count as idle after ${no_metrics_limit}s, requests in flight without progress after ${stuck_limit}s)"
while true; do
  now=$(now_us)
  if ! metrics=$(curl -fsS --max-time 5 "$url" 2>/dev/null); then
    no_metrics "vLLM's /metrics does not answer (starting, loading the model, or restarting)"
  elif ! running=$(metric_sum vllm:num_requests_running <<<"$metrics") ||
    ! waiting=$(metric_sum vllm:num_requests_waiting <<<"$metrics") ||
    ! count=$(metric_sum vllm:request_success_total <<<"$metrics"); then
    no_metrics "vLLM answers without request metrics yet"
  else
    missing_since=""
    progress="$count $(metric_sum_or_0 vllm:prompt_tokens_total <<<"$metrics") $(metric_sum_or_0 vllm:generation_tokens_total <<<"$metrics")"
    if ((running + waiting > 0)); then
      if [[ -z "$stalled_since" || "$progress" != "$last_progress" ]]; then
        stalled_since=$now
      fi
      last_progress=$progress
      last_count=$count
      stalled=$(((now - stalled_since) / 1000000))
      if ((now - stalled_since >= stuck_limit * 1000000)); then
        idle "$running request(s) running, $waiting waiting, with no token and no finished request for ${stalled}s, longer than the ${stuck_limit}s bound (stuck requests)"
      else
        busy "$running request(s) running, $waiting waiting"
      fi
    elif [[ "$count" != "$last_count" ]]; then
      stalled_since=""
      busy "requests finished since the last look (or the server restarted): $count in all"
      last_count=$count
    else
      stalled_since=""
      idle "no requests running, waiting or finished"
    fi
  fi
  sleep "$poll"
done
