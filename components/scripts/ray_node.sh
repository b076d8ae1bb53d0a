#!/usr/bin/env bash
# Starts this node's part of the Ray cluster vLLM's multi-node engine runs on
# (`vllm serve ... --distributed-executor-backend ray`): the head on node 0, a worker joining
# the head's private IP on every other node. Idempotent: a Ray container already running is left
# as it is.
#
# Env: VLLM_DEPLOY_RAY_ROLE        head | worker
#      VLLM_DEPLOY_NODE_NAME       this node's name, for messages (node-0, node-1, ...)
#      VLLM_DEPLOY_NODE_IP         this node's private IP (Ray's --node-ip-address, vLLM's VLLM_HOST_IP)
#      VLLM_DEPLOY_RAY_HEAD_IP     worker: the head's private IP
#      VLLM_DEPLOY_RAY_PORT        the head's GCS port (6379, Ray's default)
#      VLLM_DEPLOY_RAY_LAUNCH      docker (default): a detached container `vllm-ray` from
#                                  VLLM_DEPLOY_IMAGE with host network, ipc=host and all GPUs;
#                                  foreground: exec `ray start --block` here (Ray from PyPI: tests)
#      VLLM_DEPLOY_IMAGE           docker: the vLLM image (the same one `vllm serve` runs from)
#      VLLM_DEPLOY_RAY_RESOURCES   optional JSON of custom Ray resources (tests: stand-in GPUs)
#      VLLM_DEPLOY_RAY_TEMP_DIR    optional Ray --temp-dir
#      VLLM_DEPLOY_JOIN_TIMEOUT_SECONDS  worker: how long to wait for the head's port (600)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_env VLLM_DEPLOY_RAY_ROLE VLLM_DEPLOY_NODE_IP
role="$VLLM_DEPLOY_RAY_ROLE"
name="${VLLM_DEPLOY_NODE_NAME:-$role}"
node_ip="$VLLM_DEPLOY_NODE_IP"
port="${VLLM_DEPLOY_RAY_PORT:-6379}"
launch="${VLLM_DEPLOY_RAY_LAUNCH:-docker}"
join_timeout="${VLLM_DEPLOY_JOIN_TIMEOUT_SECONDS:-600}"
container=vllm-ray

# ray start's arguments (Ray's CLI: `ray start --help`).
args=(start --node-ip-address="$node_ip" --disable-usage-stats --block)
case "$role" in
  head)
    args+=(--head --port="$port" --include-dashboard=false)
    ;;
  worker)
    require_env VLLM_DEPLOY_RAY_HEAD_IP
    head="$VLLM_DEPLOY_RAY_HEAD_IP:$port"
    args+=(--address="$head")
    ;;
  *)
    die "VLLM_DEPLOY_RAY_ROLE=$role is neither head nor worker" "set it to head on node 0, worker elsewhere"
    ;;
esac
if [[ -n "${VLLM_DEPLOY_RAY_RESOURCES:-}" ]]; then
  args+=(--resources="$VLLM_DEPLOY_RAY_RESOURCES")
fi
if [[ -n "${VLLM_DEPLOY_RAY_TEMP_DIR:-}" ]]; then
  args+=(--temp-dir="$VLLM_DEPLOY_RAY_TEMP_DIR")
fi

# A worker waits for the head's port before joining: the nodes are provisioned in parallel and
# the head may still be pulling the image. Bash's /dev/tcp: no extra tool, one connection a poll.
if [[ "$role" == worker ]]; then
  deadline=$((SECONDS + join_timeout))
  until (exec 3<>"/dev/tcp/${VLLM_DEPLOY_RAY_HEAD_IP}/${port}") 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      die "$name ($node_ip) cannot join the Ray cluster: the head ${head} did not answer in ${join_timeout}s" \
        "check that node-0 is running its Ray head (docker logs ${container} on it) and that the cluster security group allows all traffic between the nodes"
    fi
    sleep 2
  done
  log "$name ($node_ip): the Ray head $head answers; joining"
fi

if [[ "$launch" == foreground ]]; then
  log "$name ($node_ip): ray ${args[*]}"
  exec ray "${args[@]}"
fi
[[ "$launch" == docker ]] || die "VLLM_DEPLOY_RAY_LAUNCH=$launch is neither docker nor foreground"
require_env VLLM_DEPLOY_IMAGE
if [[ "$(docker inspect --format '{{.State.Running}}' "$container" 2>/dev/null || true)" == true ]]; then
  log "$name: the Ray container $container is already running"
  exit 0
fi
docker rm -f "$container" >/dev/null 2>&1 || true
# Host network: Ray and NCCL talk over the node's private IP; ipc=host: vLLM's shared memory.
docker run -d --name "$container" --restart unless-stopped \
  --network host --ipc host --gpus all \
  -e VLLM_HOST_IP="$node_ip" \
  --entrypoint ray "$VLLM_DEPLOY_IMAGE" "${args[@]}" >/dev/null
log "$name ($node_ip): Ray $role started in container $container"
