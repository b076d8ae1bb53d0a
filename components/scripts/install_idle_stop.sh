#!/usr/bin/env bash
# Installs the idle-stop watcher (idle_stop.sh, copied beside this script) as the systemd service
# vllm-idle-stop, or removes it when idle stop is off.
#
# A systemd service rather than a container: it must power the host off, which root on the host
# does with `systemctl poweroff` and nothing else (a container would need the host's PID
# namespace or D-Bus, and privileges); it starts at boot before Docker and the vLLM container,
# and a restart of that container cannot take it down.
#
# Environment:
#   VLLM_DEPLOY_IDLE_STOP_MINUTES  minutes without requests before stopping; 0 = off (required)
#   VLLM_DEPLOY_METRICS_URL        vLLM's /metrics on loopback (required when on)
#   VLLM_DEPLOY_IDLE_POLL_SECONDS  seconds between the watcher's looks (default 30)
#   VLLM_DEPLOY_IDLE_NO_METRICS_SECONDS  metrics missing this long count as idle (default 1800;
#                                  the program passes readinessTimeoutMinutes)
#   VLLM_DEPLOY_IDLE_STUCK_SECONDS requests in flight this long without progress count as idle
#                                  (default 3600; the program passes the proxy's upstream read
#                                  timeout)
#   VLLM_DEPLOY_SYSTEMD_DIR        /etc/systemd/system (overridable for tests)
#   VLLM_DEPLOY_LIB_DIR            /usr/local/lib/vllm-deploy (overridable for tests)
#   VLLM_DEPLOY_ETC_DIR            /etc/vllm-deploy (overridable for tests)
#
# Stdout: one line, VLLM_DEPLOY_IDLE_STOP=<minutes>m or VLLM_DEPLOY_IDLE_STOP=off
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERVICE=vllm-idle-stop.service
here=$(dirname "${BASH_SOURCE[0]}")
systemd_dir=${VLLM_DEPLOY_SYSTEMD_DIR:-/etc/systemd/system}
lib_dir=${VLLM_DEPLOY_LIB_DIR:-/usr/local/lib/vllm-deploy}
etc_dir=${VLLM_DEPLOY_ETC_DIR:-/etc/vllm-deploy}
unit="$systemd_dir/$SERVICE"
env_file="$etc_dir/idle-stop.env"

require_env VLLM_DEPLOY_IDLE_STOP_MINUTES
require_uint VLLM_DEPLOY_IDLE_STOP_MINUTES
minutes=$VLLM_DEPLOY_IDLE_STOP_MINUTES
: "${VLLM_DEPLOY_IDLE_POLL_SECONDS:=30}"
require_uint VLLM_DEPLOY_IDLE_POLL_SECONDS
poll=$VLLM_DEPLOY_IDLE_POLL_SECONDS
: "${VLLM_DEPLOY_IDLE_NO_METRICS_SECONDS:=1800}"
: "${VLLM_DEPLOY_IDLE_STUCK_SECONDS:=3600}"
require_uint VLLM_DEPLOY_IDLE_NO_METRICS_SECONDS
require_uint VLLM_DEPLOY_IDLE_STUCK_SECONDS

if ((minutes == 0)); then
  if [[ -e "$unit" ]]; then
    systemctl disable --now "$SERVICE" >&2 || die "systemctl disable --now $SERVICE failed" "inspect: systemctl status $SERVICE"
    rm -f "$unit" "$env_file" "$lib_dir/idle_stop.sh" "$lib_dir/.idle-stop-applied"
    systemctl daemon-reload
    log "idle stop is off: removed $SERVICE"
  fi
  printf 'VLLM_DEPLOY_IDLE_STOP=off\n'
  exit 0
fi

require_env VLLM_DEPLOY_METRICS_URL
if [[ ! "$VLLM_DEPLOY_METRICS_URL" =~ ^http://(127\.[0-9.]+|localhost|\[::1\]):[0-9]+/metrics$ ]]; then
  die "VLLM_DEPLOY_METRICS_URL must be vLLM's /metrics on loopback, got '$VLLM_DEPLOY_METRICS_URL'" \
    "pass http://127.0.0.1:<vLLM port>/metrics"
fi

changed=0
# install_file SOURCE_TEXT DEST MODE: write DEST when its content differs.
install_file() {
  if [[ "$(cat "$2" 2>/dev/null)" != "$1" ]]; then
    install -d -m 0755 "$(dirname "$2")"
    printf '%s\n' "$1" >"$2.tmp"
    chmod "$3" "$2.tmp"
    mv "$2.tmp" "$2"
    changed=1
  fi
}

install_file "$(cat "$here/idle_stop.sh")" "$lib_dir/idle_stop.sh" 0755
install_file "$(cat "$here/lib.sh")" "$lib_dir/lib.sh" 0644
install_file "VLLM_DEPLOY_IDLE_STOP_MINUTES=$minutes
VLLM_DEPLOY_METRICS_URL=$VLLM_DEPLOY_METRICS_URL
VLLM_DEPLOY_IDLE_POLL_SECONDS=$poll
VLLM_DEPLOY_IDLE_NO_METRICS_SECONDS=$VLLM_DEPLOY_IDLE_NO_METRICS_SECONDS
VLLM_DEPLOY_IDLE_STUCK_SECONDS=$VLLM_DEPLOY_IDLE_STUCK_SECONDS" "$env_file" 0644
install_file "[Unit]
Description=vllm-deploy idle stop: power off after $minutes minutes without vLLM requests
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
EnvironmentFile=$env_file
ExecStart=/bin/bash $lib_dir/idle_stop.sh
Restart=on-failure
RestartSec=30

[Install]
WantedBy=multi-user.target" "$unit" 0644

# What the running service was last (re)started with. Written only once enable and restart
# succeeded, so a run killed after writing the files but before the restart is finished by
# the next run (the files alone would look up to date).
applied="$lib_dir/.idle-stop-applied"
want=$(cat "$lib_dir/idle_stop.sh" "$lib_dir/lib.sh" "$env_file" "$unit")
if ((changed)) || [[ "$(cat "$applied" 2>/dev/null)" != "$want" ]]; then
  systemctl daemon-reload
  systemctl enable "$SERVICE" >&2
  # A restart also starts the idle clock again: a new setting never stops a host at once.
  systemctl restart "$SERVICE" || die "systemctl restart $SERVICE failed" "inspect: journalctl -u $SERVICE"
  printf '%s\n' "$want" >"$applied"
  log "idle stop after $minutes minutes without requests ($SERVICE)"
elif ! systemctl is-active --quiet "$SERVICE"; then
  systemctl start "$SERVICE" || die "systemctl start $SERVICE failed" "inspect: journalctl -u $SERVICE"
  log "started $SERVICE"
fi
printf 'VLLM_DEPLOY_IDLE_STOP=%sm\n' "$minutes"
