#!/usr/bin/env bash
# Starts this replica at every boot (vllm-replica.service): the same vLLM container and the same
# nginx as a single host, from the files baked beside this script (serving/replica.py), then
# tells the Auto Scaling group it is ready (fleet-pitfalls.md P8, P9, P10).
#   1. IMDSv2: this instance's id and private address; its Auto Scaling group.
#   2. The API key from the SSM SecureString parameter into a root-only 0600 env file on tmpfs
#      ($VLLM_DEPLOY_SECRETS_DIR); never an argument, never printed. Throttling is retried with
#      back-off; a missing parameter fails at once, naming it.
#   2b. Tenant mode (replica.env names VLLM_DEPLOY_TENANT_PARAMETER, issue 29): the tenants' nginx
#      files from that SecureString onto tmpfs ($VLLM_DEPLOY_TENANT_RUN_DIR/files, never the root
#      volume the image is made from, P9), mounted read-only into nginx where its config includes
#      them; vllm-replica-tenants.timer keeps them current (tenant_sync.sh).
#   3. A self-signed certificate for nginx, made here if absent (key 0600): the load balancer does
#      not validate a target's certificate (P4), and none is ever in the image.
#   4. The vLLM and nginx containers, removed and created again (a rotated key is picked up at the
#      next boot): vllm-args.json as the argv (with --shutdown-timeout), --stop-timeout above it,
#      restart policy always; nginx with the baked config, the certificate and the drain flag's
#      directory mounted read-only (and in tenant mode the tenants' files, step 2b).
#   4b. With monitoring on: the CloudWatch agent with the baked config (cloudwatch/agent.json).
#   5. /health THROUGH nginx (https on loopback, verified against that certificate), heartbeating
#      the launch hook while the model loads; then complete-lifecycle-action CONTINUE on it.
# Any failure once the instance id and group are known completes the launch hook with ABANDON
# (the group replaces the instance) and exits non-zero; before that (no IMDS), it logs why it
# cannot and the hook times out into its default result, ABANDON.
# Idempotent: a second run recreates the same containers.
#
# Warm pool (issue 26, fleet-pitfalls P16): when the instance is launched INTO the warm pool,
# IMDS autoscaling/target-lifecycle-state is Warmed:Stopped (or Warmed:Running/Hibernated) and
# the launch hook holds it at Warmed:Pending:Wait. Then boot does only the work that is done once
# per instance: the certificate (step 3, kept on the root volume) and one read of the model
# volume, so its blocks come off the snapshot now and not during a scale-out's load; it reads no
# API key (tmpfs, gone when the pool stops the instance), starts no container, completes the
# launch hook and prints VLLM_DEPLOY_REPLICA=warmed. When the instance leaves the pool it boots
# again (this unit runs at every boot) with target state InService: the whole boot above, which
# the hook's second pause (Pending:Wait) waits for.
#
# Environment: replica.env; VLLM_DEPLOY_HEALTH_POLL_S seconds between health looks (default 5).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=replica_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/replica_lib.sh"

# The ABANDON trap comes first (before any check), so no failure leaves the launch hook pending
# silently. complete-lifecycle-action needs the instance id and the group's name: a failure
# before both are known (IMDS or DescribeAutoScalingInstances missing) cannot ABANDON; it says
# so, and the hook times out (its heartbeat timeout) into its default result, ABANDON too.
completed=0
instance=""
group=""
on_exit() {
  local status=$?
  if ((status == 0 || completed == 1)); then
    return
  fi
  if [[ -n "$instance" && -n "$group" ]]; then
    log "boot failed: completing the launch hook $hook with ABANDON (the group replaces this instance)"
    complete_lifecycle "$hook" "$group" "$instance" ABANDON || true
  else
    log "boot failed before this instance knew its ${instance:+group}${instance:-instance id}: the launch hook ${hook:-} cannot be completed from here; it ends at its heartbeat timeout with its default result ABANDON (the group replaces this instance)"
  fi
}
trap on_exit EXIT

load_replica_env
require_env VLLM_DEPLOY_REGION VLLM_DEPLOY_API_KEY_PARAMETER VLLM_DEPLOY_VLLM_IMAGE \
  VLLM_DEPLOY_NGINX_IMAGE VLLM_DEPLOY_MODEL_DIR VLLM_DEPLOY_MODEL_MOUNT VLLM_DEPLOY_VLLM_PORT \
  VLLM_DEPLOY_HTTPS_PORT VLLM_DEPLOY_NGINX_NOFILE VLLM_DEPLOY_DOCKER_STOP_TIMEOUT_S \
  VLLM_DEPLOY_LAUNCH_HOOK VLLM_DEPLOY_HEALTH_TIMEOUT_S VLLM_DEPLOY_HEARTBEAT_INTERVAL_S \
  VLLM_DEPLOY_RUN_DIR VLLM_DEPLOY_SECRETS_DIR VLLM_DEPLOY_TLS_DIR VLLM_DEPLOY_VLLM_CONTAINER \
  VLLM_DEPLOY_NGINX_CONTAINER
