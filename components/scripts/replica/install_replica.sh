#!/usr/bin/env bash
# Bake time, on the builder: installs the replica's files (serving/replica.py's replica_files,
# uploaded beside this script) under $VLLM_DEPLOY_REPLICA_DIR and its systemd units, and enables
# them so every instance launched from the image runs boot.sh at boot and watches its lifecycle.
# Starts nothing: the builder serves nothing and keeps no container (bake_cleanup.sh checks).
# Idempotent: files are rewritten only when they differ; units are enabled again (a no-op).
#
# Environment (tests override):
#   VLLM_DEPLOY_REPLICA_DIR  /opt/vllm-deploy/replica
#   VLLM_DEPLOY_SYSTEMD_DIR  /etc/systemd/system
#   VLLM_DEPLOY_FSTAB        /etc/fstab
# Stdout: VLLM_DEPLOY_REPLICA_INSTALLED=<files installed or updated>
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dest=${VLLM_DEPLOY_REPLICA_DIR:-/opt/vllm-deploy/replica}
systemd_dir=${VLLM_DEPLOY_SYSTEMD_DIR:-/etc/systemd/system}
units=(vllm-replica.service vllm-replica-lifecycle.service)
# Tenant mode (issue 29): installed always, the timer enabled only when replica.env names the
# tenants' parameter (tenant_sync.sh is a no-op without it anyway).
tenant_units=(vllm-replica-tenants.service vllm-replica-tenants.timer)
files=(replica.env vllm.env vllm-args.json nginx/nginx.conf lib.sh replica_lib.sh boot.sh
  lifecycle_watch.sh drain.sh install_replica.sh bake_cleanup.sh spot_drain.sh tenant_sync.sh
  "${units[@]}" "${tenant_units[@]}")

for file in "${files[@]}"; do
  [[ -f "$here/$file" ]] || die "$here/$file is missing" \
    "upload every file serving/replica.py's replica_files() returns, then run this script from that directory"
done
if grep -qi 'api_key=\|VLLM_API_KEY=' "$here/replica.env" "$here/vllm.env"; then
  die "a settings file carries an API key" "the key is read from SSM at boot; re-render with serving/replica.py"
fi

changed=0
# put SOURCE DEST MODE: copy when the content or mode differs.
put() {
  if [[ "$1" -ef "$2" ]]; then
    chmod "$3" "$2"
    return 0
  fi
  if ! cmp -s "$1" "$2" 2>/dev/null; then
    install -D -m "$3" "$1" "$2.tmp"
    mv "$2.tmp" "$2"
    changed=$((changed + 1))
  fi
  chmod "$3" "$2"
}

# With monitoring on, the CloudWatch agent's config and scrape file (serving/monitoring/cloudwatch.py).
for file in cloudwatch/agent.json cloudwatch/prometheus.yaml; do
  [[ -f "$here/$file" ]] && files+=("$file")
done
install -d -m 0755 "$dest" "$dest/nginx"
for file in "${files[@]}"; do
  mode=0644
  [[ "$file" == *.sh ]] && mode=0755
  put "$here/$file" "$dest/$file" "$mode"
done
for unit in "${units[@]}" "${tenant_units[@]}"; do
  sed "s#@REPLICA_DIR@#$dest#g" "$dest/$unit" >"$dest/$unit.rendered"
  put "$dest/$unit.rendered" "$systemd_dir/$unit" 0644
  rm -f "$dest/$unit.rendered"
done
# The model volume reaches a replica from the image's snapshot as a new EBS volume with a new
# id, so the builder's fstab line (mount_model_volume.sh: the volume-id link) would match no
# device there: a replica mounts it by the filesystem label mount_model_volume.sh gave it.
fstab=${VLLM_DEPLOY_FSTAB:-/etc/fstab}
fstab_mark="# vllm-deploy model volume"
if [[ -f "$fstab" ]] && grep -qF -- "$fstab_mark" "$fstab"; then
  sed -E "/$fstab_mark\$/ s#^[^[:space:]]+[[:space:]]#LABEL=vllm-models #" "$fstab" >"$fstab.vllm-deploy.tmp"
  if ! cmp -s "$fstab" "$fstab.vllm-deploy.tmp"; then
    mv "$fstab.vllm-deploy.tmp" "$fstab"
    changed=$((changed + 1))
    log "fstab mounts the model volume by its label (LABEL=vllm-models) on replicas"
  else
    rm -f "$fstab.vllm-deploy.tmp"
  fi
else
  die "no model volume line in $fstab" "run mount_model_volume.sh on the builder before install_replica.sh"
fi
systemctl daemon-reload
for unit in "${units[@]}"; do
  systemctl enable "$unit" >&2 || die "systemctl enable $unit failed" "inspect: systemctl status $unit"
done
if grep -q '^VLLM_DEPLOY_TENANT_PARAMETER=' "$dest/replica.env"; then
  systemctl enable vllm-replica-tenants.timer >&2 ||
    die "systemctl enable vllm-replica-tenants.timer failed" "inspect: systemctl status vllm-replica-tenants.timer"
  units+=(vllm-replica-tenants.timer)
else
  systemctl disable vllm-replica-tenants.timer >&2 2>/dev/null || true
fi
log "installed into $dest; ${units[*]} enabled (they start at the next boot)"
printf 'VLLM_DEPLOY_REPLICA_INSTALLED=%s\n' "$changed"
