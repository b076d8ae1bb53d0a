# Sourced by every stub command. Stubs stand in for the host's system tools: each
# appends its argv to $STUB_STATE/calls.log and keeps the simulated host state as
# files under $STUB_STATE. $STUB_BIN is the directory first on PATH; installing a
# package "installs" its commands by linking their stubs there.
# shellcheck shell=bash
set -euo pipefail
STUB_NAME=$(basename "$0")
{
  printf '%s' "$STUB_NAME"
  printf ' %q' "$@"
  printf '\n'
} >>"$STUB_STATE/calls.log"

# stub_maybe_fail KEY [EXIT]: fail when $STUB_STATE/fail/KEY holds "always" or a
# positive count of failures still to give (decremented on each failure).
stub_maybe_fail() {
  local file="$STUB_STATE/fail/$1" left
  [[ -f "$file" ]] || return 0
  left=$(cat "$file")
  if [[ "$left" != always ]]; then
    ((left > 0)) || return 0
    echo $((left - 1)) >"$file"
  fi
  echo "stub $STUB_NAME: simulated failure ($1)" >&2
  exit "${2:-1}"
}

stub_link() {
  ln -sf "$STUB_SRC/$1" "$STUB_BIN/$1"
}
