#!/usr/bin/env bash
# Makes sure a cluster node can use its Elastic Fabric Adapters from the vLLM container: the EFA
# userspace (libfabric with the efa provider, in /opt/amazon/efa) and AWS's NCCL net plugin
# (aws-ofi-nccl, in /opt/amazon/ofi-nccl) are on the host, and the EFA devices the instance was
# launched with are there. The Deep Learning AMIs ship both under /opt/amazon; a plain Ubuntu host
# gets them from AWS's EFA installer, whose signature is checked first against the key fingerprint
# AWS publishes (EC2 User Guide, "Get started with EFA and NCCL", step 5). The container mounts
# /opt/amazon read-only and gets the /dev/infiniband/uverbs* devices (serving/cluster_network.py).
#
# Environment:
#   VLLM_DEPLOY_EFA_INTERFACES    EFA interfaces the instance was launched with (required; 0 =
#                                 none, nothing to check)
#   VLLM_DEPLOY_EFA_PREFIX        where the EFA software lives (/opt/amazon; for tests)
#   VLLM_DEPLOY_EFA_DEVICE_DIR    where the EFA verbs devices appear (/dev/infiniband; for tests)
#   VLLM_DEPLOY_EFA_INSTALLER_URL the installer tarball
#                                 (https://efa-installer.amazonaws.com/aws-efa-installer-latest.tar.gz;
#                                 its signature is the same URL + .sig)
#   VLLM_DEPLOY_EFA_KEY_URL       AWS's EFA signing key
#                                 (https://efa-installer.amazonaws.com/aws-efa-installer.key)
#   VLLM_DEPLOY_EFA_WORK_DIR      scratch directory for the download (/var/tmp/vllm-deploy-efa)
#
# Stdout: one line, EFA_DEVICES=<n>: the EFA devices libfabric's efa provider reports
# (`fi_info -p efa -t FI_EP_RDM`, one domain "<device>-rdm" per device), at least the expected count.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# "4E90 91BC BB97 A96B 26B1 5E59 A054 80B1 DD2D 3CCC": the fingerprint of the EFA installer's signing
# key, as the EC2 User Guide prints it (efa-start-nccl.html, step 5.3).
EFA_KEY_FINGERPRINT=4E9091BCBB97A96B26B15E59A05480B1DD2D3CCC