for name in VLLM_DEPLOY_VLLM_PORT VLLM_DEPLOY_HTTPS_PORT VLLM_DEPLOY_NGINX_NOFILE \
  VLLM_DEPLOY_DOCKER_STOP_TIMEOUT_S VLLM_DEPLOY_HEALTH_TIMEOUT_S VLLM_DEPLOY_HEARTBEAT_INTERVAL_S; do
  require_uint "$name"
done
region=$VLLM_DEPLOY_REGION
parameter=$VLLM_DEPLOY_API_KEY_PARAMETER
hook=$VLLM_DEPLOY_LAUNCH_HOOK
vllm=$VLLM_DEPLOY_VLLM_CONTAINER
proxy=$VLLM_DEPLOY_NGINX_CONTAINER
key_file=$VLLM_DEPLOY_SECRETS_DIR/api-key.env
cert=$VLLM_DEPLOY_TLS_DIR/server.crt
cert_key=$VLLM_DEPLOY_TLS_DIR/server.key
poll=${VLLM_DEPLOY_HEALTH_POLL_S:-5}

# --- 1. who we are -------------------------------------------------------------------------
instance=$(imds_get instance-id) ||
  die "the instance metadata service (IMDSv2) did not answer" \
    "the launch template must enable IMDS with tokens; check: curl -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 60'"
group=$(asg_group "$instance") ||
  die "cannot find the Auto Scaling group of $instance" \
    "the instance profile needs autoscaling:DescribeAutoScalingInstances, and the instance must belong to the replicas' group"

target_state=$(imds_get autoscaling/target-lifecycle-state 2>/dev/null) || target_state=unknown
private_ip=$(imds_get local-ipv4) || die "IMDS gave no local-ipv4" "check the instance's network interface"

# --- 2. the API key ------------------------------------------------------------------------
tenant_mount=()
if [[ "$target_state" == Warmed:* ]]; then
  log "entering the warm pool ($target_state): the API key is read when the instance leaves it"
else
  key=$(read_parameter "$parameter")
  if [[ -z "$key" || "$key" == *[[:space:]]* ]]; then
    die "the SSM parameter $parameter is empty or holds whitespace" "store the API key alone, as a SecureString"
  fi
  install -d -m 0700 "$VLLM_DEPLOY_SECRETS_DIR"
  (
    umask 077
    printf 'VLLM_API_KEY=%s\n' "$key" >"$key_file.tmp"
  )
  mv "$key_file.tmp" "$key_file"
  unset key
  log "API key read from $parameter into $key_file (0600)"
  # Tenant mode (issue 29): the tenants' nginx files from their parameter onto tmpfs, before nginx
  # starts; vllm-replica-tenants.timer (tenant_sync.sh) installs later versions and reloads nginx.
  if [[ -n "${VLLM_DEPLOY_TENANT_PARAMETER:-}" ]]; then
    require_env VLLM_DEPLOY_TENANT_RUN_DIR VLLM_DEPLOY_TENANT_DIR_CONTAINER
    tenant_fetch_install
    tenant_mount=(-v "$VLLM_DEPLOY_TENANT_RUN_DIR/files:$VLLM_DEPLOY_TENANT_DIR_CONTAINER:ro")
    log "tenants' nginx files from $VLLM_DEPLOY_TENANT_PARAMETER in $VLLM_DEPLOY_TENANT_RUN_DIR/files (tmpfs)"
  fi
fi

# --- 3. the certificate --------------------------------------------------------------------
install -d -m 0755 "$VLLM_DEPLOY_TLS_DIR"
if [[ ! -s "$cert" || ! -s "$cert_key" ]]; then
  (
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
      -subj "/CN=vllm-deploy replica $instance" \
      -addext "subjectAltName=IP:127.0.0.1,IP:$private_ip" \
      -keyout "$cert_key.tmp" -out "$cert.tmp" 2>/dev/null
  ) || die "openssl could not make the replica's certificate" "check openssl is installed: openssl version"
  chmod 0600 "$cert_key.tmp"
  chmod 0644 "$cert.tmp"
  mv "$cert_key.tmp" "$cert_key"
  mv "$cert.tmp" "$cert"
  log "made a self-signed certificate for $private_ip ($cert)"
