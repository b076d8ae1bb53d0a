#!/usr/bin/env bash
# Keeps the host's containers away from the instance metadata service (IMDS), and so from the
# instance role's credentials.
#
# The hop limit of 1 stops containers on a Docker bridge only: nginx, Prometheus, Grafana, the
# exporters and vLLM (and Ray across nodes) share the host's network namespace, where IMDS is
# one hop away. Their processes run as root like the host's own, so a uid match cannot tell
# them apart; their cgroup can. The program starts every container under the systemd slice
# vllm-containers.slice (pulumi-docker's cgroup_parent, with Docker's systemd cgroup driver),
# and an nftables rule in the host's output hook rejects packets to IMDS (169.254.169.254 and
# its IPv6 address fd00:ec2::254) from sockets of that slice (`socket cgroupv2 level 1`: the
# socket's cgroup, its first level under the root). The host's own processes (the SSM agent,
# cloud-init) keep IMDS.
#
# nftables resolves the slice's cgroup when the rule is loaded, so a service that holds the
# slice (Requires=) loads the rules at every boot, before Docker starts the containers.
#
# Environment (paths overridable for tests; production defaults):
#   VLLM_DEPLOY_SYSTEMD_DIR   /etc/systemd/system
#   VLLM_DEPLOY_ETC_DIR       /etc/vllm-deploy
#
# Stdout: one line, VLLM_DEPLOY_IMDS_BLOCKED=vllm-containers.slice
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SLICE=vllm-containers.slice
SERVICE=vllm-imds-guard.service
TABLE=vllm_deploy_imds
systemd_dir=${VLLM_DEPLOY_SYSTEMD_DIR:-/etc/systemd/system}
etc_dir=${VLLM_DEPLOY_ETC_DIR:-/etc/vllm-deploy}
rules="$etc_dir/imds-guard.nft"

# The slice name is a cgroup path only with the systemd driver on cgroup v2.
cgroups=$(docker info --format '{{.CgroupDriver}} {{.CgroupVersion}}') ||
  die "could not ask Docker for its cgroup driver" "check the docker service: systemctl status docker"
if [[ "$cgroups" != "systemd 2" ]]; then
  die "Docker runs with cgroup driver/version '$cgroups'; the IMDS guard needs 'systemd 2'" \
    "use an image with cgroup v2 and Docker's default systemd driver (Ubuntu 22.04 and later, the DLAMI)"
fi

if ! command -v nft >/dev/null; then
  apt_install nftables
fi

# replace_file PATH CONTENT: writes PATH when it differs; status 0 when it changed.
replace_file() {
  if [[ -f "$1" && "$(cat "$1")" == "$2" ]]; then
    return 1
  fi
  printf '%s\n' "$2" >"$1.tmp"
  mv "$1.tmp" "$1"
}

install -m 0755 -d "$etc_dir" "$systemd_dir"
changed=0
replace_file "$rules" "# vllm-deploy: the host's containers (cgroup $SLICE) may not reach IMDS.
table inet $TABLE
delete table inet $TABLE
table inet $TABLE {
  chain output {
    type filter hook output priority filter; policy accept;
    socket cgroupv2 level 1 \"$SLICE\" ip daddr 169.254.169.254 counter reject
    socket cgroupv2 level 1 \"$SLICE\" ip6 daddr fd00:ec2::254 counter reject
  }
}" && changed=1
replace_file "$systemd_dir/$SLICE" "[Unit]
Description=vllm-deploy containers (no access to the instance metadata service)" && changed=1
replace_file "$systemd_dir/$SERVICE" "[Unit]
Description=vllm-deploy: the containers in $SLICE may not reach the instance metadata service
Requires=$SLICE
After=$SLICE
Before=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=$(command -v nft) -f $rules

[Install]
WantedBy=multi-user.target" && changed=1

if ((changed)); then
  systemctl daemon-reload >&2 || die "systemctl daemon-reload failed" "inspect: journalctl -b --no-pager | tail -50"
fi
systemctl enable "$SERVICE" >&2 || die "could not enable $SERVICE" "inspect: systemctl status $SERVICE"
systemctl start "$SLICE" >&2 || die "could not start $SLICE" "inspect: systemctl status $SLICE"
# Loaded now as well as at each boot (the service): the slice exists, so its cgroup resolves.
nft -f "$rules" >&2 || die "could not load the IMDS rules ($rules)" "check them: nft -c -f $rules"
if ! nft list table inet "$TABLE" | grep -q "cgroupv2 level 1 \"$SLICE\" ip daddr 169.254.169.254"; then
  die "the IMDS rule is not loaded after nft -f $rules" "inspect: nft list ruleset; systemctl status $SERVICE"
fi
log "containers in $SLICE cannot reach IMDS (nftables table inet $TABLE)"
echo "VLLM_DEPLOY_IMDS_BLOCKED=$SLICE"
