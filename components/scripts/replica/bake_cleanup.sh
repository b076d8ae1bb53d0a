#!/usr/bin/env bash
# Bake time, last step on the builder before it is stopped and imaged (fleet-pitfalls.md P9):
# nothing from its provisioning may reach the image. Removes
#   - every container (a container restored from the image would start before boot.sh, with the
#     builder's key in its environment, and hold the GPU);
#   - the SSH authorized keys provisioning used (each replica gets the launch template's key, or
#     none, from cloud-init at its first boot);
#   - any secret or rendered TLS file: the API key's env file, the replica certificate and key,
#     the drain flags, a Hugging Face token cache, Docker registry credentials, the tenants'
#     nginx files (issue 29: key hashes and the upstream key; a replica reads them from SSM);
# then checks, and FAILS naming what remains. Idempotent. Images stay (that is the bake).
#
# Environment (tests override): VLLM_DEPLOY_ROOTFS, a prefix for every path below (default /).
# Stdout: VLLM_DEPLOY_BAKE_CLEAN=ok
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=${VLLM_DEPLOY_ROOTFS:-}
root=${root%/}
shopt -s nullglob
secret_paths() {
  printf '%s\n' \
    "$root/run/vllm-deploy-secrets" "$root/etc/vllm-deploy/tls" "$root/run/vllm-deploy/draining" \
    "$root/run/vllm-deploy/drained" "$root/root/.docker/config.json" \
    "$root/root/.cache/huggingface/token" "$root/root/.ssh/authorized_keys" \
    "$root/run/vllm-deploy-tenants" "$root/etc/vllm-deploy/proxy-tenants"
  local home
  for home in "$root"/home/*; do
    printf '%s\n' "$home/.ssh/authorized_keys" "$home/.docker/config.json" \
      "$home/.cache/huggingface/token"
  done
}

containers=$(docker ps -aq) || die "docker ps failed" "is Docker running? systemctl status docker"
if [[ -n "$containers" ]]; then
  log "removing $(wc -w <<<"$containers") container(s)"
  # shellcheck disable=SC2086 # one id per word
  docker rm -f $containers >/dev/null || log "docker rm -f reported a failure"
fi
while IFS= read -r path; do
  if [[ -e "$path" || -L "$path" ]]; then
    rm -rf -- "$path"
    log "removed ${path#"$root"}"
  fi
done < <(secret_paths)

left=()
remaining=$(docker ps -aq) || die "docker ps failed after the cleanup" "is Docker running?"
[[ -z "$remaining" ]] || left+=("containers: $(tr '\n' ' ' <<<"$remaining")")
while IFS= read -r path; do
  if [[ -e "$path" || -L "$path" ]]; then
    left+=("${path#"$root"}")
  fi
done < <(secret_paths)
if ((${#left[@]})); then
  die "the builder still holds what must not reach the image: ${left[*]}" \
    "remove it by hand (docker rm -f ...; rm -rf ...) and re-run; do not image this builder until this passes"
fi
log "no container, authorized key or secret file left"
printf 'VLLM_DEPLOY_BAKE_CLEAN=ok\n'
