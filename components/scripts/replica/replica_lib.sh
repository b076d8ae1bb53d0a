#!/usr/bin/env bash
# Helpers shared by a replica's scripts (boot.sh, lifecycle_watch.sh, drain.sh); sourced after
# lib.sh, never run. Every AWS call happens here, on the host (IMDSv2 hop limit 1 keeps
# containers away from the metadata service, fleet-pitfalls.md P10).
#
# Environment (replica.env beside this file, written by serving/replica.py; a variable already
# set in the environment wins, so an operator or a test can override one):
#   VLLM_DEPLOY_REGION, VLLM_DEPLOY_*_HOOK, ... (see serving/replica.py replica_env)
#   VLLM_DEPLOY_IMDS_URL   the instance metadata service (default http://169.254.169.254)
# shellcheck shell=bash

REPLICA_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# read_vllm_args FILE: sets the array vllm_args to the JSON list in FILE (vllm-args.json), one
# element per argument, passed NUL-separated (no word splitting, no globbing).
read_vllm_args() {
  local file=$1 tmp
  tmp=$(mktemp)
  if ! python3 -c 'import json, sys; sys.stdout.write("".join(a + "\0" for a in json.load(open(sys.argv[1]))))' \
    "$file" >"$tmp"; then
    rm -f "$tmp"
    die "cannot read $file" "re-render it with serving/replica.py"
  fi
  # shellcheck disable=SC2034 # read by the script that sources this file
  mapfile -d '' -t vllm_args <"$tmp"
  rm -f "$tmp"
}

