#!/usr/bin/env bash
# Grows the root partition and its filesystem to the size of the disk under them.
# The root EBS volume grows in place when the sizing (or diskSizeGb) asks for more, but the
# partition and filesystem only follow at boot; a model download right after would run out
# of space. Nothing to do on a fresh instance (cloud-init grew it at first boot).
#
# Environment:
#   VLLM_DEPLOY_ROOT_VOLUME_GB  the size the volume was given (logged; its change re-runs this step)
#   VLLM_DEPLOY_SYS_CLASS_BLOCK /sys/class/block (overridable for tests)
#
# Stdout: one line, VLLM_DEPLOY_ROOT_FS=<device> size_gb=<size after>
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

sys_block=${VLLM_DEPLOY_SYS_CLASS_BLOCK:-/sys/class/block}

source_device=$(findmnt -n -o SOURCE /) ||
  die "cannot tell which device holds /" "inspect the host: findmnt /"
fstype=$(findmnt -n -o FSTYPE /)
name=${source_device##*/}
if [[ ! -f "$sys_block/$name/partition" ]]; then
  log "/ is on $source_device, not a partition; nothing to grow"
  printf 'VLLM_DEPLOY_ROOT_FS=%s size_gb=%s\n' "$source_device" "$(df -BG --output=size / | tail -n 1 | tr -dc 0-9)"
  exit 0
fi
partition=$(cat "$sys_block/$name/partition")
disk=$(lsblk -n -o PKNAME "$source_device" | head -n 1)
[[ -n "$disk" ]] || die "cannot find the disk under $source_device" "inspect the host: lsblk"

# growpart exits 1 and says NOCHANGE when the partition already fills the disk.
if output=$(growpart "/dev/$disk" "$partition" 2>&1); then
  log "grew partition $partition of /dev/$disk: $output"
  case $fstype in
    ext4 | ext3 | ext2) resize2fs "$source_device" >&2 || die "resize2fs $source_device failed" "inspect the host: dmesg | tail" ;;
    xfs) xfs_growfs / >&2 || die "xfs_growfs / failed" "inspect the host: dmesg | tail" ;;
    *) die "the root filesystem is $fstype, which this step cannot grow" "grow it by hand, then re-run" ;;
  esac
elif [[ "$output" == *NOCHANGE* ]]; then
  log "the root partition already fills /dev/$disk (volume ${VLLM_DEPLOY_ROOT_VOLUME_GB:-?} GB)"
else
  die "growpart /dev/$disk $partition failed: $output" "inspect the host: lsblk; sudo growpart --dry-run /dev/$disk $partition"
fi
printf 'VLLM_DEPLOY_ROOT_FS=%s size_gb=%s\n' "$source_device" "$(df -BG --output=size / | tail -n 1 | tr -dc 0-9)"
