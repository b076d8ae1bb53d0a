#!/usr/bin/env bash
# Shared helpers for the host provisioning steps; sourced, never run.
#
# Output contract for every step: progress, tool output and errors go to stderr;
# stdout carries only the step's result lines (KEY=value ...), so the Pulumi
# component can parse them without tripping over apt or pip chatter.
#
# Tuning knobs (environment, production defaults):
#   VLLM_DEPLOY_RETRY_ATTEMPTS  attempts for network/apt operations (5)
#   VLLM_DEPLOY_RETRY_DELAY     first back-off in seconds, doubled each time (5)
#   VLLM_DEPLOY_RETRY_MAX_DELAY back-off ceiling in seconds (60)
#   VLLM_DEPLOY_LOCK_TIMEOUT    seconds to wait for the dpkg/apt locks (900)
#   VLLM_DEPLOY_LOCK_POLL       seconds between lock checks (5)

VLLM_DEPLOY_STEP=$(basename "$0" .sh)

log() {
  printf '[vllm-deploy] %s: %s\n' "$VLLM_DEPLOY_STEP" "$*" >&2
}

# die MESSAGE [HINT]: the message names what failed, the hint what to try.
die() {
  printf '[vllm-deploy] %s: ERROR: %s\n' "$VLLM_DEPLOY_STEP" "$1" >&2
  if [[ -n "${2:-}" ]]; then
    printf '[vllm-deploy] %s: try: %s\n' "$VLLM_DEPLOY_STEP" "$2" >&2
  fi
  exit 1
}

# require_env NAME...: fail naming the first variable that is unset or empty.
require_env() {
  local name
  for name in "$@"; do
    if [[ -z "${!name:-}" ]]; then
      die "required environment variable $name is not set" \
        "pass $name to this script (the deploy component sets it via sudo --preserve-env)"
    fi
  done
}

# require_uint NAME: the variable holds a non-negative integer.
require_uint() {
  if [[ ! "${!1}" =~ ^[0-9]+$ ]]; then
    die "$1 must be a non-negative integer, got '${!1}'" "fix the value passed as $1"
  fi
}

# retry WHAT CMD...: run CMD until it succeeds, with exponential back-off.
# CMD runs in a condition context, where bash ignores `set -e`; a function passed
# here must therefore chain its commands with && or return explicitly on failure.
retry() {
  local what=$1
  shift
  local attempts=${VLLM_DEPLOY_RETRY_ATTEMPTS:-5}
  local delay=${VLLM_DEPLOY_RETRY_DELAY:-5}
  local max_delay=${VLLM_DEPLOY_RETRY_MAX_DELAY:-60}
  local attempt=1
  until "$@"; do
    if ((attempt >= attempts)); then
      log "$what failed after $attempts attempts"
      return 1
    fi
    log "$what failed (attempt $attempt of $attempts); retrying in ${delay}s"
    sleep "$delay"
    delay=$((delay * 2 > max_delay ? max_delay : delay * 2))
    attempt=$((attempt + 1))
  done
}

APT_LOCK_FILES=(
  /var/lib/dpkg/lock-frontend
  /var/lib/dpkg/lock
  /var/lib/apt/lists/lock
  /var/cache/apt/archives/lock
)

apt_locks_held() {
  # fuser exits 0 when some process has one of the files open. Without fuser
  # (psmisc) the locks read as free and apt-get's own DPkg::Lock::Timeout waits.
  fuser "${APT_LOCK_FILES[@]}" >/dev/null 2>&1
}

# Fresh Ubuntu hosts run unattended-upgrades and cloud-init package steps right
# after boot; both hold the dpkg lock for minutes.
wait_for_apt_locks() {
  local timeout=${VLLM_DEPLOY_LOCK_TIMEOUT:-900}
  local poll=${VLLM_DEPLOY_LOCK_POLL:-5}
  local waited=0
  while apt_locks_held; do
    if ((waited >= timeout)); then
      die "the dpkg/apt locks are still held after ${timeout}s" \
        "see which process holds them: sudo fuser -v ${APT_LOCK_FILES[*]}; wait for it (often unattended-upgrades) and re-run"
    fi
    if ((waited == 0)); then
      log "waiting for another package manager to release the dpkg/apt locks"
    fi
    sleep "$poll"
    waited=$((waited + poll))
  done
}

