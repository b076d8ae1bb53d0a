#!/usr/bin/env bash
# Mounts the model cache volume (an EBS volume that outlives the instance) at the models
# directory: finds it by its volume id, formats it only when it holds nothing, mounts it now and
# at every boot (fstab, nofail), grows its filesystem when the volume grew, and makes the
# directory local model uploads go to.
#
# NVMe device names (/dev/nvme1n1 ...) follow the order devices appear in and differ between
# boots; the udev link /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<id without the dash>
# names the volume itself (EC2 user guide, "Amazon EBS and NVMe": the serial number is the
# volume id).
#
# Environment:
#   VLLM_DEPLOY_VOLUME_ID       the EBS volume id, vol-0123456789abcdef0 (required)
#   VLLM_DEPLOY_MODELS_DIR      where to mount it, e.g. /data/models (required)
#   VLLM_DEPLOY_VOLUME_GB       the size the volume was given (logged; its change re-runs this step)
#   VLLM_DEPLOY_UPLOADS_DIR     directory on the volume for uploaded local models (optional)
#   VLLM_DEPLOY_UPLOADS_OWNER   the SSH user who uploads them (with UPLOADS_DIR)
#   VLLM_DEPLOY_DISK_BY_ID      /dev/disk/by-id (overridable for tests)
#   VLLM_DEPLOY_FSTAB           /etc/fstab (overridable for tests)
#   VLLM_DEPLOY_SYSTEMD_DIR     /etc/systemd/system (overridable for tests)
#   VLLM_DEPLOY_DEVICE_TIMEOUT  seconds to wait for the attached volume to appear (300)
#
# Stdout: one line, VLLM_DEPLOY_MODEL_VOLUME=<device> size_gb=<filesystem size>
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FS_LABEL=vllm-models
FSTAB_MARK="# vllm-deploy model volume"

require_env VLLM_DEPLOY_VOLUME_ID VLLM_DEPLOY_MODELS_DIR
volume_id=$VLLM_DEPLOY_VOLUME_ID
models_dir=${VLLM_DEPLOY_MODELS_DIR%/}
by_id=${VLLM_DEPLOY_DISK_BY_ID:-/dev/disk/by-id}
fstab=${VLLM_DEPLOY_FSTAB:-/etc/fstab}
systemd_dir=${VLLM_DEPLOY_SYSTEMD_DIR:-/etc/systemd/system}
: "${VLLM_DEPLOY_DEVICE_TIMEOUT:=300}"
require_uint VLLM_DEPLOY_DEVICE_TIMEOUT
timeout=$VLLM_DEPLOY_DEVICE_TIMEOUT

if [[ ! "$volume_id" =~ ^vol-[0-9a-f]{8,17}$ ]]; then
  die "VLLM_DEPLOY_VOLUME_ID must be an EBS volume id like vol-0123456789abcdef0, got '$volume_id'" \
    "pass the model volume's id"
