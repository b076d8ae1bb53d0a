#!/usr/bin/env bash
# Starts this node's part of the Ray cluster vLLM's multi-node engine runs on
# (`vllm serve ... --distributed-executor-backend ray`): a worker joining the head's private IP
# on every node but node 0, and the head itself (node 0: serve_on_ray_head.sh runs it, launch
# mode daemon, inside the vLLM container).
#
# vLLM's multi-node guide (vLLM 0.33.0 docs/serving/parallelism_scaling.md, "Ray cluster setup
# with containers"; docs/usage/troubleshooting.md, "Incorrect network setup") asks every node for
# VLLM_HOST_IP = its own IP, and NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME = the interface holding
# it. vLLM never copies VLLM_HOST_IP from the driver to its Ray workers (WORKER_SPECIFIC_ENV_VARS
# in vllm/v1/executor/ray_utils.py): a worker's Ray processes must carry their own, which is why
# it is set here, where they start.
#
# Idempotent (docker mode): the container carries a hash of its launch spec (image and its id,
# arguments, environment, mounts, devices) as the label vllm-deploy.spec. A running container with the same
# spec is left alone; any other (a new image, a replaced head's new IP) is replaced.
#
# Env: VLLM_DEPLOY_RAY_ROLE        head | worker
#      VLLM_DEPLOY_NODE_NAME       this node's name, for messages (node-0, node-1, ...)
#      VLLM_DEPLOY_NODE_IP         this node's private IP (Ray's --node-ip-address, VLLM_HOST_IP)
#      VLLM_DEPLOY_RAY_HEAD_IP     worker: the head's private IP
#      VLLM_DEPLOY_RAY_PORT        the head's GCS port (6379, Ray's default)
#      VLLM_DEPLOY_RAY_LAUNCH      docker (default): a detached container `vllm-ray` from
#                                  VLLM_DEPLOY_IMAGE with host network, ipc=host and all GPUs,
#                                  --restart unless-stopped (when the head goes, a worker's
#                                  `ray start --block` exits and Docker restarts it: it re-joins);
#                                  daemon: `ray start` here, returning once Ray runs, after
#                                  stopping a stale Ray of a previous run (`ray stop --force`);
#                                  foreground: exec `ray start --block` here (tests)
#      VLLM_DEPLOY_IMAGE           docker: the vLLM image (the same one `vllm serve` runs from)
#      VLLM_DEPLOY_MODEL_DIR       docker, optional: host directory with the model's weights,
#      VLLM_DEPLOY_MODEL_MOUNT       mounted read-only at this container path, the path the head's
#                                  vLLM loads (its Ray workers here load the weights from it)
#      VLLM_DEPLOY_CONTAINER_ENV   docker, optional: NAME=value pairs, space-separated, for the
#                                  container (non-secret only: HF_HUB_OFFLINE=1, NCCL_*, FI_*)
#      VLLM_DEPLOY_EFA_DEVICES     docker: EFA devices to pass, n (0): /dev/infiniband/uverbs0..n-1,
#                                  --ulimit memlock=-1:-1 and /opt/amazon (libfabric, aws-ofi-nccl)
#                                  mounted read-only
#      VLLM_DEPLOY_RAY_RESOURCES   optional JSON of custom Ray resources (tests: stand-in GPUs)
#      VLLM_DEPLOY_RAY_TEMP_DIR    optional Ray --temp-dir
#      VLLM_DEPLOY_JOIN_TIMEOUT_SECONDS  worker: how long to wait for the head's port (600)
#      VLLM_DEPLOY_EFA_DEVICE_DIR, VLLM_DEPLOY_EFA_HOST_DIR  tests: /dev/infiniband, /opt/amazon
#      VLLM_DEPLOY_RAY_AUTH_TOKEN  docker, optional, secret: the cluster's Ray token (Ray's token
#                                  authentication, RAY_AUTH_MODE=token). Written to
#                                  VLLM_DEPLOY_RAY_AUTH_TOKEN_FILE (root only, 0600; default
#                                  /etc/vllm-deploy/ray-auth-token), mounted read-only into the
#                                  container and named by RAY_AUTH_TOKEN_PATH: never on a command
#                                  line, in the container's config or in a log
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