# apt_get ARGS...: non-interactive apt-get that waits for the locks and retries.
apt_get() {
  wait_for_apt_locks
  retry "apt-get $1" env DEBIAN_FRONTEND=noninteractive apt-get -y -q \
    -o DPkg::Lock::Timeout="${VLLM_DEPLOY_LOCK_TIMEOUT:-900}" \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "$@" >&2
}

# apt_update [WHY]: refresh the package lists (again after adding a repository).
APT_UPDATED=0
apt_update() {
  apt_get update ||
    die "apt-get update failed${1:+ ($1)}" \
      "check the host's network access to the package repositories and the files in /etc/apt/sources.list.d, then re-run"
  APT_UPDATED=1
}

# apt_install PKG...: install the packages not yet installed; a no-op when all are.
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    package_installed "$pkg" || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  # Fresh cloud images ship without package lists.
  if ((APT_UPDATED == 0)); then
    apt_update "before installing ${missing[*]}"
  fi
  log "installing ${missing[*]}"
  apt_get install "${missing[@]}" ||
    die "apt-get install ${missing[*]} failed" \
      "check the host's network and apt sources (sudo apt-get update), then re-run"
}

package_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# download_to URL FILE: fetch over HTTPS with retries.
download_to() {
  retry "download of $1" curl -fsSL --connect-timeout 20 --retry 2 -o "$2" "$1"
}

os_codename() {
  local os_release=${VLLM_DEPLOY_OS_RELEASE:-/etc/os-release}
  local codename
  codename=$(sed -n 's/^VERSION_CODENAME=//p' "$os_release" | tr -d '"')
  [[ -n "$codename" ]] || die "no VERSION_CODENAME in $os_release" "this step supports Ubuntu 22.04/24.04 hosts"
  printf '%s\n' "$codename"
}

boot_id() {
  local file=${VLLM_DEPLOY_BOOT_ID_FILE:-/proc/sys/kernel/random/boot_id}
  [[ -r "$file" ]] || die "cannot read the boot id from $file" "is this a Linux host?"
  cat "$file"
}

# interface_of_ip IP: prints the name of this host's network interface that holds the IPv4
# address IP (an address assigned to it, or on a loopback interface any address in its prefix:
# the kernel answers for all of 127.0.0.0/8 on lo). Reads `ip -o -4 addr` where iproute2 is
# installed (the host), else asks the kernel with python3's ioctls (the vLLM image has python3,
# not iproute2). Returns 1, printing nothing, when no interface holds IP.
interface_of_ip() {
  local want=$1 found
  if command -v ip >/dev/null 2>&1; then
    found=$(ip -o -4 addr show | awk -v want="$want" '
      function num(a, p) { split(a, p, "."); return ((p[1] * 256 + p[2]) * 256 + p[3]) * 256 + p[4] }
      {
        split($4, cidr, "/")
        if (cidr[1] == want) { print $2; exit }
        if ($2 == "lo" || $0 ~ / scope host /) {
          size = 2 ^ (32 - cidr[2])
          if (int(num(cidr[1]) / size) == int(num(want) / size)) { lo = $2 }
        }
      }
      END { if (lo != "") print lo }' | head -n 1)
  else
    found=$(python3 - "$want" <<'PY'
import fcntl, ipaddress, socket, struct, sys
want = ipaddress.IPv4Address(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def ioctl(name, request):
    return fcntl.ioctl(s.fileno(), request, struct.pack("256s", name[:15].encode()))
loopback = None
for _, name in socket.if_nameindex():
    try:  # SIOCGIFADDR, SIOCGIFNETMASK, SIOCGIFFLAGS (linux/sockios.h); IFF_LOOPBACK = 0x8
        addr = ipaddress.IPv4Address(ioctl(name, 0x8915)[20:24])
        mask = ipaddress.IPv4Address(ioctl(name, 0x891B)[20:24])
        flags = struct.unpack("H", ioctl(name, 0x8913)[16:18])[0]
    except OSError:
        continue  # no IPv4 address on this interface
    if addr == want:
        print(name)
        sys.exit(0)
    if flags & 0x8 and want in ipaddress.IPv4Network(f"{addr}/{mask}", strict=False):
        loopback = name
if loopback:
    print(loopback)
PY
)
  fi
  [[ -n "$found" ]] || return 1
  printf '%s\n' "$found"
}

# export_node_network NAME IP HINT: VLLM_HOST_IP=IP for vLLM, and NCCL_SOCKET_IFNAME /
# GLOO_SOCKET_IFNAME = the interface that holds IP (one the caller set is kept), as vLLM's
# multi-node docs ask (docs/usage/troubleshooting.md, "Incorrect network setup"). Fails naming
# NAME and IP, with HINT, when no interface holds IP.
export_node_network() {
  local iface
  iface=$(interface_of_ip "$2") ||
    die "$1: no network interface of this host holds VLLM_DEPLOY_NODE_IP=$2" "$3"
  export VLLM_HOST_IP="$2"
  export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-$iface}"
  export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-$iface}"
}

