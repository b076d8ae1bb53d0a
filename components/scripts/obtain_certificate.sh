#!/usr/bin/env bash
# Obtains a Let's Encrypt certificate for the endpoint's domain (HTTP-01, webroot)
# with certbot in a container, and installs a systemd timer that renews it.
# Nginx must already answer http://<domain>/.well-known/acme-challenge/ on port 80
# from the webroot directory below, and <domain> must resolve to this host.
#
# Environment:
#   VLLM_DEPLOY_DOMAIN           DNS name of the endpoint (required)
#   VLLM_DEPLOY_CERT_DIR         certbot's state, mounted as /etc/letsencrypt; the
#                                certificate ends up in <dir>/live/<domain>/ (required)
#   VLLM_DEPLOY_ACME_EMAIL       account e-mail for expiry notices (optional)
#   VLLM_DEPLOY_ACME_WEBROOT     directory nginx serves the challenges from
#                                (/var/lib/vllm-deploy/acme-webroot)
#   VLLM_DEPLOY_ACME_STAGING     1: use Let's Encrypt's staging CA (untrusted test certificates)
#   VLLM_DEPLOY_ACME_MODE        auto (default): certbot answers on port 80 itself (standalone)
#                                when nothing listens there yet -- the first deploy, before nginx
#                                can start without a certificate -- else through nginx (webroot)
#   VLLM_DEPLOY_ACME_HTTP_PORT   the port checked for a listener (80)
#   VLLM_DEPLOY_PUBLIC_IP        the host's public address: before asking Let's Encrypt (whose
#                                failed validations are rate-limited), <domain> must resolve to it
#   VLLM_DEPLOY_NGINX_CONTAINER  container to send SIGHUP (reload) after each renewal run
#   VLLM_DEPLOY_CERTBOT_IMAGE    certbot/certbot:v5.8.0
#   VLLM_DEPLOY_SYSTEMD_DIR      /etc/systemd/system
#
# Stdout: one line, VLLM_DEPLOY_CERT=<fullchain.pem> key=<privkey.pem>
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RENEW_BEFORE_SECONDS=$((30 * 24 * 3600))
UNIT=vllm-deploy-certbot-renew

require_env VLLM_DEPLOY_DOMAIN VLLM_DEPLOY_CERT_DIR
domain=${VLLM_DEPLOY_DOMAIN,,}
cert_dir=${VLLM_DEPLOY_CERT_DIR%/}
email=${VLLM_DEPLOY_ACME_EMAIL:-}
webroot=${VLLM_DEPLOY_ACME_WEBROOT:-/var/lib/vllm-deploy/acme-webroot}
image=${VLLM_DEPLOY_CERTBOT_IMAGE:-certbot/certbot:v5.8.0}
nginx_container=${VLLM_DEPLOY_NGINX_CONTAINER:-}
systemd_dir=${VLLM_DEPLOY_SYSTEMD_DIR:-/etc/systemd/system}
live="$cert_dir/live/$domain"

if [[ ! "$domain" =~ ^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]*[a-z0-9]$ ]]; then
  die "VLLM_DEPLOY_DOMAIN must be a DNS name such as llm.example.com, got '$VLLM_DEPLOY_DOMAIN'" \
    "set the domain to a name whose A record points at this host"
fi
if [[ -n "$email" && ! "$email" =~ ^[^[:space:]@]+@[^[:space:]@]+\.[^[:space:]@]+$ ]]; then
  die "VLLM_DEPLOY_ACME_EMAIL is not an e-mail address: '$email'" "set a valid e-mail address or leave it empty"
