#!/usr/bin/env bash
# On the head: waits until every node has joined the Ray cluster with all its GPUs, so that
# `vllm serve --distributed-executor-backend ray` finds N x GPUs when it places its workers.
# Fails naming each node that never joined (or joined short of GPUs), with the head's Ray log tail.
# Prints NODES_JOINED=<n> and RAY_GPUS=<total> on stdout.
#
# Env: VLLM_DEPLOY_RAY_ADDRESS        the head's GCS address, ip:port
#      VLLM_DEPLOY_RAY_NODES          every node as name=private-ip, space-separated, head first
#      VLLM_DEPLOY_GPUS_PER_NODE      GPUs each node must bring
#      VLLM_DEPLOY_RAY_RESOURCE       the Ray resource counted (GPU; tests: a custom resource)
#      VLLM_DEPLOY_RAY_EXEC           docker (default): ask Ray inside the `vllm-ray` container (a head
#                                     run by ray_node.sh in docker mode); here: with this python3
#                                     (serve_on_ray_head.sh in the head's vLLM container; tests)
#      VLLM_DEPLOY_TIMEOUT_SECONDS    how long to wait (900)
#      VLLM_DEPLOY_POLL_SECONDS       between polls (10)
#      VLLM_DEPLOY_RAY_LOG_DIR        here: the head's Ray session logs, for the failure's tail
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_env VLLM_DEPLOY_RAY_ADDRESS VLLM_DEPLOY_RAY_NODES VLLM_DEPLOY_GPUS_PER_NODE
address="$VLLM_DEPLOY_RAY_ADDRESS"
per_node="$VLLM_DEPLOY_GPUS_PER_NODE"
resource="${VLLM_DEPLOY_RAY_RESOURCE:-GPU}"
where="${VLLM_DEPLOY_RAY_EXEC:-docker}"
timeout="${VLLM_DEPLOY_TIMEOUT_SECONDS:-900}"
interval="${VLLM_DEPLOY_POLL_SECONDS:-10}"
container=vllm-ray
read -ra nodes <<<"$VLLM_DEPLOY_RAY_NODES"
head_ip="${nodes[0]#*=}"
want_total=$((per_node * ${#nodes[@]}))

# One line per live Ray node: "<node ip> <count of the resource>" (ray.nodes(): Ray's state API).
# The driver runs on the head and says so (_node_ip_address), rather than let Ray guess an address.
query='
import sys, ray
ray.init(address=sys.argv[1], _node_ip_address=sys.argv[3], logging_level="ERROR", log_to_driver=False)
for node in ray.nodes():
    if node["Alive"]:
        print(node["NodeManagerAddress"], int(node["Resources"].get(sys.argv[2], 0)))
ray.shutdown()
'
ask_ray() {
  case "$where" in
    docker) timeout 60 docker exec -i "$container" python3 -c "$query" "$address" "$resource" "$head_ip" 2>/dev/null ;;
    here) timeout 60 python3 -c "$query" "$address" "$resource" "$head_ip" 2>/dev/null ;;
    *) die "VLLM_DEPLOY_RAY_EXEC=$where is neither docker nor here" ;;
  esac
}

# Sets `missing` (names of nodes short of GPUs) and `total` from one answer of ask_ray.
judge() {
  local answer="$1" entry node_name ip count
  missing=()
  total=0
  for entry in "${nodes[@]}"; do
    node_name="${entry%%=*}"
    ip="${entry#*=}"
    count=$(awk -v ip="$ip" '$1 == ip { n += $2 } END { print n + 0 }' <<<"$answer")
    total=$((total + count))
    if ((count < per_node)); then
      missing+=("$node_name ($ip): $count of $per_node $resource")
    fi
  done
}

deadline=$((SECONDS + timeout))
while true; do
  answer=$(ask_ray || true)
  judge "$answer"
  if ((${#missing[@]} == 0 && total >= want_total)); then
    log "Ray reports ${total} ${resource} on ${#nodes[@]} nodes"
    echo "NODES_JOINED=${#nodes[@]}"
    echo "RAY_GPUS=${total}"
    exit 0
  fi
  if ((SECONDS >= deadline)); then
    {
      echo "[vllm-deploy] $VLLM_DEPLOY_STEP: ERROR: after ${timeout}s Ray reports ${total} of ${want_total} ${resource}; not joined:"
      printf '  - %s\n' "${missing[@]}"
      echo "--- what Ray reports (node ip, ${resource}) ---"
      printf '%s\n' "${answer:-(the head at ${address} did not answer)}"
      echo "--- last 40 lines of the head's Ray log ---"
      if [[ "$where" == docker ]]; then
        docker logs --tail 40 "$container" 2>&1 || echo "(no container $container)"
      elif [[ -n "${VLLM_DEPLOY_RAY_LOG_DIR:-}" ]]; then
        tail -n 40 "$VLLM_DEPLOY_RAY_LOG_DIR"/raylet.out 2>/dev/null || echo "(no raylet.out)"
      fi
      echo "[vllm-deploy] $VLLM_DEPLOY_STEP: try: read the ray step's output of each node named above" \
        "(docker logs $container there); a replaced node needs the whole cluster restarted"
    } >&2
    exit 1
  fi
  log "Ray reports ${total} of ${want_total} ${resource}; waiting for: ${missing[*]}"
  sleep "$interval"
done