require_env VLLM_DEPLOY_EFA_INTERFACES
require_uint VLLM_DEPLOY_EFA_INTERFACES
expected=$((10#$VLLM_DEPLOY_EFA_INTERFACES))
prefix=${VLLM_DEPLOY_EFA_PREFIX:-/opt/amazon}
device_dir=${VLLM_DEPLOY_EFA_DEVICE_DIR:-/dev/infiniband}
installer_url=${VLLM_DEPLOY_EFA_INSTALLER_URL:-https://efa-installer.amazonaws.com/aws-efa-installer-latest.tar.gz}
key_url=${VLLM_DEPLOY_EFA_KEY_URL:-https://efa-installer.amazonaws.com/aws-efa-installer.key}
work_dir=${VLLM_DEPLOY_EFA_WORK_DIR:-/var/tmp/vllm-deploy-efa}

if ((expected == 0)); then
  log "no EFA interfaces on this instance; NCCL uses TCP sockets"
  printf 'EFA_DEVICES=0\n'
  exit 0
fi

fi_info_path() {
  if [[ -x "$prefix/efa/bin/fi_info" ]]; then
    printf '%s\n' "$prefix/efa/bin/fi_info"
  else
    command -v fi_info
  fi
}

# The plugin's file: EFA installer 1.44.0 and later put it in ofi-nccl/lib, earlier ones on
# Debian/Ubuntu in ofi-nccl/lib/x86_64-linux-gnu.
nccl_plugin_path() {
  local candidate
  for candidate in "$prefix/ofi-nccl/lib/libnccl-net-ofi.so" \
    "$prefix/ofi-nccl/lib/x86_64-linux-gnu/libnccl-net-ofi.so"; do
    if [[ -e "$candidate" ]]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

efa_software_present() {
  fi_info_path >/dev/null 2>&1 && nccl_plugin_path >/dev/null
}

# fi_info prints one entry per EFA device (and per fabric flavour of it); count the distinct
# domains, "<device>-rdm": efa_0-rdm in AWS's examples, rdmap16s27-rdm where udev names RDMA devices.
count_fi_devices() {
  local fi_info output
  fi_info=$(fi_info_path) || return 1
  output=$("$fi_info" -p efa -t FI_EP_RDM 2>/dev/null) || {
    printf '0\n'
    return 0
  }
  # Captured, not piped from fi_info: an early-exiting reader fails the pipe under pipefail.
  printf '%s\n' "$output" | sed -n 's/^[[:space:]]*domain:[[:space:]]*\([^[:space:]]*\)-rdm[[:space:]]*$/\1/p' |
    sort -u | wc -l | tr -d ' '
}

count_verbs_devices() {
  local count=0 path
  for path in "$device_dir"/uverbs*; do
    [[ -e "$path" ]] && count=$((count + 1))
  done
  printf '%s\n' "$count"
}

fetch_installer() {
  local key="$work_dir/aws-efa-installer.key" tarball="$work_dir/aws-efa-installer.tar.gz"
  local gnupg="$work_dir/gnupg" fingerprints status
  download_to "$key_url" "$key" ||
    die "could not download the EFA installer's signing key from $key_url" \
      "check the host's outbound HTTPS access to efa-installer.amazonaws.com, then re-run"
  download_to "$installer_url" "$tarball" ||
    die "could not download the EFA installer from $installer_url" \
      "check the host's outbound HTTPS access to efa-installer.amazonaws.com, then re-run"
  download_to "$installer_url.sig" "$tarball.sig" ||
    die "could not download the EFA installer's signature from $installer_url.sig" \
      "check the host's outbound HTTPS access to efa-installer.amazonaws.com, then re-run"
  # A keyring of its own: only AWS's key can vouch for the tarball.
  rm -rf "$gnupg"
  install -m 0700 -d "$gnupg"
  gpg --homedir "$gnupg" --batch --quiet --import "$key" >&2 ||
    die "could not import the EFA installer's signing key ($key)" \
      "check that gnupg is installed and $key_url serves a PGP public key"
  fingerprints=$(gpg --homedir "$gnupg" --batch --with-colons --fingerprint 2>/dev/null) ||
    die "could not read the fingerprint of the EFA installer's signing key" \
      "check that gnupg works: gpg --version"
  if [[ "$fingerprints" != *"fpr:::::::::$EFA_KEY_FINGERPRINT:"* ]]; then
    die "the key at $key_url is not AWS's EFA signing key (fingerprint $EFA_KEY_FINGERPRINT)" \
      "do not install it; compare with the EC2 User Guide (Get started with EFA and NCCL, step 5) and contact AWS Support"
  fi
  # A good signature must also be AWS's key's (VALIDSIG names the signing key's primary
  # fingerprint last): a key file carrying a second key cannot vouch for the tarball.
  status=$(gpg --homedir "$gnupg" --batch --status-fd 1 --verify "$tarball.sig" "$tarball" 2>/dev/null) ||
    die "the EFA installer from $installer_url fails its signature check" \
      "do not install it; download it again (re-run), and if it still fails contact AWS Support"
  if [[ ! "$status" =~ \[GNUPG:\]\ VALIDSIG\ [^$'\n']*\ $EFA_KEY_FINGERPRINT($'\n'|$) ]]; then
    die "the EFA installer from $installer_url is not signed by AWS's EFA key ($EFA_KEY_FINGERPRINT)" \
      "do not install it; compare with the EC2 User Guide (Get started with EFA and NCCL, step 5) and contact AWS Support"
  fi
  rm -rf "$work_dir/aws-efa-installer"
  tar -xzf "$tarball" -C "$work_dir" ||
    die "could not unpack the EFA installer ($tarball)" "delete $work_dir and re-run"
}

install_efa_software() {
  log "EFA software missing under $prefix; installing it with AWS's EFA installer"
  apt_install ca-certificates curl gnupg
  install -m 0755 -d "$work_dir"
  fetch_installer
  # -y: no prompts. It installs the EFA kernel module, rdma-core, libfabric (in $prefix/efa),
  # aws-ofi-nccl (in $prefix/ofi-nccl) and Open MPI (in $prefix/openmpi).
  (cd "$work_dir/aws-efa-installer" && ./efa_installer.sh -y) >&2 ||
    die "AWS's EFA installer failed (efa_installer.sh -y)" \
      "read its output above; it needs Ubuntu 22.04/24.04 and the running kernel's headers (sudo apt-get install linux-headers-\$(uname -r)), then re-run"
  rm -rf "$work_dir/aws-efa-installer" "$work_dir/aws-efa-installer.tar.gz" \
    "$work_dir/aws-efa-installer.tar.gz.sig" "$work_dir/gnupg"
}

if efa_software_present; then
  log "EFA userspace and aws-ofi-nccl found under $prefix; nothing to install"
else
  install_efa_software
  efa_software_present ||
    die "EFA installer finished but $prefix/efa/bin/fi_info or the aws-ofi-nccl plugin ($prefix/ofi-nccl/lib/libnccl-net-ofi.so) is still missing" \
      "read the installer's output above and its log in $work_dir; re-run this step"
fi

devices=$(count_fi_devices)
verbs=$(count_verbs_devices)
if ((devices < expected || verbs < expected)); then
  # The installer loads the module it built; after a kernel change the module loads only now.
  log "found $devices EFA device(s) in fi_info and $verbs in $device_dir; loading the efa kernel module"
  modprobe efa >&2 || log "modprobe efa failed"
  devices=$(count_fi_devices)
  verbs=$(count_verbs_devices)
fi
if ((devices < expected)); then
  die "libfabric's efa provider reports $devices EFA device(s) (fi_info -p efa -t FI_EP_RDM), but the instance was launched with $expected EFA interface(s)" \
    "check the interfaces in the EC2 console (every one of type EFA or EFA-only, one per network card, the security group allowing all traffic to and from itself); after a fresh EFA install, reboot the host (sudo systemctl reboot) and re-run"
fi
if ((verbs < expected)); then
  die "$verbs EFA verbs device(s) in $device_dir (uverbs*), expected $expected: the container could not reach the rest" \
    "check that the efa kernel module is loaded (lsmod | grep efa); if not, reboot the host (sudo systemctl reboot) and re-run"
fi
log "$devices EFA device(s) ready (expected $expected); NCCL plugin $(nccl_plugin_path)"
printf 'EFA_DEVICES=%s\n' "$devices"