case "$launch" in
  docker | daemon | foreground) ;;
  *) die "VLLM_DEPLOY_RAY_LAUNCH=$launch is not one of docker, daemon, foreground" "leave it unset (docker) on a worker node" ;;
esac

# ray start's arguments (Ray's CLI: `ray start --help`).
args=(start --node-ip-address="$node_ip" --disable-usage-stats)
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
if [[ "$launch" != daemon ]]; then
  args+=(--block)
fi

# The interface NCCL and Gloo open their sockets on; one set by the caller is kept.
export_node_network "$name" "$node_ip" "pass this node's own private IP (ip -o -4 addr lists the host's addresses)"

# Ray's token authentication: the token as a root-only file (rewritten only when it changed),
# mounted into the container; the variable is dropped before anything else runs.
RAY_TOKEN_PATH=/run/vllm-deploy/ray-auth-token
token_file=""
if [[ -n "${VLLM_DEPLOY_RAY_AUTH_TOKEN:-}" && "$launch" == docker ]]; then
  token_file="${VLLM_DEPLOY_RAY_AUTH_TOKEN_FILE:-/etc/vllm-deploy/ray-auth-token}"
  if [[ "$(cat "$token_file" 2>/dev/null || true)" != "$VLLM_DEPLOY_RAY_AUTH_TOKEN" ]]; then
    (umask 077 && install -d -m 0700 "$(dirname "$token_file")" &&
      printf '%s' "$VLLM_DEPLOY_RAY_AUTH_TOKEN" >"$token_file.tmp" && mv "$token_file.tmp" "$token_file") ||
      die "$name: cannot write the Ray token file $token_file" "check the disk and the directory's permissions"
  fi
fi
unset VLLM_DEPLOY_RAY_AUTH_TOKEN

