#!/usr/bin/env bash
# On a fleet's builder, between install_replica.sh and bake_cleanup.sh: serves the replica's vLLM
# so that the post-deploy benchmark (benchmark_vllm.sh) measures one replica, then takes it away.
# The container gets what boot.sh gives it on every replica (components/scripts/replica/): the
# baked argv (vllm-args.json), the baked environment (vllm.env), the model volume read-only and
# vLLM on loopback only; no restart policy (the builder is stopped next, and serves nothing).
#
#   VLLM_DEPLOY_BUILDER_ACTION=start  run the container, the API key (VLLM_API_KEY, secret)
#        in a file (0600, in a 0700 directory on tmpfs) mounted read-only into the container,
#        whose shell entrypoint exports it before `exec vllm serve`: never an argument, never
#        printed, and not in the container's configuration either (an --env-file's values land in
#        /var/lib/docker/containers/<id>/config.v2.json on the root volume the image is made of,
#        whose freed blocks a snapshot can still hold).
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
key_file=$secrets_dir/api-key
(
  umask 077
  printf '%s' "$VLLM_API_KEY" >"$key_file"
)
container_key=/run/secrets/vllm-api-key
# The image's entrypoint is `vllm serve`: the shell reads the key, then becomes it.
# shellcheck disable=SC2016 # expanded by the container's shell, not here
serve='VLLM_API_KEY=$(cat '"$container_key"') && export VLLM_API_KEY && exec vllm serve "$@"'
port=$VLLM_DEPLOY_VLLM_PORT
status=0
# The GPU request that works in the container toolkit's mode (lib.sh gpu_access_detect).
gpu_access_detect
docker run -d --name "$name" "${GPU_ARGS[@]}" --ipc host \
  -p "127.0.0.1:$port:$port" \
  --env-file "$replica_dir/vllm.env" -v "$key_file:$container_key:ro" \
  -v "$VLLM_DEPLOY_MODEL_DIR:$VLLM_DEPLOY_MODEL_MOUNT:ro" --entrypoint /bin/sh \
  --stop-timeout "$VLLM_DEPLOY_DOCKER_STOP_TIMEOUT_S" \
  --log-driver json-file --log-opt max-size=100m --log-opt max-file=5 \
  "$VLLM_DEPLOY_VLLM_IMAGE" -c "$serve" vllm-serve "${vllm_args[@]}" >/dev/null || status=$?
((status == 0)) ||
  die "docker run $name failed" "inspect: journalctl -u docker; is $VLLM_DEPLOY_VLLM_IMAGE pulled (docker images)?"
log "started $name ($VLLM_DEPLOY_VLLM_IMAGE) on 127.0.0.1:$port with the replica's argv"
printf 'VLLM_DEPLOY_BUILDER_VLLM=started\n'