# load_replica_env: exports replica.env's VLLM_DEPLOY_* lines; no eval, nothing else accepted.
load_replica_env() {
  local file=${VLLM_DEPLOY_REPLICA_ENV:-$REPLICA_HERE/replica.env} name value
  [[ -r "$file" ]] || die "cannot read the replica settings $file" \
    "the image was baked without serving/replica.py's files; re-bake, or run install_replica.sh"
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ -z "$line" || "$line" == \#* ]] && continue
    name=${line%%=*}
    value=${line#*=}
    [[ "$name" =~ ^VLLM_DEPLOY_[A-Z0-9_]+$ ]] || die "unexpected line in $file: ${name}=..." \
      "re-render the file with serving/replica.py"
    if [[ -z "${!name+set}" ]]; then
      export "$name=$value"
    fi
  done <"$file"
}

IMDS_TOKEN=""
# imds_token: an IMDSv2 session token in IMDS_TOKEN (the launch template requires tokens).
imds_token() {
  local base=${VLLM_DEPLOY_IMDS_URL:-http://169.254.169.254}
  IMDS_TOKEN=$(curl -fsS --max-time 5 --retry 3 -X PUT \
    -H "X-aws-ec2-metadata-token-ttl-seconds: 21600" "$base/latest/api/token") &&
    [[ -n "$IMDS_TOKEN" ]]
}

# imds_get PATH: prints the metadata value at latest/meta-data/PATH.
imds_get() {
  local base=${VLLM_DEPLOY_IMDS_URL:-http://169.254.169.254}
  if [[ -z "$IMDS_TOKEN" ]]; then
    imds_token || return 1
  fi
  curl -fsS --max-time 5 --retry 3 -H "X-aws-ec2-metadata-token: $IMDS_TOKEN" "$base/latest/meta-data/$1"
}

# asg_group INSTANCE_ID: prints the Auto Scaling group the instance belongs to.
asg_group() {
  local group
  group=$(aws autoscaling describe-auto-scaling-instances --region "$VLLM_DEPLOY_REGION" \
    --instance-ids "$1" --query 'AutoScalingInstances[0].AutoScalingGroupName' --output text) || return 1
  [[ -n "$group" && "$group" != None ]] || return 1
  printf '%s\n' "$group"
}

# complete_lifecycle HOOK GROUP INSTANCE_ID RESULT: completes the hook's action (CONTINUE or ABANDON).
# No action pending (a reboot long after the launch, a second drain) is not an error.
complete_lifecycle() {
  local out
  if out=$(aws autoscaling complete-lifecycle-action --region "$VLLM_DEPLOY_REGION" \
    --lifecycle-hook-name "$1" --auto-scaling-group-name "$2" --instance-id "$3" \
    --lifecycle-action-result "$4" 2>&1); then
    log "lifecycle hook $1: $4"
    return 0
  fi
  if grep -qF "No active Lifecycle Action found" <<<"$out"; then
    log "lifecycle hook $1: no action pending for $3 (nothing to complete)"
    return 0
  fi
  log "complete-lifecycle-action $1 $4 failed: $out"
  return 1
}

# heartbeat HOOK GROUP INSTANCE_ID: more time for the hook's action (best effort).
heartbeat() {
  aws autoscaling record-lifecycle-action-heartbeat --region "$VLLM_DEPLOY_REGION" \
    --lifecycle-hook-name "$1" --auto-scaling-group-name "$2" --instance-id "$3" >/dev/null 2>&1
}

# container_exists NAME
container_exists() {
  docker container inspect "$1" >/dev/null 2>&1
}

# read_parameter NAME: the SSM parameter's decrypted value on stdout; fails at once (die) when it does not
# exist or cannot be read, retries (with back-off) what looks transient, such as ThrottlingException (P10).
read_parameter() {
  local parameter=$1 region=$VLLM_DEPLOY_REGION attempt=1 err
  local attempts=${VLLM_DEPLOY_RETRY_ATTEMPTS:-5} delay=${VLLM_DEPLOY_RETRY_DELAY:-2}
  err=$(mktemp)
  while true; do
    if aws ssm get-parameter --region "$region" --name "$parameter" --with-decryption \
      --query Parameter.Value --output text 2>"$err"; then
      rm -f "$err"
      return 0
    fi
    if grep -qF ParameterNotFound "$err"; then
      rm -f "$err"
      die "the SSM parameter $parameter does not exist in $region" \
        "the stack creates it (SecureString $parameter); run pulumi up, or check the region and the name in replica.env"
    fi
    if grep -qE 'AccessDenied|not authorized' "$err"; then
      log "$(head -c 500 "$err")"
      rm -f "$err"
      die "this instance may not read the SSM parameter $parameter" \
        "the instance profile needs ssm:GetParameter on it (and kms:Decrypt on its key)"
    fi
    if ((attempt >= attempts)); then
      log "$(head -c 500 "$err")"
      rm -f "$err"
      die "reading the SSM parameter $parameter failed after $attempts attempts" \
        "check the replica's route to SSM (NAT gateway or VPC endpoint) and SSM's throttling limits"
    fi
    log "reading $parameter failed (attempt $attempt of $attempts): $(head -c 200 "$err"); retrying in ${delay}s"
    sleep "$delay"
    delay=$((delay * 2 > 30 ? 30 : delay * 2))
    attempt=$((attempt + 1))
  done
}


# --- tenant mode (issue 29) -------------------------------------------------------------------
# $VLLM_DEPLOY_TENANT_RUN_DIR (tmpfs under /run, 0700, never the image's root volume, P9):
#   files/         the tenants' nginx files, mounted read-only into nginx (its config includes them)
#   previous/      the files before the last install (restored when nginx -t refuses new ones)
#   value.sha256   the SHA-256 of the parameter value files/ came from
#   rejected.sha256  a value nginx -t refused (not tried again until the parameter changes)
# The parameter's value: base64 of a gzip-compressed tar of flat file names
# (serving/replica_tenants.py parameter_value). Nothing here prints it or a file's content.

# tenant_unpack VALUE_FILE DIR: DIR (made anew) holds the files in VALUE_FILE, 0600 each; fails
# without touching anything else when the value does not decode, names a file outside DIR or
# holds anything but regular files.
tenant_unpack() {
  local value=$1 dir=$2 tar_file="$2.tar" name
  rm -rf -- "$dir" "$tar_file"
  (umask 077 && mkdir -p -- "$dir" && base64 -d <"$value" | gzip -dc >"$tar_file") 2>/dev/null || {
    rm -rf -- "$dir" "$tar_file"
    return 1
  }
  while IFS= read -r name; do
    [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || { rm -rf -- "$dir" "$tar_file"; return 1; }
  done < <(tar -tf "$tar_file")
  # Regular files only: no link or device that would make nginx read something else.
  if tar -tvf "$tar_file" | cut -c1 | grep -qv -- '-'; then
    rm -rf -- "$dir" "$tar_file"
    return 1
  fi
  tar -xf "$tar_file" -C "$dir" --no-same-owner --no-same-permissions || { rm -rf -- "$dir" "$tar_file"; return 1; }
  rm -f -- "$tar_file"
  find "$dir" -type f -exec chmod 0600 {} +
}

# tenant_swap NEW_DIR: files/ becomes NEW_DIR's files (each renamed in place, so the directory
# nginx has mounted stays the same inode; names NEW_DIR lacks are removed), the old set kept in
# previous/. tenant_restore: files/ back to previous/.
tenant_swap() {
  local run=$VLLM_DEPLOY_TENANT_RUN_DIR new=$1 path
  rm -rf -- "$run/previous"
  install -d -m 0700 "$run/files"
  cp -a -- "$run/files" "$run/previous"
  for path in "$run/files"/*; do
    [[ ! -e "$path" || -e "$new/${path##*/}" ]] || rm -f -- "$path"
  done
  for path in "$new"/*; do
    [[ ! -e "$path" ]] || mv -f -- "$path" "$run/files/${path##*/}"
  done
  rm -rf -- "$new"
}
tenant_restore() {
  local run=$VLLM_DEPLOY_TENANT_RUN_DIR path
  for path in "$run/files"/*; do
    rm -f -- "$path"
  done
  for path in "$run/previous"/*; do
    [[ ! -e "$path" ]] || cp -a -- "$path" "$run/files/${path##*/}"
  done
}

# tenant_fetch VALUE_FILE: the parameter's value into VALUE_FILE (0600); prints its SHA-256.
tenant_fetch() {
  local out=$1 value
  value=$(read_parameter "$VLLM_DEPLOY_TENANT_PARAMETER") || return 1
  [[ -n "$value" ]] || die "the SSM parameter $VLLM_DEPLOY_TENANT_PARAMETER is empty" \
    "pulumi up writes the tenants' files there (apiKeys); run it again"
  (umask 077 && printf '%s' "$value" >"$out")
  unset value
  sha256sum "$out" | cut -d' ' -f1
}

# tenant_fetch_install (boot): the parameter's files into files/; dies naming the parameter.
tenant_fetch_install() {
  local run=$VLLM_DEPLOY_TENANT_RUN_DIR sha
  install -d -m 0700 "$run"
  {
    flock 9 # not while tenant_sync.sh installs (the timer's lock, released at the end of this block)
    sha=$(tenant_fetch "$run/incoming") || die "cannot read the tenants' files from $VLLM_DEPLOY_TENANT_PARAMETER" \
      "see the error above; the instance profile may read that parameter"
    tenant_unpack "$run/incoming" "$run/staging" || die "the SSM parameter $VLLM_DEPLOY_TENANT_PARAMETER does not hold the tenants' files (base64 of a gzip'd tar of plain names)" \
      "pulumi up writes it from apiKeys; run it again"
    tenant_swap "$run/staging"
    rm -f -- "$run/incoming" "$run/rejected.sha256"
    printf '%s\n' "$sha" >"$run/value.sha256"
  } 9>"$run/lock"
}
