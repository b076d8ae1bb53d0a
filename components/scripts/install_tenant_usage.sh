#!/usr/bin/env bash
# Per-tenant usage on the host (issue 29, tenant mode): keeps the proxy's usage log from filling
# the disk, and (with monitoring) runs mtail over it as the systemd service
# vllm-deploy-tenant-usage on loopback, where Prometheus scrapes the per-tenant counters
# (serving/monitoring/tenant_usage.py says what they are).
#
# Rotation: logrotate (run by the timer vllm-deploy-usage-logrotate every
# VLLM_DEPLOY_USAGE_ROTATE_MINUTES) renames the log past VLLM_DEPLOY_USAGE_LOG_MAX_MIB, creates
# a new one and has nginx reopen it (`nginx -s reopen` in the proxy container). mtail reads the
# log through a second hard link in mtail-view/ that moves to the new file only after nginx has
# reopened, so mtail reads the old file to its end first and loses no line written meanwhile.
#
# A systemd service rather than a container: mtail is a Debian/Ubuntu package with a ready
# systemd unit; it reads a host file and needs nothing of Docker. The package's own mtail.service
# (every interface, /etc/mtail) is disabled: this unit listens on loopback only.
#
# Environment:
#   VLLM_DEPLOY_USAGE_LOG_DIR        the usage log's host directory (required)
#   VLLM_DEPLOY_USAGE_LOG_NAME       its file name (default usage.log)
#   VLLM_DEPLOY_NGINX_CONTAINER      the proxy's container, told to reopen the log (required)
#   VLLM_DEPLOY_USAGE_LOG_MAX_MIB    rotate past this size in MiB (default 100)
#   VLLM_DEPLOY_USAGE_LOG_KEEP       rotated files kept (default 5)
#   VLLM_DEPLOY_USAGE_ROTATE_MINUTES minutes between size checks (default 10)
#   VLLM_DEPLOY_USAGE_METRICS        1: install mtail too; 0: rotation only, mtail removed (required)
#   VLLM_DEPLOY_MTAIL_PROGRAM_B64    the mtail program, base64 (required with metrics)
#   VLLM_DEPLOY_MTAIL_ADDRESS        mtail's listen address (default 127.0.0.1; loopback only)
#   VLLM_DEPLOY_MTAIL_PORT           mtail's port (default 3903)
#   VLLM_DEPLOY_SYSTEMD_DIR, VLLM_DEPLOY_ETC_DIR, VLLM_DEPLOY_LIB_DIR, VLLM_DEPLOY_STATE_DIR:
#                                    /etc/systemd/system, /etc/vllm-deploy,
#                                    /usr/local/lib/vllm-deploy, /var/lib/vllm-deploy (tests)
#   VLLM_DEPLOY_MTAIL_USER           the user mtail runs as (default mtail, the package's; tests)
#
# Stdout: one line, VLLM_DEPLOY_TENANT_USAGE=metrics|rotation
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MTAIL_SERVICE=vllm-deploy-tenant-usage.service
ROTATE_SERVICE=vllm-deploy-usage-logrotate.service
ROTATE_TIMER=vllm-deploy-usage-logrotate.timer
systemd_dir=${VLLM_DEPLOY_SYSTEMD_DIR:-/etc/systemd/system}
etc_dir=${VLLM_DEPLOY_ETC_DIR:-/etc/vllm-deploy}
lib_dir=${VLLM_DEPLOY_LIB_DIR:-/usr/local/lib/vllm-deploy}
state_dir=${VLLM_DEPLOY_STATE_DIR:-/var/lib/vllm-deploy}
mtail_user=${VLLM_DEPLOY_MTAIL_USER:-mtail}

require_env VLLM_DEPLOY_USAGE_LOG_DIR VLLM_DEPLOY_NGINX_CONTAINER VLLM_DEPLOY_USAGE_METRICS
log_dir=${VLLM_DEPLOY_USAGE_LOG_DIR%/}
log_name=${VLLM_DEPLOY_USAGE_LOG_NAME:-usage.log}
: "${VLLM_DEPLOY_USAGE_LOG_MAX_MIB:=100}" "${VLLM_DEPLOY_USAGE_LOG_KEEP:=5}" "${VLLM_DEPLOY_USAGE_ROTATE_MINUTES:=10}"
require_uint VLLM_DEPLOY_USAGE_LOG_MAX_MIB
require_uint VLLM_DEPLOY_USAGE_LOG_KEEP
require_uint VLLM_DEPLOY_USAGE_ROTATE_MINUTES
if [[ "$log_dir" != /* || "$log_name" == */* || -z "$log_name" ]]; then
  die "VLLM_DEPLOY_USAGE_LOG_DIR must be an absolute directory and VLLM_DEPLOY_USAGE_LOG_NAME a file name, got '$log_dir' and '$log_name'" \
    "pass serving.tenants' USAGE_LOG_HOST_DIR and usage.log"
