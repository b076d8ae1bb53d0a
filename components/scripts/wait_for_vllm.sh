#!/usr/bin/env bash
# Waits until vLLM serves: /health answers 200 and /v1/models lists the served model.
# On failure prints the container's last log lines and the usual causes.
# Env: VLLM_DEPLOY_PORT, VLLM_DEPLOY_CONTAINER, VLLM_DEPLOY_SERVED_MODEL,
#      VLLM_DEPLOY_TIMEOUT_SECONDS, VLLM_API_KEY (secret: only ever fed to curl on stdin).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

port="${VLLM_DEPLOY_PORT:-8000}"
container="${VLLM_DEPLOY_CONTAINER:-vllm}"
served="${VLLM_DEPLOY_SERVED_MODEL:?VLLM_DEPLOY_SERVED_MODEL is required}"
timeout="${VLLM_DEPLOY_TIMEOUT_SECONDS:-1800}"
interval="${VLLM_DEPLOY_POLL_SECONDS:-10}"
: "${VLLM_API_KEY:?VLLM_API_KEY is required}"
base="http://127.0.0.1:${port}"

explain_failure() {
  local why="$1"
  {
    echo "vLLM did not become ready: ${why}"
    echo "--- last 80 lines of 'docker logs ${container}' ---"
    docker logs --tail 80 "$container" 2>&1 || echo "(no logs: the container does not exist)"
    echo "--- usual causes ---"
    echo "* CUDA out of memory / 'No available memory for the cache blocks': lower maxModelLen,"
    echo "  maxNumSeqs or gpuMemoryUtilization, use quantization or kvCacheDtype=fp8, or a larger instanceType."
    echo "* 'max_model_len ... larger than the maximum number of tokens that can be stored in KV cache':"
    echo "  lower maxModelLen or raise gpuMemoryUtilization."
    echo "* 'CUDA driver version is insufficient' / 'no CUDA-capable device': the host driver is too old"
    echo "  for this image (needs >= 580 for CUDA 13); use ami=dlami or a -cu129 vllmImage."
    echo "* Big models load slowly: raise readinessTimeoutMinutes."
  } >&2
  exit 1
}

# The key goes to curl on stdin (a config line), never on its command line; backslashes
# and double quotes are escaped as curl's config syntax wants.
get_with_key() {
  local key=${VLLM_API_KEY//\\/\\\\}
  key=${key//\"/\\\"}
  printf 'header = "Authorization: Bearer %s"\n' "$key" \
    | curl --silent --show-error --fail --max-time 10 --config - "$1"
}

deadline=$((SECONDS + timeout))
log "waiting up to ${timeout}s for ${base}/health"
until curl --silent --fail --max-time 5 --output /dev/null "${base}/health"; do
  state=$(docker inspect --format '{{.State.Status}} {{.RestartCount}}' "$container" 2>/dev/null || echo "missing 0")
  read -r status restarts <<<"$state"
  if [[ "$status" == "missing" || "$status" == "exited" || "$status" == "dead" || "${restarts:-0}" -ge 3 ]]; then
    explain_failure "the container is ${status} after ${restarts} restarts"
  fi
  if ((SECONDS >= deadline)); then
    explain_failure "no 200 from /health within ${timeout}s"
  fi
  sleep "$interval"
done

models=$(get_with_key "${base}/v1/models") || explain_failure "/v1/models refused the API key or failed"
# A fixed-string match: model names are full of regex characters (dots, slashes).
if ! grep -qF "\"${served}\"" <<<"$models"; then
  explain_failure "/v1/models does not list '${served}'"
fi
log "vLLM is ready and serves '${served}'"
