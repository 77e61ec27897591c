#!/usr/bin/env bash
# Make the Python environment: Python >= 3.11 with venv, then .venv with sealstream and its
# dependencies (pip's cache makes the second run quick). Idempotent; `make` calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
need_apt=()
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  need_apt+=(python3 python3-venv)
elif ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: sealstream needs Python 3.11 or newer but $PYTHON is $("$PYTHON" -V 2>&1); set PYTHON=/path/to/python3.11 and run again." >&2
  exit 1
elif ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need_apt+=(python3-venv)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: Python's venv is missing; run 'sudo apt-get install -y ${need_apt[*]}' and run again." >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$stamp" ] && [ -x .venv/bin/sealstream ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
rm -f .venv/.installed-*
touch "$stamp"