fi
if [[ ! "$VLLM_DEPLOY_NGINX_CONTAINER" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]]; then
  die "VLLM_DEPLOY_NGINX_CONTAINER is not a container name: '$VLLM_DEPLOY_NGINX_CONTAINER'" "pass the proxy's container name"
fi
case $VLLM_DEPLOY_USAGE_METRICS in
  0 | 1) metrics=$VLLM_DEPLOY_USAGE_METRICS ;;
  *) die "VLLM_DEPLOY_USAGE_METRICS must be 0 or 1, got '$VLLM_DEPLOY_USAGE_METRICS'" "pass 1 with monitoring on, else 0" ;;
esac

log_path="$log_dir/$log_name"
view_dir="$log_dir/mtail-view"
view_path="$view_dir/$log_name"
program_dir="$etc_dir/mtail"
relink="$lib_dir/usage_log_relink.sh"
rotate_conf="$etc_dir/usage-logrotate.conf"

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

packages=(logrotate)
((metrics)) && packages+=(mtail)
apt_install "${packages[@]}"

# The log exists before mtail looks at it (nginx appends to a file that is there). Group adm,
# as Ubuntu's logs: the package's mtail user is in it.
install -d -m 0755 "$log_dir" "$view_dir"
if [[ ! -e "$log_path" ]]; then
  install -m 0640 /dev/null "$log_path"
  chgrp adm "$log_path" 2>/dev/null || true
fi

# After nginx reopened: mtail's name of the log moves to the new file (atomically: a new link,
# renamed over the old one). Also run at install and by every timer run, so a log nginx
# created anew (a new container) is followed too.
install_file "#!/bin/sh
# Written by install_tenant_usage.sh: point mtail's view at the live usage log.
set -eu
[ -e '$log_path' ] || exit 0
[ '$log_path' -ef '$view_path' ] && exit 0
ln -f '$log_path' '$view_path.new'
mv -f '$view_path.new' '$view_path'" "$relink" 0755

# nginx -s reopen only signals the master, which then has its workers reopen: the relink waits
# for them. A stopped proxy opens the new file when it starts. allowhardlink (logrotate 3.19+,
# Ubuntu 22.04 and later): the live log has mtail's second name; it is renamed, never emptied.
install_file "# Written by install_tenant_usage.sh: the proxy's per-tenant usage log.
$log_path {
    allowhardlink
    size ${VLLM_DEPLOY_USAGE_LOG_MAX_MIB}M
    rotate $VLLM_DEPLOY_USAGE_LOG_KEEP
    missingok
    notifempty
    compress
    delaycompress
    create 0640 root adm
    sharedscripts
    postrotate
        docker exec $VLLM_DEPLOY_NGINX_CONTAINER nginx -s reopen >/dev/null 2>&1 || true
        sleep 2
        $relink
    endscript
}" "$rotate_conf" 0644

install_file "[Unit]
Description=vllm-deploy: rotate the proxy's usage log past ${VLLM_DEPLOY_USAGE_LOG_MAX_MIB} MiB

[Service]
Type=oneshot
ExecStart=/usr/sbin/logrotate --state $state_dir/usage-logrotate.status $rotate_conf
ExecStartPost=$relink" "$systemd_dir/$ROTATE_SERVICE" 0644
install_file "[Unit]
Description=vllm-deploy: check the proxy's usage log size every $VLLM_DEPLOY_USAGE_ROTATE_MINUTES minutes

[Timer]
OnBootSec=${VLLM_DEPLOY_USAGE_ROTATE_MINUTES}min
OnUnitActiveSec=${VLLM_DEPLOY_USAGE_ROTATE_MINUTES}min

[Install]
WantedBy=timers.target" "$systemd_dir/$ROTATE_TIMER" 0644
install -d -m 0755 "$state_dir"
sh "$relink"

