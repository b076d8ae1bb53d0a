#!/usr/bin/env bash
# Bake time, on the builder (components/fleet_image.py: after install_replica.sh, before
# bake_cleanup.sh): starts vLLM once as boot.sh starts it on a replica (the same image,
# vllm-args.json, vllm.env, weights and compile cache directory of this instance type), waits for
# /health on loopback, then removes the container. The model volume's snapshot, so every replica of
# this type, then carries vLLM's torch.compile cache (serving/compile_cache.py; fleet-pitfalls P23).
# No API key: the warm-up serves on the builder's 127.0.0.1 only, and VLLM_API_KEY is outside
# vLLM's compile hash (vllm/envs.py compile_factors). Pulls the vLLM image when the builder lacks it.
# Idempotent: a second run finds the cache and starts vLLM again from it.
#
# Environment: replica.env (beside it); VLLM_DEPLOY_HEALTH_POLL_S seconds between looks (default 5).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=replica_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/replica_lib.sh"

load_replica_env
require_env VLLM_DEPLOY_VLLM_IMAGE VLLM_DEPLOY_MODEL_DIR VLLM_DEPLOY_MODEL_MOUNT VLLM_DEPLOY_VLLM_PORT \
  VLLM_DEPLOY_HEALTH_TIMEOUT_S VLLM_DEPLOY_COMPILE_CACHE_BASE VLLM_DEPLOY_COMPILE_CACHE_SUFFIX \
  VLLM_DEPLOY_COMPILE_CACHE_MOUNT
require_uint VLLM_DEPLOY_VLLM_PORT
require_uint VLLM_DEPLOY_HEALTH_TIMEOUT_S
image=$VLLM_DEPLOY_VLLM_IMAGE
name=vllm-compile-warmup
poll=${VLLM_DEPLOY_HEALTH_POLL_S:-5}

[[ -f "$VLLM_DEPLOY_MODEL_DIR/config.json" ]] ||
  die "no model at $VLLM_DEPLOY_MODEL_DIR (no config.json)" "run the model download on the builder first"
instance_type=$(imds_get instance-type) || die "IMDS gave no instance-type" "check the instance metadata service"
cache_dir=$VLLM_DEPLOY_COMPILE_CACHE_BASE/$instance_type--$VLLM_DEPLOY_COMPILE_CACHE_SUFFIX
install -d -m 0755 "$cache_dir"

if ! docker image inspect "$image" >/dev/null 2>&1; then
  log "pulling $image"
  docker pull "$image" >/dev/null || die "docker pull $image failed" "check the builder's route to the registry"
fi
args_file=$(mktemp)
python3 -c 'import json, sys; sys.stdout.write("".join(a + "\0" for a in json.load(open(sys.argv[1]))))' \
  "$REPLICA_HERE/vllm-args.json" >"$args_file" || die "cannot read $REPLICA_HERE/vllm-args.json" "re-render it with serving/replica.py"
mapfile -d '' -t vllm_args <"$args_file"
rm -f "$args_file"

if container_exists "$name"; then
  docker rm -f "$name" >/dev/null || die "docker rm -f $name failed" "inspect: docker ps -a"
fi
port=$VLLM_DEPLOY_VLLM_PORT
# The GPU request that works in the container toolkit's mode (lib.sh gpu_access_detect), as boot.sh.
gpu_access_detect
docker run -d --name "$name" "${GPU_ARGS[@]}" --ipc host -p "127.0.0.1:$port:$port" \
  --env-file "$REPLICA_HERE/vllm.env" \
  -v "$VLLM_DEPLOY_MODEL_DIR:$VLLM_DEPLOY_MODEL_MOUNT:ro" -v "$cache_dir:$VLLM_DEPLOY_COMPILE_CACHE_MOUNT" \
  "$image" "${vllm_args[@]}" >/dev/null || die "docker run $name failed" "inspect: journalctl -u docker"

deadline=$((SECONDS + VLLM_DEPLOY_HEALTH_TIMEOUT_S))
until curl -fsS --max-time 5 -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; do
  if ((SECONDS >= deadline)); then
    docker logs --tail 80 "$name" >&2 2>&1 || true
    docker rm -f "$name" >/dev/null 2>&1 || true
    die "vLLM did not answer /health within ${VLLM_DEPLOY_HEALTH_TIMEOUT_S}s on the builder" \
      "see its log above; a model that loads longer needs a longer readinessTimeoutMinutes"
  fi
  sleep "$poll"
done
docker rm -f "$name" >/dev/null || die "docker rm -f $name failed" "inspect: docker ps -a"
log "vLLM's compile cache for $instance_type is in $cache_dir"
printf 'VLLM_DEPLOY_COMPILE_CACHE=%s\n' "$cache_dir"
