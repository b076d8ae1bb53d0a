#!/usr/bin/env bash
# The entrypoint of node 0's vLLM container in a cluster across nodes:
#   bash /opt/vllm-deploy/serve_on_ray_head.sh <vllm serve arguments, the model path first>
# Starts the Ray head here (ray_node.sh, launch mode daemon), waits until every node has joined
# with all its GPUs (wait_for_ray_gpus.sh), then becomes `vllm serve "$@"` with RAY_ADDRESS
# pointing at this head, so that vLLM's Ray executor joins this cluster rather than starting one
# of its own (vllm/v1/executor/ray_utils.py: initialize_ray_cluster calls ray.init(address=None),
# and Ray's ray.init reads RAY_ADDRESS then). When the wait fails it exits 1 with the wait's
# message, naming the nodes that never joined: `docker logs` of this container shows it.
#
# Exports, as vLLM's multi-node guide asks (vLLM 0.33.0 docs/serving/parallelism_scaling.md,
# docs/usage/troubleshooting.md "Incorrect network setup"): VLLM_HOST_IP = this node's private
# IP; NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME = the interface holding it (kept when set).
# The container's environment carries VLLM_API_KEY: nothing here prints the environment, and
# vLLM is told not to hand it to its Ray workers (below).
#
# Env: VLLM_DEPLOY_NODE_IP           this node's private IP (the head's)
#      VLLM_DEPLOY_RAY_PORT          the head's GCS port (6379)
#      VLLM_DEPLOY_RAY_NODES         every node as name=private-ip, space-separated, this head first
#      VLLM_DEPLOY_GPUS_PER_NODE     GPUs each node must bring
#      VLLM_DEPLOY_TIMEOUT_SECONDS   how long to wait for the nodes (900)
#      VLLM_DEPLOY_POLL_SECONDS, VLLM_DEPLOY_RAY_RESOURCE, VLLM_DEPLOY_RAY_RESOURCES,
#      VLLM_DEPLOY_RAY_TEMP_DIR      passed on to ray_node.sh / wait_for_ray_gpus.sh (tests)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
here="$(dirname "${BASH_SOURCE[0]}")"

require_env VLLM_DEPLOY_NODE_IP VLLM_DEPLOY_RAY_NODES VLLM_DEPLOY_GPUS_PER_NODE
require_uint VLLM_DEPLOY_GPUS_PER_NODE
node_ip="$VLLM_DEPLOY_NODE_IP"
port="${VLLM_DEPLOY_RAY_PORT:-6379}"
(($# > 0)) || die "no vllm serve arguments" "pass them after the script: serve_on_ray_head.sh /models/served --tensor-parallel-size 8 ..."
read -ra nodes <<<"$VLLM_DEPLOY_RAY_NODES"
head_name="${nodes[0]%%=*}"
head_ip="${nodes[0]#*=}"
[[ "$head_ip" == "$node_ip" && "${nodes[0]}" == *=* ]] ||
  die "VLLM_DEPLOY_RAY_NODES must name this head first, as ${head_name}=${node_ip}; it starts with '${nodes[0]}'" \
    "list the nodes as node-0=<head ip> node-1=<ip> ..., the head first"

export_node_network "$head_name" "$node_ip" "pass the head's own private IP (the container shares the host's network)"
log "$head_name ($node_ip): VLLM_HOST_IP=$node_ip NCCL_SOCKET_IFNAME=$NCCL_SOCKET_IFNAME GLOO_SOCKET_IFNAME=$GLOO_SOCKET_IFNAME"

# vLLM's Ray executor hands the driver's whole environment to every Ray worker, on every node
# (vLLM 0.33.0 vllm/v1/executor/ray_env_utils.py get_driver_env_vars, used by
# ray_executor_v2.py), except the names listed in $VLLM_CONFIG_ROOT/ray_non_carry_over_env_vars.json
# (vllm/ray/ray_env.py, read when vLLM starts). The API key and hub tokens stay here: the workers
# serve no HTTP and load the weights from their own disk. The file holds names, never values.
config_root="${VLLM_CONFIG_ROOT:-${XDG_CONFIG_HOME:-$HOME/.config}/vllm}"
if ! { mkdir -p "$config_root" &&
  printf '%s\n' '["VLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"]' >"$config_root/ray_non_carry_over_env_vars.json"; }; then
  die "cannot write $config_root/ray_non_carry_over_env_vars.json" "give the container a writable \$HOME or VLLM_CONFIG_ROOT"
fi

VLLM_DEPLOY_RAY_ROLE=head VLLM_DEPLOY_RAY_LAUNCH=daemon VLLM_DEPLOY_NODE_NAME="$head_name" \
  VLLM_DEPLOY_RAY_PORT="$port" bash "$here/ray_node.sh"

# The wait's result lines go to the log too: this script's stdout becomes vLLM's.
VLLM_DEPLOY_RAY_ADDRESS="$node_ip:$port" VLLM_DEPLOY_RAY_EXEC=here \
  VLLM_DEPLOY_RAY_LOG_DIR="${VLLM_DEPLOY_RAY_TEMP_DIR:-/tmp/ray}/session_latest/logs" \
  bash "$here/wait_for_ray_gpus.sh" >&2 ||
  die "not every node joined the Ray cluster (above: the nodes missing); vllm serve was not started" \
    "read the ray step's output of each node named above; restart this container once they run"

export RAY_ADDRESS="$node_ip:$port"
log "$head_name: every node joined; starting vllm serve on the Ray cluster at $RAY_ADDRESS"
exec vllm serve "$@"
