#!/usr/bin/env bash
# Makes sure the NVIDIA Container Toolkit is installed and that containers reach the GPUs in
# whichever mode the toolkit runs. Needs Docker (install_docker.sh) and the driver loaded.
#   - The nvidia runtime is registered with Docker explicitly (`nvidia-ctk runtime configure
#     --runtime=docker`): `docker run --runtime=nvidia --gpus all` works in the toolkit's legacy
#     mode and in the CDI mode toolkit 1.18+ switched to, where plain `--gpus all` is refused
#     ("invoking the NVIDIA Container Runtime Hook directly ... is not supported",
#     NVIDIA/nvidia-container-toolkit#1456). Every GPU container of this program asks for it.
#   - A CDI spec for the loaded driver is kept at VLLM_DEPLOY_CDI_SPEC (`nvidia-ctk cdi
#     generate`), so `--device=nvidia.com/gpu=all` works too (Docker 25+ with CDI on); it is
#     rewritten only when the driver's devices or version changed.
# lib.sh's gpu_access_detect picks the request that works; this step logs which one that is.
# Docker is restarted only when its configuration had to change.
#
# Environment (paths overridable for tests; production defaults):
#   VLLM_DEPLOY_APT_KEYRINGS_DIR    /etc/apt/keyrings
#   VLLM_DEPLOY_APT_SOURCES_DIR     /etc/apt/sources.list.d
#   VLLM_DEPLOY_DOCKER_DAEMON_JSON  /etc/docker/daemon.json
#   VLLM_DEPLOY_CDI_SPEC            /etc/cdi/nvidia.yaml (a directory Docker scans for CDI specs)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

keyrings_dir=${VLLM_DEPLOY_APT_KEYRINGS_DIR:-/etc/apt/keyrings}
sources_dir=${VLLM_DEPLOY_APT_SOURCES_DIR:-/etc/apt/sources.list.d}
daemon_json=${VLLM_DEPLOY_DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}
cdi_spec=${VLLM_DEPLOY_CDI_SPEC:-/etc/cdi/nvidia.yaml}
nvidia_repo=https://nvidia.github.io/libnvidia-container

toolkit_installed() {
  package_installed nvidia-container-toolkit || command -v nvidia-ctk >/dev/null
}

runtime_active() {
  # Captured, not piped into `grep -q`: an early-exiting grep fails the pipe under pipefail.
  local runtimes
  runtimes=$(docker info --format '{{json .Runtimes}}' 2>/dev/null) || return 1
  [[ "$runtimes" == *'"nvidia"'* ]]
}

runtime_configured() {
  [[ -f "$daemon_json" ]] && grep -q '"nvidia"' "$daemon_json"
}

add_nvidia_repo() {
  local key="$keyrings_dir/nvidia-container-toolkit-keyring.gpg"
  local list="$sources_dir/nvidia-container-toolkit.list" line
  # Same line as NVIDIA's published nvidia-container-toolkit.list; $(ARCH) is
  # expanded by apt, not by the shell.
  # shellcheck disable=SC2016
  line='deb [signed-by='"$key"'] '"$nvidia_repo"'/stable/deb/$(ARCH) /'
  install -m 0755 -d "$keyrings_dir" "$sources_dir"
  if [[ ! -s "$key" ]]; then
    download_to "$nvidia_repo/gpgkey" "$key.asc" ||
      die "could not download NVIDIA's apt signing key from $nvidia_repo/gpgkey" \
        "check the host's outbound HTTPS access to nvidia.github.io, then re-run"
    gpg --batch --yes --dearmor -o "$key.tmp" "$key.asc" ||
      die "could not convert NVIDIA's apt signing key ($key.asc) with gpg --dearmor" \
        "check that gnupg is installed and $key.asc is a PGP public key"
    chmod a+r "$key.tmp"
    mv "$key.tmp" "$key"
    rm -f "$key.asc"
  fi
  if [[ "$(cat "$list" 2>/dev/null)" != "$line" ]]; then
    printf '%s\n' "$line" >"$list"
  fi
}

restart_docker() {
  systemctl restart docker >&2 ||
    die "could not restart docker after registering the nvidia runtime" \
      "inspect it on the host: systemctl status docker; check $daemon_json is valid JSON"
  local waited=0 timeout=${VLLM_DEPLOY_DOCKER_TIMEOUT:-60}
  until docker info >/dev/null 2>&1; do
    ((waited < timeout)) ||
      die "the Docker daemon did not come back within ${timeout}s after the restart" \
        "inspect it on the host: journalctl -u docker --no-pager | tail -50; check $daemon_json"
    sleep 1
    waited=$((waited + 1))
  done
}

# cdi_spec_current: (re)writes the CDI spec when the driver's differs from the one on disk.
# A failure is logged, not fatal: the registered runtime still serves the GPUs.
cdi_spec_current() {
  local tmp="$cdi_spec.tmp"
  install -m 0755 -d "$(dirname "$cdi_spec")"
  if ! nvidia-ctk cdi generate --output="$tmp" >/dev/null 2>"$tmp.log"; then
    log "could not generate the CDI spec ($(tail -n 1 "$tmp.log")); --device=nvidia.com/gpu=all will not resolve, --runtime=nvidia --gpus all still works"
    rm -f "$tmp" "$tmp.log"
    return 0
  fi
  rm -f "$tmp.log"
  if cmp -s "$tmp" "$cdi_spec"; then
    rm -f "$tmp"
  else
    chmod 0644 "$tmp"
    mv "$tmp" "$cdi_spec"
    log "wrote the CDI spec for the loaded driver to $cdi_spec"
  fi
}

report_access() {
  gpu_access_detect
  case "$GPU_ACCESS" in
    runtime) log "containers reach the GPUs with --runtime=nvidia --gpus all (legacy and CDI mode alike)" ;;
    cdi) log "containers reach the GPUs with --device=nvidia.com/gpu=all (CDI)" ;;
    *) die "Docker lists neither the nvidia runtime nor the CDI device nvidia.com/gpu=all" \
      "nvidia-ctk runtime configure --runtime=docker --config=$daemon_json && systemctl restart docker" ;;
  esac
}

if toolkit_installed && runtime_active; then
  cdi_spec_current
  log "NVIDIA Container Toolkit installed and its runtime registered with Docker; Docker left as it is"
  report_access
  exit 0
fi
command -v docker >/dev/null ||
  die "docker is not installed" "run install_docker.sh first"

if ! toolkit_installed; then
  log "installing the NVIDIA Container Toolkit from NVIDIA's apt repository"
  apt_install gnupg curl
  add_nvidia_repo
  apt_update "with NVIDIA's repository in $sources_dir/nvidia-container-toolkit.list"
  apt_install nvidia-container-toolkit
fi

if ! runtime_configured; then
  log "registering the nvidia runtime in $daemon_json"
  nvidia-ctk runtime configure --runtime=docker --config="$daemon_json" >&2 ||
    die "nvidia-ctk runtime configure --runtime=docker failed" \
      "check $daemon_json is valid JSON, then re-run"
fi
log "restarting docker to load the nvidia runtime"
restart_docker
runtime_active ||
  die "docker does not list the nvidia runtime after the restart" \
    "compare $daemon_json with: docker info --format '{{json .Runtimes}}'"
cdi_spec_current
report_access
log "NVIDIA Container Toolkit ready"