if ((metrics)); then
  require_env VLLM_DEPLOY_MTAIL_PROGRAM_B64
  address=${VLLM_DEPLOY_MTAIL_ADDRESS:-127.0.0.1}
  port=${VLLM_DEPLOY_MTAIL_PORT:-3903}
  require_uint port
  if [[ ! "$address" =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    die "VLLM_DEPLOY_MTAIL_ADDRESS must be a loopback address, got '$address'" "pass 127.0.0.1: Prometheus scrapes it on the host"
  fi
  program=$(printf '%s' "$VLLM_DEPLOY_MTAIL_PROGRAM_B64" | base64 -d) ||
    die "VLLM_DEPLOY_MTAIL_PROGRAM_B64 is not base64" "pass serving.monitoring.tenant_usage.program_base64()"
  # A program mtail would refuse fails here, before it replaces the running one.
  staging="$etc_dir/mtail.check"
  rm -rf "$staging" && install -d -m 0755 "$staging"
  printf '%s\n' "$program" >"$staging/tenant_usage.mtail"
  mtail --compile_only --progs "$staging" --logtostderr >&2 ||
    die "mtail cannot compile the program in VLLM_DEPLOY_MTAIL_PROGRAM_B64 (kept in $staging)" \
      "check it with: mtail --compile_only --progs $staging"
  rm -rf "$staging"
  install_file "$program" "$program_dir/tenant_usage.mtail" 0644
  install_file "[Unit]
Description=vllm-deploy: per-tenant usage metrics (mtail over the proxy's usage log) on $address:$port
After=network.target

[Service]
Type=simple
User=$mtail_user
SupplementaryGroups=adm
ExecStart=/usr/bin/mtail --progs=$program_dir --logs=$view_path --address=$address --port=$port --emit_prog_label=false --logtostderr
Restart=on-failure
RestartSec=5
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
MemoryMax=512M

[Install]
WantedBy=multi-user.target" "$systemd_dir/$MTAIL_SERVICE" 0644
elif [[ -e "$systemd_dir/$MTAIL_SERVICE" ]]; then
  systemctl disable --now "$MTAIL_SERVICE" >&2 || die "systemctl disable --now $MTAIL_SERVICE failed" "inspect: systemctl status $MTAIL_SERVICE"
  rm -f "$systemd_dir/$MTAIL_SERVICE" "$program_dir/tenant_usage.mtail"
  changed=1
  log "monitoring is off: removed $MTAIL_SERVICE"
fi

# What the running units were last (re)started with, written once they were: a run killed in
# between is finished by the next one (as install_idle_stop.sh).
applied="$state_dir/.tenant-usage-applied"
want=$(cat "$rotate_conf" "$relink" "$systemd_dir/$ROTATE_SERVICE" "$systemd_dir/$ROTATE_TIMER" \
  "$systemd_dir/$MTAIL_SERVICE" "$program_dir/tenant_usage.mtail" 2>/dev/null || true)
if ((changed)) || [[ "$(cat "$applied" 2>/dev/null)" != "$want" ]]; then
  systemctl daemon-reload
  systemctl enable "$ROTATE_TIMER" >&2
  systemctl restart "$ROTATE_TIMER" || die "systemctl restart $ROTATE_TIMER failed" "inspect: journalctl -u $ROTATE_SERVICE"
  if ((metrics)); then
    # The package's own unit would listen on every interface, on the same port.
    systemctl disable --now mtail.service >&2 2>/dev/null || true
    systemctl enable "$MTAIL_SERVICE" >&2
    systemctl restart "$MTAIL_SERVICE" || die "systemctl restart $MTAIL_SERVICE failed" "inspect: journalctl -u $MTAIL_SERVICE"
  fi
  printf '%s\n' "$want" >"$applied"
  log "usage log rotation installed$( ((metrics)) && printf ', mtail on %s' "$MTAIL_SERVICE")"
else
  units=("$ROTATE_TIMER")
  ((metrics)) && units+=("$MTAIL_SERVICE")
  for unit in "${units[@]}"; do
    if ! systemctl is-active --quiet "$unit"; then
      systemctl start "$unit" || die "systemctl start $unit failed" "inspect: journalctl -u $unit"
      log "started $unit"
    fi
  done
fi
if ((metrics)); then
  printf 'VLLM_DEPLOY_TENANT_USAGE=metrics\n'
else
  printf 'VLLM_DEPLOY_TENANT_USAGE=rotation\n'
fi
