# shellcheck shell=bash
# Sourced by tools/*: creates .venv on a fresh clone and (re)installs a requirements file's
# hashed lock (requirements-dev.txt -> requirements-dev.lock, written by tools/lock) when the
# lock changed since the last install. pip's hash-checking mode (--require-hashes) refuses any
# file whose sha256 the lock does not list. Not executable on its own.

ensure_venv() {
  local requirements=$1
  local lock="${requirements%.txt}.lock"
  local python="${PYTHON:-python3}"
  if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
  fi
  local stamp want
  stamp=".venv/.$(basename "$lock").sha256"
  want=$(sha256sum "$lock" | cut -d' ' -f1)
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r "$lock" >&2
    echo "$want" >"$stamp"
  fi
}
