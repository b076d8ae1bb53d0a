#!/usr/bin/env bash
# Every minute on a replica in tenant mode (vllm-replica-tenants.timer, issue 29): reads the
# tenants' files parameter (replica.env VLLM_DEPLOY_TENANT_PARAMETER) and, when its value changed
# since the last install (SHA-256), installs the new files on tmpfs, checks them with `nginx -t`
# in the nginx container and reloads it. A reload starts new workers with the new keys and
# limits; old workers finish their streams, up to the config's worker_shutdown_timeout
# (fleet-pitfalls.md P24). vLLM is never touched. If nginx -t refuses the files, the old ones are
# put back, nginx keeps serving them, and that value is not tried again until the parameter
# changes; the unit fails so `systemctl --failed` shows it.
# A no-op without tenants (no parameter in replica.env) and before boot.sh installed the first
# version (a warm-pool instance, a boot in progress). Never prints the value or a file's content
# (nginx -t's messages are shown with their quoted words masked). Idempotent.
#
# Stdout: VLLM_DEPLOY_TENANTS=unchanged|reloaded|installed (installed: no nginx to reload yet)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=replica_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/replica_lib.sh"

load_replica_env
if [[ -z "${VLLM_DEPLOY_TENANT_PARAMETER:-}" ]]; then
  log "no tenants on this replica (replica.env names no tenant parameter): nothing to do"
  exit 0
fi
require_env VLLM_DEPLOY_REGION VLLM_DEPLOY_TENANT_RUN_DIR VLLM_DEPLOY_NGINX_CONTAINER
run=$VLLM_DEPLOY_TENANT_RUN_DIR
proxy=$VLLM_DEPLOY_NGINX_CONTAINER
if [[ ! -s "$run/value.sha256" ]]; then
  log "the tenants' files are not installed yet (boot.sh installs the first version): nothing to do"
  exit 0
fi
# One install at a time (a slow run and the next timer tick).
exec 9>"$run/lock"
flock 9

sha=$(tenant_fetch "$run/incoming") || die "cannot read the tenants' files from $VLLM_DEPLOY_TENANT_PARAMETER; nginx keeps the files it has" \
  "see the error above; the instance profile may read that parameter"
if [[ "$sha" == "$(cat "$run/value.sha256")" ]]; then
  rm -f -- "$run/incoming"
  printf 'VLLM_DEPLOY_TENANTS=unchanged\n'
  exit 0
fi
if [[ -f "$run/rejected.sha256" && "$sha" == "$(cat "$run/rejected.sha256")" ]]; then
  rm -f -- "$run/incoming"
  die "the parameter still holds the tenants' files nginx -t refused; nginx keeps serving the previous ones" \
    "fix apiKeys and run pulumi up (the next value is tried within a minute)"
fi
tenant_unpack "$run/incoming" "$run/staging" || {
  rm -f -- "$run/incoming"
  die "$VLLM_DEPLOY_TENANT_PARAMETER does not hold the tenants' files (base64 of a gzip'd tar of plain names); nginx keeps the files it has" \
    "pulumi up writes it from apiKeys; run it again"
}
rm -f -- "$run/incoming"
tenant_swap "$run/staging"

if ! container_exists "$proxy"; then
  printf '%s\n' "$sha" >"$run/value.sha256"
  log "installed the new tenants' files; no $proxy container to reload (boot.sh starts it with them)"
  printf 'VLLM_DEPLOY_TENANTS=installed\n'
  exit 0
fi
if ! checked=$(docker exec "$proxy" nginx -t 2>&1); then
  tenant_restore
  if ! grep -q 'test failed' <<<"$checked"; then
    # Docker could not run nginx -t (the container restarting, the daemon busy): not nginx's
    # verdict on the files, so the same value is tried again on the next tick.
    die "could not run nginx -t in $proxy ($(head -n 1 <<<"$checked" | sed -E 's/"[^"]*"/"..."/g' | head -c 200)); the previous tenants' files are back, the new ones are tried again within a minute" \
      "docker ps -a --filter name=$proxy; journalctl -u docker"
  fi
  printf '%s\n' "$sha" >"$run/rejected.sha256"
  log "nginx -t: $(sed -E 's/"[^"]*"/"..."/g; s/'"'"'[^'"'"']*'"'"'/'"'"'...'"'"'/g' <<<"$checked" | head -c 1000)"
  die "nginx -t refused the new tenants' files: the previous ones are back and $proxy was not reloaded" \
    "check serving/tenants.py's rendering of apiKeys; pulumi up with a fix is picked up within a minute"
fi
docker exec "$proxy" nginx -s reload >/dev/null 2>&1 || {
  tenant_restore
  die "nginx -s reload failed in $proxy; the previous tenants' files are back" "inspect: docker logs $proxy"
}
printf '%s\n' "$sha" >"$run/value.sha256"
rm -f -- "$run/rejected.sha256"
log "new tenants' files from $VLLM_DEPLOY_TENANT_PARAMETER: nginx reloaded (old workers finish their streams)"
printf 'VLLM_DEPLOY_TENANTS=reloaded\n'
