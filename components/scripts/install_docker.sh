#!/usr/bin/env bash
# Makes sure Docker Engine is installed (from Docker's apt repository), enabled and
# running. Hosts that already run it (the Deep Learning AMI) are left untouched.
#
# Environment (paths overridable for tests; production defaults):
#   VLLM_DEPLOY_APT_KEYRINGS_DIR  /etc/apt/keyrings
#   VLLM_DEPLOY_APT_SOURCES_DIR   /etc/apt/sources.list.d
#   VLLM_DEPLOY_DOCKER_TIMEOUT    seconds to wait for the daemon to answer (60)
#   VLLM_DEPLOY_DOCKER_USER       login user that drives Docker over SSH (pulumi-docker's
#                                 ssh:// provider); added to the docker group (ubuntu)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

keyrings_dir=${VLLM_DEPLOY_APT_KEYRINGS_DIR:-/etc/apt/keyrings}
sources_dir=${VLLM_DEPLOY_APT_SOURCES_DIR:-/etc/apt/sources.list.d}
docker_repo=https://download.docker.com/linux/ubuntu
docker_packages=(docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin)

docker_running() {
  docker info >/dev/null 2>&1
}

wait_for_daemon() {
  local timeout=${VLLM_DEPLOY_DOCKER_TIMEOUT:-60} waited=0
  until docker_running; do
    if ((waited >= timeout)); then
      die "the Docker daemon did not answer within ${timeout}s" \
        "inspect it on the host: systemctl status docker; journalctl -u docker --no-pager | tail -50"
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

start_docker() {
  systemctl enable --now docker >&2 ||
    die "could not enable and start the docker service" \
      "inspect it on the host: systemctl status docker; journalctl -u docker --no-pager | tail -50"
  wait_for_daemon
}

add_docker_repo() {
  local key="$keyrings_dir/docker.asc" list="$sources_dir/docker.list" arch codename line
  arch=$(dpkg --print-architecture)
  codename=$(os_codename)
  line="deb [arch=$arch signed-by=$key] $docker_repo $codename stable"
  install -m 0755 -d "$keyrings_dir" "$sources_dir"
  if [[ ! -s "$key" ]]; then
    download_to "$docker_repo/gpg" "$key.tmp" ||
      die "could not download Docker's apt signing key from $docker_repo/gpg" \
        "check the host's outbound HTTPS access to download.docker.com, then re-run"
    chmod a+r "$key.tmp"
    mv "$key.tmp" "$key"
  fi
  if [[ "$(cat "$list" 2>/dev/null)" != "$line" ]]; then
    printf '%s\n' "$line" >"$list"
  fi
}

# The provider runs `docker system dial-stdio` as the login user over SSH, which needs
# the engine's socket: membership of the docker group. New SSH sessions pick it up.
allow_docker_user() {
  local user=${VLLM_DEPLOY_DOCKER_USER:-ubuntu}
  if id -nG "$user" 2>/dev/null | tr ' ' '\n' | grep -qx docker; then
    return 0
  fi
  usermod -aG docker "$user" ||
    die "could not add $user to the docker group" "check that the user exists: id $user"
  log "added $user to the docker group"
}

if docker_running; then
  log "Docker is installed and running"
elif command -v docker >/dev/null; then
  log "Docker is installed but the daemon is not running; starting it"
  start_docker
  log "Docker started"
else
  log "installing Docker Engine from Docker's apt repository"
  apt_install ca-certificates curl
  add_docker_repo
  apt_update "with Docker's repository in $sources_dir/docker.list"
  apt_install "${docker_packages[@]}"
  start_docker
  log "Docker installed and running"
fi
allow_docker_user