fi

# --- 3b. entering the warm pool: the once-only work, then stop here -------------------------
if [[ "$target_state" == Warmed:* ]]; then
  [[ -f "$VLLM_DEPLOY_MODEL_DIR/config.json" ]] ||
    die "no model at $VLLM_DEPLOY_MODEL_DIR (no config.json): the model volume is not mounted there" \
      "check lsblk and findmnt; the image's fstab mounts the model volume by its label (vllm-models)"
  started=$SECONDS
  read_bytes=0
  while IFS= read -r -d '' file; do
    # dd reads every block (wc -c alone would only stat the file), and the pipe counts them.
    size=$(dd if="$file" bs=16M status=none | wc -c)
    read_bytes=$((read_bytes + size))
    if ((SECONDS - started >= VLLM_DEPLOY_HEARTBEAT_INTERVAL_S)); then
      heartbeat "$hook" "$group" "$instance" || true
      started=$SECONDS
    fi
  done < <(find "$VLLM_DEPLOY_MODEL_DIR/" -type f -print0)
  log "warm pool ($target_state): read ${read_bytes} bytes of the model volume once; no container started"
  complete_lifecycle "$hook" "$group" "$instance" CONTINUE ||
    die "complete-lifecycle-action CONTINUE on $hook failed" \
      "the instance profile needs autoscaling:CompleteLifecycleAction on the group"
  completed=1
  printf 'VLLM_DEPLOY_REPLICA=warmed\n'
  exit 0
fi

# --- 4. the containers ---------------------------------------------------------------------
# The weights come from the image's model-volume snapshot. That volume has a new id here, so a
# mount set up on the builder by volume id does not apply: fail clearly rather than start vLLM
# on an empty directory.
if [[ ! -f "$VLLM_DEPLOY_MODEL_DIR/config.json" ]]; then
  die "no model at $VLLM_DEPLOY_MODEL_DIR (no config.json): the model volume is not mounted there" \
    "check lsblk and findmnt; the image's fstab must mount the model volume by its filesystem label (vllm-models), not by the builder's volume id"
fi
install -d -m 0755 "$VLLM_DEPLOY_RUN_DIR"
rm -f "$VLLM_DEPLOY_RUN_DIR/draining" "$VLLM_DEPLOY_RUN_DIR/drained"

read_vllm_args "$REPLICA_HERE/vllm-args.json"

# vLLM's compile cache on the model volume (serving/compile_cache.py): one directory per instance
# type, vLLM image and argv, so the cache baked on the builder serves replicas of its type only.
cache_opts=()
if [[ -n "${VLLM_DEPLOY_COMPILE_CACHE_BASE:-}" ]]; then
  require_env VLLM_DEPLOY_COMPILE_CACHE_SUFFIX VLLM_DEPLOY_COMPILE_CACHE_MOUNT
  instance_type=$(imds_get instance-type) || die "IMDS gave no instance-type" "check the instance metadata service"
  cache_dir=$VLLM_DEPLOY_COMPILE_CACHE_BASE/$instance_type--$VLLM_DEPLOY_COMPILE_CACHE_SUFFIX
  install -d -m 0755 "$cache_dir"
  cache_opts=(-v "$cache_dir:$VLLM_DEPLOY_COMPILE_CACHE_MOUNT")
fi

for name in "$proxy" "$vllm"; do
  if container_exists "$name"; then
    docker rm -f "$name" >/dev/null || die "docker rm -f $name failed" "inspect: docker ps -a"
  fi
done
port=$VLLM_DEPLOY_VLLM_PORT
# LoRA adapters and the draft, baked beside the weights: host:container pairs (replica.env).
addon_mounts=()
IFS=, read -r -a addon_pairs <<<"${VLLM_DEPLOY_ADDON_MOUNTS:-}"
for pair in "${addon_pairs[@]}"; do
  [[ -d "${pair%%:*}" ]] || die "no ${pair%%:*} on this replica: the image lacks a LoRA adapter or draft" \
    "bake the image again (pulumi up re-bakes it when loraAdapters or speculativeModel change)"
  addon_mounts+=(-v "$pair:ro")
