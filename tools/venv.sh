# shellcheck shell=bash
# Sourced by tools/*: creates .venv on a fresh clone and (re)installs a requirements file
# when its content changed since the last install. Not executable on its own.

ensure_venv() {
  local requirements=$1
  local python="${PYTHON:-python3}"
  if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
  fi
  local stamp want
  stamp=".venv/.$(basename "$requirements").sha256"
  want=$(cat requirements.txt "$requirements" | sha256sum | cut -d' ' -f1)
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
    echo "$want" >"$stamp"
  fi
}
