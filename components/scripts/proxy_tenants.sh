#!/usr/bin/env bash
# STAND-IN for PROXY's proxy_tenants.sh (issue 29), on branch `stack` only until PROXY's lands.
# Installs the tenants' nginx files (a base64 tar, secret) into the tenants directory and, when
# the proxy container runs, checks the config with `nginx -t` and reloads nginx; on a failed
# check the previous files are put back. Idempotent; never echoes the bundle.
#
# Environment: VLLM_DEPLOY_TENANT_FILES (secret), VLLM_DEPLOY_TENANT_DIR,
#              VLLM_DEPLOY_NGINX_CONTAINER
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_env VLLM_DEPLOY_TENANT_FILES VLLM_DEPLOY_TENANT_DIR VLLM_DEPLOY_NGINX_CONTAINER
dir=$VLLM_DEPLOY_TENANT_DIR
umask 077
mkdir -p "$dir"
staged=$(mktemp -d "$dir.new.XXXXXX")
backup=$(mktemp -d "$dir.old.XXXXXX")
trap 'rm -rf "$staged" "$backup"' EXIT
base64 -d <<<"$VLLM_DEPLOY_TENANT_FILES" | tar -x -C "$staged" --no-same-owner \
  || die "the tenants' bundle is not a base64 tar" "re-run pulumi up (the bundle is rendered by the program)"
cp -a "$dir/." "$backup/"
find "$dir" -mindepth 1 -delete
cp -a "$staged/." "$dir/"
chmod 0755 "$dir"  # nginx's workers read the files through the bind mount
if docker inspect -f '{{.State.Running}}' "$VLLM_DEPLOY_NGINX_CONTAINER" 2>/dev/null | grep -qx true; then
  if ! docker exec "$VLLM_DEPLOY_NGINX_CONTAINER" nginx -t >&2; then
    find "$dir" -mindepth 1 -delete
    cp -a "$backup/." "$dir/"
    die "nginx -t refused the new tenants' files; the previous ones are back" "check the proxy's logs"
  fi
  docker exec "$VLLM_DEPLOY_NGINX_CONTAINER" nginx -s reload >&2
  log "tenants installed in $dir; nginx reloaded"
else
  log "tenants installed in $dir; $VLLM_DEPLOY_NGINX_CONTAINER is not running (it reads them when it starts)"
fi