done
# The GPU request that works in the container toolkit's mode (lib.sh gpu_access_detect).
gpu_access_detect
docker run -d --name "$vllm" --restart always "${GPU_ARGS[@]}" --ipc host \
  -p "127.0.0.1:$port:$port" \
  --env-file "$key_file" --env-file "$REPLICA_HERE/vllm.env" \
  -v "$VLLM_DEPLOY_MODEL_DIR:$VLLM_DEPLOY_MODEL_MOUNT:ro" "${addon_mounts[@]}" "${cache_opts[@]}" \
  --stop-timeout "$VLLM_DEPLOY_DOCKER_STOP_TIMEOUT_S" \
  --log-driver json-file --log-opt max-size=100m --log-opt max-file=5 \
  "$VLLM_DEPLOY_VLLM_IMAGE" "${vllm_args[@]}" >/dev/null ||
  die "docker run $vllm failed" "inspect: journalctl -u docker; is $VLLM_DEPLOY_VLLM_IMAGE in the image (docker images)?"
nofile=$VLLM_DEPLOY_NGINX_NOFILE
# The host network: in the slice the image's IMDS guard keeps away from IMDS (block_container_imds.sh).
docker run -d --name "$proxy" --restart always --network host --cgroup-parent vllm-containers.slice \
  --ulimit "nofile=$nofile:$nofile" \
  -v "$REPLICA_HERE/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" \
  -v "$VLLM_DEPLOY_TLS_DIR:/etc/nginx/tls:ro" \
  -v "$VLLM_DEPLOY_RUN_DIR:$VLLM_DEPLOY_RUN_DIR:ro" "${tenant_mount[@]}" \
  --log-driver json-file --log-opt max-size=50m --log-opt max-file=5 \
  "$VLLM_DEPLOY_NGINX_IMAGE" >/dev/null ||
  die "docker run $proxy failed" "inspect: docker logs $proxy"
log "started $vllm ($VLLM_DEPLOY_VLLM_IMAGE) and $proxy ($VLLM_DEPLOY_NGINX_IMAGE)"

# --- 4b. metrics (a fleet with monitoring on) ------------------------------------------------
# The CloudWatch agent, on the host (hop limit 1: no AWS call from a container, P10), with the
# baked config (serving/monitoring/cloudwatch.py). Metrics are not worth a replica: a failure is
# logged and the boot goes on (the alarm VllmMetricsMissing notices).
agent_config=$REPLICA_HERE/cloudwatch/agent.json
if [[ -f "$agent_config" ]]; then
  ctl=${VLLM_DEPLOY_CWAGENT_CTL:-/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl}
  if "$ctl" -a fetch-config -m ec2 -s -c "file:$agent_config" >&2; then
    log "CloudWatch agent started with $agent_config"
  else
    log "WARNING: the CloudWatch agent did not start with $agent_config; this replica sends no metrics (journalctl -u amazon-cloudwatch-agent)"
  fi
fi

# --- 5. ready through nginx ----------------------------------------------------------------
health=https://127.0.0.1:$VLLM_DEPLOY_HTTPS_PORT/health
deadline=$((SECONDS + VLLM_DEPLOY_HEALTH_TIMEOUT_S))
next_beat=$((SECONDS + VLLM_DEPLOY_HEARTBEAT_INTERVAL_S))
log "waiting up to ${VLLM_DEPLOY_HEALTH_TIMEOUT_S}s for $health"
until curl -fsS --max-time 5 --cacert "$cert" -o /dev/null "$health" 2>/dev/null; do
  state=$(docker inspect --format '{{.State.Status}} {{.RestartCount}}' "$vllm" 2>/dev/null || echo "missing 0")
  read -r status restarts <<<"$state"
  if [[ "$status" == missing || "$status" == dead || "${restarts:-0}" -ge 3 ]]; then
    docker logs --tail 80 "$vllm" >&2 2>&1 || true
    die "$vllm is $status after $restarts restarts" "see its log above (the single host's usual causes: wait_for_vllm.sh)"
  fi
  if ((SECONDS >= deadline)); then
    docker logs --tail 80 "$vllm" >&2 2>&1 || true
    die "no 200 from $health within ${VLLM_DEPLOY_HEALTH_TIMEOUT_S}s" \
      "a model that loads longer needs a longer readinessTimeoutMinutes (the hook's heartbeat timeout follows it)"
  fi
  if ((SECONDS >= next_beat)); then
    heartbeat "$hook" "$group" "$instance" || log "no heartbeat recorded for $hook (no action pending?)"
    next_beat=$((SECONDS + VLLM_DEPLOY_HEARTBEAT_INTERVAL_S))
  fi
  sleep "$poll"
done
log "$health answers 200 through nginx"
complete_lifecycle "$hook" "$group" "$instance" CONTINUE ||
  die "complete-lifecycle-action CONTINUE on $hook failed" \
    "the instance profile needs autoscaling:CompleteLifecycleAction on the group"
completed=1
printf 'VLLM_DEPLOY_REPLICA=ready\n'
