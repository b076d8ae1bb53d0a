#!/usr/bin/env bash
# Waits until a fresh (or freshly rebooted) host is ready for provisioning:
# cloud-init has finished and no other package manager holds the dpkg/apt locks.
#
# Environment:
#   VLLM_DEPLOY_BOOT_ID_BEFORE   optional; the boot id printed before a scheduled
#                                reboot. The step fails unless the host has rebooted.
#   VLLM_DEPLOY_CLOUD_INIT_TIMEOUT  seconds to wait for cloud-init (1800)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check_rebooted() {
  local before=$1 now
  now=$(boot_id)
  if [[ "$now" == "$before" ]]; then
    die "the host has not rebooted yet (boot id still $now)" \
      "the NVIDIA driver install scheduled a reboot; wait a minute and re-run (pulumi up), or reboot the host: sudo systemctl reboot"
  fi
  log "host rebooted (boot id $before -> $now)"
}

wait_for_cloud_init() {
  if ! command -v cloud-init >/dev/null; then
    log "cloud-init not installed; nothing to wait for"
    return 0
  fi
  local timeout=${VLLM_DEPLOY_CLOUD_INIT_TIMEOUT:-1800}
  local rc=0
  log "waiting for cloud-init to finish"
  timeout "$timeout" cloud-init status --wait >/dev/null 2>&1 || rc=$?
  case $rc in
    0) log "cloud-init finished" ;;
    # 2: finished with recoverable errors (deprecated keys and the like).
    2) log "cloud-init finished with recoverable errors; continuing (see: cloud-init status --long)" ;;
    124) die "cloud-init did not finish within ${timeout}s" \
      "inspect the host: cloud-init status --long; sudo tail /var/log/cloud-init-output.log" ;;
    *)
      cloud-init status --long >&2 || true
      die "cloud-init reported a failure (exit $rc)" \
      "inspect the host: cloud-init status --long; sudo tail /var/log/cloud-init-output.log" ;;
  esac
}

if [[ -n "${VLLM_DEPLOY_BOOT_ID_BEFORE:-}" ]]; then
  check_rebooted "$VLLM_DEPLOY_BOOT_ID_BEFORE"
fi
wait_for_cloud_init
wait_for_apt_locks
log "host ready"
