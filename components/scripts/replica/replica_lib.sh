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
