#!/usr/bin/env bash
# On a fleet's builder, between install_replica.sh and bake_cleanup.sh: serves the replica's vLLM
# so that the post-deploy benchmark (benchmark_vllm.sh) measures one replica, then takes it away.
# The container gets what boot.sh gives it on every replica (components/scripts/replica/): the
# baked argv (vllm-args.json), the baked environment (vllm.env), the model volume read-only and
# vLLM on loopback only; no restart policy (the builder is stopped next, and serves nothing).
#
#   VLLM_DEPLOY_BUILDER_ACTION=start  run the container, the API key (VLLM_API_KEY, secret)
#        through an env file (0600, in a 0700 directory on tmpfs) removed once `docker run` has
#        read it: never an argument, never printed, never on the root volume the image is made of.
#   VLLM_DEPLOY_BUILDER_ACTION=stop   `docker stop` with the replica's stop timeout (vLLM's
#        --shutdown-timeout below it), remove the container and the env file's directory.
#        bake_cleanup.sh then checks that no container remains.
# Both are idempotent: start replaces a container of the same name; stop with none is a no-op.
#
# Environment: VLLM_DEPLOY_BUILDER_ACTION; VLLM_DEPLOY_REPLICA_DIR (/opt/vllm-deploy/replica:
# replica.env and replica_lib.sh there); VLLM_DEPLOY_CONTAINER (vllm-builder);
# VLLM_DEPLOY_BUILDER_SECRETS_DIR (/run/vllm-deploy-builder); VLLM_API_KEY (start).
# Stdout: VLLM_DEPLOY_BUILDER_VLLM=started|stopped
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

action=${VLLM_DEPLOY_BUILDER_ACTION:-}
replica_dir=${VLLM_DEPLOY_REPLICA_DIR:-/opt/vllm-deploy/replica}
name=${VLLM_DEPLOY_CONTAINER:-vllm-builder}
secrets_dir=${VLLM_DEPLOY_BUILDER_SECRETS_DIR:-/run/vllm-deploy-builder}
[[ "$action" == start || "$action" == stop ]] ||
  die "VLLM_DEPLOY_BUILDER_ACTION must be start or stop, got '${action}'" "run this step from components/fleet_image.py"
[[ -r "$replica_dir/replica_lib.sh" ]] ||
  die "no replica files in $replica_dir" "run install_replica.sh first (the replica-install step)"
# shellcheck source=replica/replica_lib.sh
source "$replica_dir/replica_lib.sh"
load_replica_env
require_env VLLM_DEPLOY_VLLM_IMAGE VLLM_DEPLOY_MODEL_DIR VLLM_DEPLOY_MODEL_MOUNT VLLM_DEPLOY_VLLM_PORT \
  VLLM_DEPLOY_DOCKER_STOP_TIMEOUT_S
require_uint VLLM_DEPLOY_VLLM_PORT
require_uint VLLM_DEPLOY_DOCKER_STOP_TIMEOUT_S

if [[ "$action" == stop ]]; then
  if docker container inspect "$name" >/dev/null 2>&1; then
    docker stop -t "$VLLM_DEPLOY_DOCKER_STOP_TIMEOUT_S" "$name" >/dev/null ||
      log "docker stop $name failed; removing it by force"
    docker rm -f "$name" >/dev/null || die "docker rm -f $name failed" "inspect: docker ps -a"
    log "stopped and removed $name"
  fi
  rm -rf "$secrets_dir"
  printf 'VLLM_DEPLOY_BUILDER_VLLM=stopped\n'
  exit 0
fi

require_env VLLM_API_KEY
if [[ "$VLLM_API_KEY" == *[[:space:]]* ]]; then
  die "the API key holds whitespace" "use the stack's generated key, or one without spaces"
fi
[[ -f "$VLLM_DEPLOY_MODEL_DIR/config.json" ]] ||
  die "no model at $VLLM_DEPLOY_MODEL_DIR (no config.json)" "the model download step puts it there; re-run pulumi up"
read_vllm_args "$replica_dir/vllm-args.json"

if docker container inspect "$name" >/dev/null 2>&1; then
  docker rm -f "$name" >/dev/null || die "docker rm -f $name failed" "inspect: docker ps -a"
fi
install -d -m 0700 "$secrets_dir"
key_file=$secrets_dir/api-key.env
(
  umask 077
  printf 'VLLM_API_KEY=%s\n' "$VLLM_API_KEY" >"$key_file"
)
port=$VLLM_DEPLOY_VLLM_PORT
status=0
# The GPU request that works in the container toolkit's mode (lib.sh gpu_access_detect).
gpu_access_detect
docker run -d --name "$name" "${GPU_ARGS[@]}" --ipc host \
  -p "127.0.0.1:$port:$port" \
  --env-file "$key_file" --env-file "$replica_dir/vllm.env" \
  -v "$VLLM_DEPLOY_MODEL_DIR:$VLLM_DEPLOY_MODEL_MOUNT:ro" \
  --stop-timeout "$VLLM_DEPLOY_DOCKER_STOP_TIMEOUT_S" \
  --log-driver json-file --log-opt max-size=100m --log-opt max-file=5 \
  "$VLLM_DEPLOY_VLLM_IMAGE" "${vllm_args[@]}" >/dev/null || status=$?
rm -f "$key_file" # docker read it at `run`; nothing of the key stays on disk
((status == 0)) ||
  die "docker run $name failed" "inspect: journalctl -u docker; is $VLLM_DEPLOY_VLLM_IMAGE pulled (docker images)?"
log "started $name ($VLLM_DEPLOY_VLLM_IMAGE) on 127.0.0.1:$port with the replica's argv"
printf 'VLLM_DEPLOY_BUILDER_VLLM=started\n'