# gpu_access_detect: sets GPU_ARGS (an array) to the `docker run` arguments that give a container
# every GPU on this host, whichever mode the NVIDIA Container Toolkit runs in:
#   --runtime=nvidia --gpus all   the nvidia runtime is registered with Docker (daemon.json, by
#                                 `nvidia-ctk runtime configure --runtime=docker`): works in the
#                                 toolkit's legacy mode and in its CDI mode (1.18+), where the
#                                 runtime injects the devices itself;
#   --device=nvidia.com/gpu=all   no nvidia runtime, but Docker discovered the CDI device (a spec
#                                 from `nvidia-ctk cdi generate` in /etc/cdi or /var/run/cdi);
#   --gpus all                    neither: Docker's own GPU request, which calls the toolkit's
#                                 hook directly; toolkit 1.18+ in CDI mode refuses it ("invoking
#                                 the NVIDIA Container Runtime Hook directly (e.g. specifying the
#                                 docker --gpus flag) is not supported", NVIDIA/nvidia-container-
#                                 toolkit#1456), which gpu_access_hint explains.
# and GPU_ACCESS to runtime, cdi or hook. Reads `docker info`; never fails.
# shellcheck disable=SC2034  # GPU_ARGS and GPU_ACCESS are read by the scripts that source this
gpu_access_detect() {
  local runtimes devices
  runtimes=$(docker info --format '{{json .Runtimes}}' 2>/dev/null) || runtimes=""
  devices=$(docker info --format '{{json .DiscoveredDevices}}' 2>/dev/null) || devices=""
  if [[ "$runtimes" == *'"nvidia"'* ]]; then
    GPU_ACCESS=runtime
    GPU_ARGS=(--runtime=nvidia --gpus all)
  elif [[ "$devices" == *'"nvidia.com/gpu=all"'* ]]; then
    GPU_ACCESS=cdi
    GPU_ARGS=(--device=nvidia.com/gpu=all)
  else
    GPU_ACCESS=hook
    GPU_ARGS=(--gpus all)
  fi
}

# gpu_access_hint OUTPUT: the fix for the GPU-access failure `docker run` printed in OUTPUT,
# naming the command that changes the state the error names (never "re-run" a step that
# already found nothing to do).
gpu_access_hint() {
  local out=$1 configure="nvidia-ctk runtime configure --runtime=docker && systemctl restart docker"
  local generate="nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"
  if [[ "$out" == *"NVIDIA Container Runtime Hook directly"* || "$out" == *"requested mode 'cdi'"* ]]; then
    printf '%s' "the NVIDIA Container Toolkit runs in CDI mode and refuses docker's --gpus without its runtime: register the runtime ($configure; docker info then lists the nvidia runtime) or generate the CDI spec ($generate) and request --device=nvidia.com/gpu=all; install_container_toolkit.sh does both"
  elif [[ "$out" == *"unresolvable CDI devices"* ]]; then
    printf '%s' "Docker has no CDI spec for nvidia.com/gpu (missing, or written for another driver version): $generate, then docker info lists nvidia.com/gpu=all under Discovered Devices"
  elif [[ "$out" == *'could not select device driver'* ]]; then
    printf '%s' "Docker knows no NVIDIA GPU driver: install the toolkit and register its runtime ($configure)"
  elif [[ "$out" == *"NVIDIA-SMI has failed"* || "$out" == *"driver"*"not loaded"* ]]; then
    printf '%s' "the NVIDIA driver does not answer: on the host run nvidia-smi; modprobe nvidia; or reboot if a driver update is pending (install_nvidia_driver.sh)"
  else
    printf '%s' "on the host check: nvidia-smi; docker info --format '{{json .Runtimes}}'; $configure"
  fi
}
