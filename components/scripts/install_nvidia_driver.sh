#!/usr/bin/env bash
# Installs the NVIDIA server driver from the Ubuntu archive when no working driver
# is present (plain Ubuntu hosts; the Deep Learning AMI already has one).
#
# Environment:
#   VLLM_DEPLOY_DRIVER_BRANCH       server driver branch to install (580)
#   VLLM_DEPLOY_MIN_DRIVER_VERSION  oldest acceptable driver major version (580: the
#                                   CUDA 13 vLLM images need >= 580); an older working
#                                   driver fails the step instead of being replaced
#   VLLM_DEPLOY_PCI_DEVICES_DIR     sysfs PCI device list (/sys/bus/pci/devices; for tests)
#
# Stdout: nothing when the driver works at the end, or exactly one line
#   VLLM_DEPLOY_REBOOT=scheduled boot_id=<boot id before the reboot>
# when the new kernel module can only be loaded after a reboot, which is scheduled
# a few seconds later so this command can return cleanly first.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

branch=${VLLM_DEPLOY_DRIVER_BRANCH:-580}
min_major=${VLLM_DEPLOY_MIN_DRIVER_VERSION:-580}
if [[ ! "$branch" =~ ^[0-9]{3}$ ]]; then
  die "VLLM_DEPLOY_DRIVER_BRANCH must be a driver branch number such as 580, got '$branch'" \
    "set the driver branch to a number (580 or newer for the CUDA 13 vLLM images)"
fi
if [[ ! "$min_major" =~ ^[0-9]+$ ]]; then
  die "VLLM_DEPLOY_MIN_DRIVER_VERSION must be a driver major version such as 580, got '$min_major'" \
    "set the minimum driver version to a number"
fi
if ((branch < min_major)); then
  die "driver branch $branch is older than the minimum driver version $min_major" \
    "install branch $min_major or newer (VLLM_DEPLOY_DRIVER_BRANCH), or lower VLLM_DEPLOY_MIN_DRIVER_VERSION for an older vLLM image"
fi

driver_works() {
  nvidia-smi >/dev/null 2>&1
}

# The open kernel modules: required on Blackwell, recommended by NVIDIA for Turing
# and newer, which covers every GPU the CUDA 13 vLLM images support.
driver_packages() {
  local kernel flavour prebuilt
  kernel=$(uname -r)
  flavour=${kernel#*-*-}
  prebuilt="linux-modules-nvidia-${branch}-server-open-${kernel}"
  # Prebuilt, signed modules exist only for archive kernels; a module built for
  # any other kernel ABI cannot load, so without an exact match fall back to DKMS,
  # which compiles against the running kernel's headers.
  if apt-cache show "$prebuilt" >/dev/null 2>&1; then
    printf '%s\n' "$prebuilt" "nvidia-headless-no-dkms-${branch}-server-open" "nvidia-utils-${branch}-server"
    # The flavour metapackage keeps modules in step with future kernel upgrades.
    if [[ "$flavour" != "$kernel" ]] &&
      apt-cache show "linux-modules-nvidia-${branch}-server-open-${flavour}" >/dev/null 2>&1; then
      printf '%s\n' "linux-modules-nvidia-${branch}-server-open-${flavour}"
    fi
  else
    printf '%s\n' "linux-headers-${kernel}" "nvidia-headless-${branch}-server-open" "nvidia-utils-${branch}-server"
  fi
}

# Installing a driver (and rebooting) on an instance without a GPU only delays the
# real error; PCI vendor id 0x10de is NVIDIA.
has_nvidia_gpu() {
  local vendor
  for vendor in "${VLLM_DEPLOY_PCI_DEVICES_DIR:-/sys/bus/pci/devices}"/*/vendor; do
    if [[ -r "$vendor" && "$(cat "$vendor")" == 0x10de ]]; then
      return 0
    fi
  done
  return 1
}

# Replacing a working driver that the AMI installed by other means would fight its
# packaging; an old one is reported, the fix is a newer AMI.
check_driver_version() {
  local version
  # One line per GPU; no `| head` here: under pipefail its early exit would fail the step.
  version=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null) || true
  version=${version%%$'\n'*}
  if [[ ! "$version" =~ ^([0-9]+)\. ]]; then
    die "could not read the driver version from nvidia-smi (got '$version')" "check the driver on the host: nvidia-smi"
  fi
  if ((BASH_REMATCH[1] < min_major)); then
    die "NVIDIA driver $version is older than $min_major, which the vLLM image needs" \
      "use a newer AMI (the Deep Learning Base OSS Nvidia Driver AMI ships >= 580), or a vLLM image built for this driver's CUDA"
  fi
  log "NVIDIA driver $version already working; nothing to do"
}

schedule_reboot() {
  local before
  before=$(boot_id)
  systemd-run --on-active=10s --timer-property=AccuracySec=1s systemctl reboot >&2 ||
    die "could not schedule the reboot that loads the new NVIDIA driver" \
      "reboot the host by hand (sudo systemctl reboot), then re-run pulumi up"
  log "the driver loads after a reboot; reboot scheduled in 10s"
  printf 'VLLM_DEPLOY_REBOOT=scheduled boot_id=%s\n' "$before"
}

if driver_works; then
  check_driver_version
  exit 0
fi

if ! has_nvidia_gpu; then
  die "this instance has no NVIDIA GPU on its PCI bus" \
    "choose a GPU instance type (g5, g6, g6e, p4d, p5, ...); check the sizing plan's instance type"
fi
log "no working NVIDIA driver; installing the ${branch}-server branch (open kernel modules)"
if package_installed "nvidia-utils-${branch}-server"; then
  log "driver ${branch} packages already installed (a reboot is still pending)"
else
  apt_update "for the NVIDIA driver packages"
  mapfile -t packages < <(driver_packages)
  apt_install "${packages[@]}"
fi

if modprobe nvidia >&2 && driver_works; then
  log "NVIDIA driver ${branch} loaded without a reboot"
  exit 0
fi
# Typical causes: nouveau still bound to the GPU, or an older module in the running kernel.
log "the new NVIDIA kernel module could not be loaded into the running kernel"
schedule_reboot