fi
if [[ "$models_dir" != /* || "$models_dir" == *"/.."* || "$models_dir" == / ]]; then
  die "VLLM_DEPLOY_MODELS_DIR must be an absolute directory, got '$models_dir'" "pass e.g. /data/models"
fi

link="$by_id/nvme-Amazon_Elastic_Block_Store_${volume_id/-/}"
waited=0
until [[ -e "$link" ]]; do
  if ((waited >= timeout)); then
    die "the model volume $volume_id is not attached to this instance ($link does not exist after ${timeout}s)" \
      "check the volume's attachment in the EC2 console (aws ec2 describe-volumes --volume-ids $volume_id) and lsblk on the host"
  fi
  if ((waited == 0)); then
    log "waiting for $volume_id to appear as $link"
  fi
  sleep 2
  waited=$((waited + 2))
done
device=$(readlink -f "$link")

# blkid -p probes the device itself (not its cache); exit 2 = no filesystem and no partition table.
probe_rc=0
fstype=$(blkid -p -o value -s TYPE "$device") || probe_rc=$?
if ((probe_rc == 2)); then
  log "formatting the empty volume $volume_id ($device) as ext4"
  mkfs.ext4 -q -m 0 -L "$FS_LABEL" "$device" >&2 || die "mkfs.ext4 $device failed" "inspect the host: dmesg | tail; lsblk"
  fstype=ext4
elif ((probe_rc != 0)); then
  die "blkid could not probe $device (exit $probe_rc)" "inspect the host: sudo blkid -p $device; dmesg | tail"
elif [[ -z "$fstype" ]]; then
  die "the volume $volume_id ($device) holds a partition table, not a filesystem; refusing to format it" \
    "attach an empty volume, or wipe this one by hand if its data is not needed (sudo wipefs -a $device)"
fi
case $fstype in
  ext4 | xfs) ;;
  *) die "the volume $volume_id ($device) holds a $fstype filesystem; this step mounts ext4 or xfs" "use an empty volume" ;;
esac

install -d -m 0755 "$models_dir"

# fstab by the stable link; nofail: a missing volume must not keep the host from booting.
entry="$link $models_dir $fstype defaults,nofail,x-systemd.device-timeout=30s 0 2 $FSTAB_MARK"
if ! grep -qxF -- "$entry" "$fstab" 2>/dev/null; then
  touch "$fstab"
  grep -vF -- "$FSTAB_MARK" "$fstab" >"$fstab.vllm-deploy.tmp" || true
  printf '%s\n' "$entry" >>"$fstab.vllm-deploy.tmp"
  mv "$fstab.vllm-deploy.tmp" "$fstab"
  systemctl daemon-reload # systemd turns fstab into mount units
  log "fstab mounts $volume_id at $models_dir"
fi

current=$(findmnt -n -o SOURCE --mountpoint "$models_dir" || true)
if [[ -z "$current" ]]; then
  if [[ -n "$(ls -A "$models_dir")" ]]; then
    # A host from before the model volume: its weights sit on the root filesystem, where the
    # mount will hide them. A container started before keeps serving them until it restarts.
    log "note: $models_dir on the root filesystem holds files from before the model volume, which the volume now hides; to free that space: sudo umount $models_dir && sudo rm -rf $models_dir/* && sudo mount $models_dir"
  fi
  mount "$models_dir" >&2 || die "mounting $volume_id at $models_dir failed" "inspect the host: dmesg | tail; findmnt $models_dir"
  log "mounted $volume_id ($device) at $models_dir"
elif [[ "$(readlink -f "$current")" != "$device" ]]; then
  die "$models_dir is already a mount of $current, not of the model volume $volume_id ($device)" \
    "unmount it (sudo umount $models_dir) and re-run"
fi

# The volume grows in place when the sizing asks for more; its filesystem follows (online).
case $fstype in
  ext4) resize2fs "$device" >&2 || die "resize2fs $device failed" "inspect the host: dmesg | tail" ;;
  xfs) xfs_growfs "$models_dir" >&2 || die "xfs_growfs $models_dir failed" "inspect the host: dmesg | tail" ;;
esac

# Docker starts vLLM at boot (restart: always); it must find the weights mounted, not an empty
# directory. A drop-in orders it after the mount (After= only: without the volume Docker still
# starts, and vLLM's restarts fail loudly until it is back).
mount_unit="$(systemd-escape -p --suffix=mount "$models_dir")"
dropin_dir="$systemd_dir/docker.service.d"
dropin="$dropin_dir/10-vllm-deploy-models.conf"
want=$(printf '[Unit]\nAfter=%s\n' "$mount_unit")
if [[ "$(cat "$dropin" 2>/dev/null)" != "$want" ]]; then
  install -d -m 0755 "$dropin_dir"
  printf '%s\n' "$want" >"$dropin"
  systemctl daemon-reload
fi

if [[ -n "${VLLM_DEPLOY_UPLOADS_DIR:-}" ]]; then
  require_env VLLM_DEPLOY_UPLOADS_OWNER
  if [[ "$VLLM_DEPLOY_UPLOADS_DIR" != "$models_dir"/* ]]; then
    die "VLLM_DEPLOY_UPLOADS_DIR ($VLLM_DEPLOY_UPLOADS_DIR) is not inside $models_dir" "pass a directory on the volume"
  fi
  install -d -m 0755 "$VLLM_DEPLOY_UPLOADS_DIR"
  chown "$VLLM_DEPLOY_UPLOADS_OWNER:" "$VLLM_DEPLOY_UPLOADS_DIR"
fi

printf 'VLLM_DEPLOY_MODEL_VOLUME=%s size_gb=%s\n' "$volume_id" "$(df -BG --output=size "$models_dir" | tail -n 1 | tr -dc 0-9)"
log "model volume $volume_id ready at $models_dir (volume ${VLLM_DEPLOY_VOLUME_GB:-?} GB)"