# Docker's run arguments, checked before anything waits or starts.
run_args=()
if [[ "$launch" == docker ]]; then
  require_env VLLM_DEPLOY_IMAGE
  # Host network: Ray and NCCL talk over the node's private IP; ipc=host: vLLM's shared memory.
  if [[ -n "$token_file" ]]; then
    run_args+=(-e RAY_AUTH_MODE=token -e "RAY_AUTH_TOKEN_PATH=$RAY_TOKEN_PATH" -v "$token_file:$RAY_TOKEN_PATH:ro")
  fi
  run_args+=(--restart unless-stopped --network host --ipc host
    -e VLLM_HOST_IP="$node_ip" -e NCCL_SOCKET_IFNAME="$NCCL_SOCKET_IFNAME"
    -e GLOO_SOCKET_IFNAME="$GLOO_SOCKET_IFNAME")
  read -ra pairs <<<"${VLLM_DEPLOY_CONTAINER_ENV:-}"
  for pair in "${pairs[@]}"; do
    [[ "$pair" =~ ^[A-Za-z_][A-Za-z0-9_]*=[^[:space:]]*$ ]] ||
      die "VLLM_DEPLOY_CONTAINER_ENV entry '$pair' is not NAME=value" \
        "pass space-separated NAME=value pairs (a name of letters, digits and _), e.g. HF_HUB_OFFLINE=1 NCCL_DEBUG=WARN"
    run_args+=(-e "$pair")
  done
  model_dir="${VLLM_DEPLOY_MODEL_DIR:-}"
  model_mount="${VLLM_DEPLOY_MODEL_MOUNT:-}"
  if [[ -n "$model_dir" || -n "$model_mount" ]]; then
    [[ -n "$model_dir" && -n "$model_mount" ]] ||
      die "VLLM_DEPLOY_MODEL_DIR and VLLM_DEPLOY_MODEL_MOUNT go together (got '$model_dir' and '$model_mount')" \
        "pass both: the host directory with the weights and the container path the head's vLLM loads"
    [[ -d "$model_dir" ]] ||
      die "$name: the model directory $model_dir (VLLM_DEPLOY_MODEL_DIR) does not exist" \
        "run this node's model download step first"
    run_args+=(-v "$model_dir:$model_mount:ro")
  fi
  efa="${VLLM_DEPLOY_EFA_DEVICES:-0}"
  [[ "$efa" =~ ^[0-9]+$ ]] ||
    die "VLLM_DEPLOY_EFA_DEVICES must be a count of EFA devices, got '$efa'" "pass 0 for none, else the node's EFA interface count"
  efa=$((10#$efa))
  if ((efa > 0)); then
    device_dir="${VLLM_DEPLOY_EFA_DEVICE_DIR:-/dev/infiniband}"
    efa_host_dir="${VLLM_DEPLOY_EFA_HOST_DIR:-/opt/amazon}"
    for ((i = 0; i < efa; i++)); do
      [[ -e "$device_dir/uverbs$i" ]] ||
        die "$name: the EFA device $device_dir/uverbs$i is missing (VLLM_DEPLOY_EFA_DEVICES=$efa)" \
          "check the instance's EFA interfaces and driver (ls $device_dir; fi_info -p efa)"
      run_args+=(--device "$device_dir/uverbs$i:/dev/infiniband/uverbs$i")
    done
    [[ -d "$efa_host_dir" ]] ||
      die "$name: $efa_host_dir (libfabric and aws-ofi-nccl) is missing" "install the EFA software on this node's AMI"
    run_args+=(--ulimit memlock=-1:-1 -v "$efa_host_dir:/opt/amazon:ro")
  fi
  run_args+=(--entrypoint ray "$VLLM_DEPLOY_IMAGE" "${args[@]}")
fi

# A worker waits for the head's port before joining: the nodes are provisioned in parallel and
# the head may still be loading. Bash's /dev/tcp: no extra tool, one connection a poll.
if [[ "$role" == worker ]]; then
  deadline=$((SECONDS + join_timeout))
  until (exec 3<>"/dev/tcp/${VLLM_DEPLOY_RAY_HEAD_IP}/${port}") 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      die "$name ($node_ip) cannot join the Ray cluster: the head ${head} did not answer in ${join_timeout}s" \
        "check that node-0's vLLM container runs its Ray head (docker logs on node-0) and that the cluster security group allows all traffic between the nodes"
    fi
    sleep 2
  done
  log "$name ($node_ip): the Ray head $head answers; joining"
fi

case "$launch" in
  foreground)
    log "$name ($node_ip, $NCCL_SOCKET_IFNAME): ray ${args[*]}"
    exec ray "${args[@]}"
    ;;
  daemon)
    # A container restart keeps its filesystem; a stale Ray of the previous run goes first.
    ray stop --force >&2 || true
    log "$name ($node_ip, $NCCL_SOCKET_IFNAME): ray ${args[*]}"
    ray "${args[@]}" >&2 || die "$name: ray start failed" "read the lines above; Ray's logs are under ${VLLM_DEPLOY_RAY_TEMP_DIR:-/tmp/ray}/session_latest/logs"
    log "$name ($node_ip): Ray $role started"
    exit 0
    ;;
esac

# The GPU request that works in the container toolkit's mode (lib.sh gpu_access_detect), asked
# of Docker only once every setting above was checked.
gpu_access_detect
run_args=("${GPU_ARGS[@]}" "${run_args[@]}")
# The image's id too: a tag pulled again (a new instance, or by hand) may name a new image, and
# the head then runs it; Ray refuses to mix versions across nodes.
image_id=$(docker image inspect --format '{{.Id}}' "$VLLM_DEPLOY_IMAGE" 2>/dev/null || true)
spec=$(printf '%s\0' "${run_args[@]}" "$image_id" | sha256sum | cut -d' ' -f1)
state=$(docker inspect --format '{{.State.Running}} {{index .Config.Labels "vllm-deploy.spec"}}' "$container" 2>/dev/null || true)
if [[ "$state" == "true $spec" ]]; then
  log "$name: the Ray container $container is already running with this launch spec"
  exit 0
fi
if [[ -n "$state" ]]; then
  log "$name: replacing the Ray container $container (its launch spec differs, or it is stopped)"
fi
docker rm -f "$container" >/dev/null 2>&1 || true
docker run -d --name "$container" --label "vllm-deploy.spec=$spec" "${run_args[@]}" >/dev/null
log "$name ($node_ip): Ray $role started in container $container"