fi
# Both paths go into systemd unit lines, which split on whitespace.
for path in "$cert_dir" "$webroot"; do
  if [[ "$path" != /* || "$path" =~ [[:space:]] ]]; then
    die "certificate paths must be absolute and contain no spaces, got '$path'" \
      "set VLLM_DEPLOY_CERT_DIR / VLLM_DEPLOY_ACME_WEBROOT to plain absolute paths"
  fi
done

cert_valid() {
  [[ -s "$live/fullchain.pem" && -s "$live/privkey.pem" ]] &&
    openssl x509 -checkend "$RENEW_BEFORE_SECONDS" -noout -in "$live/fullchain.pem" >/dev/null 2>&1
}

# http_port_in_use: something (nginx) already answers on the ACME HTTP port.
http_port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/${VLLM_DEPLOY_ACME_HTTP_PORT:-80}") 2>/dev/null
}

acme_mode() {
  local mode=${VLLM_DEPLOY_ACME_MODE:-auto}
  case $mode in
    webroot | standalone) echo "$mode" ;;
    auto) if http_port_in_use; then echo webroot; else echo standalone; fi ;;
    *) die "VLLM_DEPLOY_ACME_MODE must be auto, webroot or standalone, got '$mode'" "unset it to use auto" ;;
  esac
}

obtain() {
  local mode publish=()
  mode=$(acme_mode)
  local args=(certonly -d "$domain" --non-interactive --agree-tos --keep-until-expiring)
  if [[ "$mode" == standalone ]]; then
    args=(certonly --standalone "${args[@]:1}")
    publish=(-p "${VLLM_DEPLOY_ACME_HTTP_PORT:-80}:80")
  else
    args=(certonly --webroot -w /var/www/acme "${args[@]:1}")
  fi
  if [[ -n "$email" ]]; then
    args+=(--email "$email" --no-eff-email)
  else
    args+=(--register-unsafely-without-email)
  fi
  if [[ "${VLLM_DEPLOY_ACME_STAGING:-0}" == 1 ]]; then
    args+=(--staging)
  fi
  install -d -m 0755 "$cert_dir" "$webroot/.well-known/acme-challenge"
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    retry "docker pull $image" docker pull -q "$image" >&2 ||
      die "could not pull $image" "check the host's access to Docker Hub, then re-run"
  fi
  log "requesting a certificate for $domain from Let's Encrypt ($mode)"
  # Few attempts: Let's Encrypt limits failed validations per hostname and hour.
  VLLM_DEPLOY_RETRY_ATTEMPTS=${VLLM_DEPLOY_CERTBOT_ATTEMPTS:-2} \
    retry "certbot certonly for $domain" docker run --rm "${publish[@]}" -v "$cert_dir:/etc/letsencrypt" \
    -v "$webroot:/var/www/acme" "$image" "${args[@]}" >&2 ||
    die "Let's Encrypt did not issue a certificate for $domain" \
      "check that $domain resolves to this host's public IP, that port 80 is open to the internet, and that nginx serves $webroot at http://$domain/.well-known/acme-challenge/ (certbot's own message is above)"
  cert_valid ||
    die "certbot finished but $live/fullchain.pem is missing or expires within 30 days" \
      "inspect $cert_dir/live and $cert_dir/renewal/$domain.conf"
}

renew_service() {
  cat <<UNIT_EOF
[Unit]
Description=Renew the Let's Encrypt certificate for $domain (vllm-deploy)
Requires=docker.service
After=docker.service network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/bin/docker run --rm -v $cert_dir:/etc/letsencrypt -v $webroot:/var/www/acme $image renew --webroot -w /var/www/acme --quiet
UNIT_EOF
  if [[ -n "$nginx_container" ]]; then
    # SIGHUP makes nginx re-read its configuration and certificates without dropping connections.
    printf 'ExecStartPost=/usr/bin/docker kill --signal=HUP %s\n' "$nginx_container"
  fi
}

renew_timer() {
  cat <<UNIT_EOF
[Unit]
Description=Twice-daily Let's Encrypt renewal check for $domain (vllm-deploy)

[Timer]
OnCalendar=*-*-* 00,12:00:00
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
UNIT_EOF
}

# write_if_changed FILE CONTENT: returns 0 when the file was (re)written.
write_if_changed() {
  if [[ -f "$1" && "$(cat "$1")" == "$2" ]]; then
    return 1
  fi
  printf '%s\n' "$2" >"$1.tmp"
  mv "$1.tmp" "$1"
}

install_renewal_timer() {
  local changed=0
  install -d -m 0755 "$systemd_dir"
  if write_if_changed "$systemd_dir/$UNIT.service" "$(renew_service)"; then changed=1; fi
  if write_if_changed "$systemd_dir/$UNIT.timer" "$(renew_timer)"; then changed=1; fi
  if ((changed)); then
    if ! { systemctl daemon-reload >&2 && systemctl enable --now "$UNIT.timer" >&2; }; then
      die "could not enable the renewal timer $UNIT.timer" "inspect it on the host: systemctl status $UNIT.timer"
    fi
    log "renewal timer $UNIT.timer installed"
  fi
}

# dns_points_here: <domain> resolves to this host's public address.
dns_points_here() {
  local expected=${VLLM_DEPLOY_PUBLIC_IP:-}
  [[ -z "$expected" ]] && return 0
  getent ahostsv4 "$domain" 2>/dev/null | cut -d' ' -f1 | grep -qxF "$expected"
}

if cert_valid; then
  log "certificate for $domain is valid for more than 30 days; not requesting a new one"
else
  dns_points_here ||
    die "$domain does not resolve to this host's address ${VLLM_DEPLOY_PUBLIC_IP:-}" \
      "create a DNS A record $domain -> ${VLLM_DEPLOY_PUBLIC_IP:-} (the stack's Elastic IP, output publicIp), wait for it to propagate, then run pulumi up again"
  obtain
fi
install_renewal_timer
printf 'VLLM_DEPLOY_CERT=%s key=%s\n' "$live/fullchain.pem" "$live/privkey.pem"
