#!/usr/bin/env bash
# Installs the tenants' files (serving/tenants.py: the njs module, the hash -> tenant map and
# zones, the /v1/ limits and upstream key) into the directory the nginx container includes,
# then has a running nginx check and load them: `nginx -t`, then `nginx -s reload`. vLLM is not
# touched and the container is not replaced; streams already running finish on the old workers
# (bounded by nginx.conf's worker_shutdown_timeout).
#
# Environment:
#   VLLM_DEPLOY_TENANT_FILES     base64 of a tar of the files (serving.tenants.tenant_bundle).
#                                SECRET: it holds the stack's apiKey; never printed or put on
#                                a command line (decoded from a here-string).
#   VLLM_DEPLOY_TENANT_DIR       where the files go (serving.tenants.TENANT_DIR_HOST), bind-mounted
#                                into the container; created 0700, files 0600.
#   VLLM_DEPLOY_NGINX_CONTAINER  the nginx container; reloaded only when it runs (at first
#                                deploy the files come first and the container reads them at start).
#
# The directory is the bind mount's own inode, so it is never replaced: each file is written
# beside its final name and renamed over it. If `nginx -t` rejects the new files the previous ones
# are put back and the script fails (nginx keeps serving the previous configuration).
# Idempotent: files identical to the installed ones change nothing and reload nothing.
# stdout: one line TENANTS=unchanged|installed|reloaded.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_env VLLM_DEPLOY_TENANT_FILES VLLM_DEPLOY_TENANT_DIR VLLM_DEPLOY_NGINX_CONTAINER
dir=$VLLM_DEPLOY_TENANT_DIR
container=$VLLM_DEPLOY_NGINX_CONTAINER
umask 077

mkdir -p "$dir"
chmod 0700 "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/new" "$work/old"

base64 -d <<<"$VLLM_DEPLOY_TENANT_FILES" >"$work/bundle.tar" 2>/dev/null ||
  die "VLLM_DEPLOY_TENANT_FILES is not base64 (value not shown)" \
    "pass serving.tenants.tenant_bundle(...) unchanged"
tar -x -f "$work/bundle.tar" -C "$work/new" --no-same-owner 2>/dev/null ||
  die "VLLM_DEPLOY_TENANT_FILES is not a tar of the tenants' files (value not shown)" \
    "pass serving.tenants.tenant_bundle(...) unchanged"
if [[ -n "$(find "$work/new" -mindepth 1 ! -type f -print -quit)" ]] ||
  [[ -z "$(find "$work/new" -mindepth 1 -maxdepth 1 -type f -print -quit)" ]]; then
  die "the tenants' bundle must hold plain files and at least one" \
    "pass serving.tenants.tenant_bundle(...) unchanged"
fi

# file names (no dot files) in a directory, one a line, sorted.
names() { find "$1" -mindepth 1 -maxdepth 1 -type f ! -name '.*' -printf '%f\n' | sort; }

same=1
if [[ "$(names "$work/new")" != "$(names "$dir")" ]]; then
  same=0
else
  while read -r name; do
    cmp -s "$work/new/$name" "$dir/$name" || { same=0; break; }
  done < <(names "$work/new")
fi

# replace_files FROM: make $dir's files exactly FROM's, each by an atomic rename.
replace_files() {
  local from=$1 name
  while read -r name; do
    cp "$from/$name" "$dir/.$name.tmp"
    chmod 0600 "$dir/.$name.tmp"
    mv -f "$dir/.$name.tmp" "$dir/$name"
  done < <(names "$from")
  while read -r name; do
    [[ -f "$from/$name" ]] || rm -f "$dir/$name"
  done < <(names "$dir")
}

container_running() {
  [[ "$(docker inspect --format '{{.State.Running}}' "$container" 2>/dev/null)" == true ]]
}

# nginx's own words, with every quoted token (which may quote a line of a file) hidden.
redacted() { sed -E 's/"[^"]*"/"(not shown)"/g' >&2; }

if ((same)); then
  chmod 0600 "$dir"/*
  log "the tenants' files are unchanged; nothing to reload"
  echo "TENANTS=unchanged"
  exit 0
fi

while read -r name; do cp -p "$dir/$name" "$work/old/$name"; done < <(names "$dir")
replace_files "$work/new"
log "installed the tenants' files in $dir"

if ! container_running; then
  log "container $container is not running; it reads the files when it starts"
  echo "TENANTS=installed"
  exit 0
fi

if ! docker exec "$container" nginx -t 2>&1 | redacted; then
  replace_files "$work/old"
  die "nginx -t rejected the new tenants' files; the previous ones are back and nginx still serves them" \
    "see the nginx -t output above; re-render the files with serving.tenants.tenant_files"
fi
if ! docker exec "$container" nginx -s reload 2>&1 | redacted; then
  # Put the old files back: nginx still serves them, and the next run must see a change to
  # install and reload (left in place, it would find them "unchanged" and never reload).
  replace_files "$work/old"
  die "nginx -s reload failed in container $container; the previous files are back and nginx still serves them" \
    "docker logs $container, then run pulumi up again"
fi
log "nginx reloaded: new requests use the new tenants; running streams finish on the old workers"
echo "TENANTS=reloaded"
