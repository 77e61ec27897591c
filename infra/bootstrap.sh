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

# grafana-client (a dependency until November 2026) brought niquests, whose urllib3-future
# replaces the urllib3 package in the venv (its .pth copies itself over urllib3/ at every start);
# MinIO's client then spends ~35% more CPU per PUT. A venv made back then keeps it whatever
# pyproject.toml says now: drop the fork and put real urllib3 back. Checked on every run (a
# glob, no Python start) because a venv whose stamp is current may still hold it.
drop_urllib3_future() {
  local site
  compgen -G '.venv/lib/python3*/site-packages/urllib3_future*' >/dev/null \
    || compgen -G '.venv/lib/python3*/site-packages/urllib3/.u3f_sync' >/dev/null || return 0
  echo "bootstrap: removing urllib3-future (it replaces urllib3) and reinstalling urllib3" >&2
  .venv/bin/python -m pip uninstall -y -q --disable-pip-version-check \
    urllib3-future niquests grafana-client jh2 qh3 wassima  # the last three: only the fork uses them
  for site in .venv/lib/python3*/site-packages; do
    rm -rf "$site/urllib3"  # the fork's files that urllib3's own RECORD does not list
  done
  .venv/bin/python -m pip install -q --disable-pip-version-check --force-reinstall --no-deps 'urllib3>=2,<3'
}

if [ -x .venv/bin/python ]; then drop_urllib3_future; fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$stamp" ] && [ -x .venv/bin/sealstream ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
rm -f .venv/.installed-*
touch "$stamp"
