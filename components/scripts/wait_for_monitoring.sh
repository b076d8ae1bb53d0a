#!/usr/bin/env bash
# Waits until monitoring works on the host: Prometheus is ready, its last scrape of every job
# succeeded (up == 1), and Grafana's /api/health answers. On failure names the job or the
# service at fault and prints the containers' last log lines.
# Env: VLLM_DEPLOY_PROMETHEUS, VLLM_DEPLOY_GRAFANA (host:port on loopback),
#      VLLM_DEPLOY_JOBS (scrape job names), VLLM_DEPLOY_CONTAINERS (for logs on failure),
#      VLLM_DEPLOY_TIMEOUT_SECONDS, VLLM_DEPLOY_POLL_SECONDS.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_env VLLM_DEPLOY_PROMETHEUS VLLM_DEPLOY_GRAFANA VLLM_DEPLOY_JOBS
prometheus="http://${VLLM_DEPLOY_PROMETHEUS}"
grafana="http://${VLLM_DEPLOY_GRAFANA}"
read -r -a jobs <<<"$VLLM_DEPLOY_JOBS"
read -r -a containers <<<"${VLLM_DEPLOY_CONTAINERS:-}"
timeout="${VLLM_DEPLOY_TIMEOUT_SECONDS:-300}"
interval="${VLLM_DEPLOY_POLL_SECONDS:-5}"
require_uint timeout
require_uint interval

explain_failure() {
  {
    echo "monitoring did not become ready: $1"
    local name
    for name in "${containers[@]}"; do
      echo "--- last 20 lines of 'docker logs ${name}' ---"
      docker logs --tail 20 "$name" 2>&1 || echo "(no logs: the container does not exist)"
    done
    echo "--- usual causes ---"
    echo "* job dcgm down: the GPU driver is older than the DCGM exporter supports, or the"
    echo "  container cannot see the GPUs (docker logs vllm-dcgm-exporter)."
    echo "* job vllm down: vLLM restarted after its readiness check (docker logs vllm)."
    echo "* Grafana not healthy: its settings or provisioning files (docker logs vllm-grafana)."
    echo "Set monitoring to false to deploy without it."
  } >&2
  exit 1
}

get() {
  curl --silent --fail --max-time 5 "$@"
}

# up{job="J"} == 1 has a result exactly when the last scrape of J worked.
job_up() {
  get --get --data-urlencode "query=up{job=\"$1\"} == 1" "${prometheus}/api/v1/query" |
    grep -q '"result":\[{'
}

waiting_for() {
  if ! get --output /dev/null "${prometheus}/-/ready"; then
    echo "Prometheus is not ready at ${prometheus}"
    return
  fi
  local job
  for job in "${jobs[@]}"; do
    if ! job_up "$job"; then
      echo "Prometheus cannot scrape job ${job}"
      return
    fi
  done
  if ! get "${grafana}/api/health" | grep -q '"database": *"ok"'; then
    echo "Grafana does not answer ${grafana}/api/health"
  fi
}

deadline=$((SECONDS + timeout))
log "waiting up to ${timeout}s for Prometheus (jobs: ${jobs[*]}) and Grafana"
while true; do
  problem=$(waiting_for)
  if [[ -z "$problem" ]]; then
    break
  fi
  if ((SECONDS >= deadline)); then
    explain_failure "$problem after ${timeout}s"
  fi
  sleep "$interval"
done
log "Prometheus scrapes ${jobs[*]}; Grafana is up"
