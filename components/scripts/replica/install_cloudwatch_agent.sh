#!/usr/bin/env bash
# Bake time, on the builder, only for a fleet with monitoring on: installs the Amazon CloudWatch
# agent from AWS's package, its GPG signature checked against AWS's public key first, so each
# replica can run it at boot (boot.sh, with the config serving/monitoring/cloudwatch.py renders).
# The key's fingerprint is AWS's published one ("Verifying the signature of the CloudWatch agent
# package", CloudWatch user guide): 9376 16F3 450B 7D80 6CBD 9725 D581 6730 3B78 9C72; a package
# or key that does not match is not installed. Starts nothing (the builder serves nothing).
# Idempotent: an installed agent is left as it is.
#
# Environment (tests override): VLLM_DEPLOY_CWAGENT_URL  https://amazoncloudwatch-agent.s3.amazonaws.com
#   VLLM_DEPLOY_CWAGENT_CTL  /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl
# Stdout: VLLM_DEPLOY_CWAGENT=installed|present
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

base=${VLLM_DEPLOY_CWAGENT_URL:-https://amazoncloudwatch-agent.s3.amazonaws.com}
ctl=${VLLM_DEPLOY_CWAGENT_CTL:-/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl}
fingerprint=937616F3450B7D806CBD9725D58167303B789C72

if [[ -x "$ctl" ]]; then
  log "the CloudWatch agent is already installed ($ctl)"
  printf 'VLLM_DEPLOY_CWAGENT=present\n'
  exit 0
fi
arch=$(dpkg --print-architecture) || die "dpkg --print-architecture failed" "the builder must be Ubuntu (a .deb system)"
case "$arch" in
  amd64 | arm64) ;;
  *) die "no CloudWatch agent package for architecture $arch" "use an amd64 or arm64 instance type" ;;
esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for file in "assets/amazon-cloudwatch-agent.gpg" "ubuntu/$arch/latest/amazon-cloudwatch-agent.deb" \
  "ubuntu/$arch/latest/amazon-cloudwatch-agent.deb.sig"; do
  curl -fsSL --retry 3 --proto '=https' --tlsv1.2 -o "$work/$(basename "$file")" "$base/$file" ||
    die "cannot download $base/$file" "the builder needs HTTPS to S3; check its route and DNS"
done
export GNUPGHOME="$work/gnupg"
install -d -m 0700 "$GNUPGHOME"
gpg --batch --quiet --import "$work/amazon-cloudwatch-agent.gpg" 2>/dev/null ||
  die "cannot import the CloudWatch agent's public key" "check $base/assets/amazon-cloudwatch-agent.gpg"
got=$(gpg --batch --with-colons --fingerprint 2>/dev/null | awk -F: '$1 == "fpr" {print $10; exit}')
[[ "$got" == "$fingerprint" ]] ||
  die "the CloudWatch agent's key has fingerprint ${got:-none}, not AWS's $fingerprint" "do not install it; report it to AWS"
gpg --batch --quiet --verify "$work/amazon-cloudwatch-agent.deb.sig" "$work/amazon-cloudwatch-agent.deb" 2>/dev/null ||
  die "the CloudWatch agent package's signature does not verify" "do not install it; download again"
dpkg -i -E "$work/amazon-cloudwatch-agent.deb" >&2 || die "dpkg -i amazon-cloudwatch-agent.deb failed" "inspect: dpkg -l amazon-cloudwatch-agent"
log "installed the CloudWatch agent ($arch, signature verified)"
printf 'VLLM_DEPLOY_CWAGENT=installed\n'
