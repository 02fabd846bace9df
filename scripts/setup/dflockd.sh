#!/usr/bin/env bash
# What the dflockd tests need: the real Python dflockd 0.5 server and the dflockd-client
# package (both in the venv python.sh builds; run it first, it is idempotent). The reference
# server is Rust and runs in-process, so nothing else is installed. Fuzzing (cargo-fuzz,
# nightly) is a separate, documented command: see fuzz/README.md.
set -euo pipefail
here="$(dirname "$0")"
source "$here/../env.sh"
bash "$here/python.sh"
if ! "$LOCKCHECK_VENV/bin/dflockd" --help >/dev/null 2>&1; then
  echo "setup/dflockd: $LOCKCHECK_VENV/bin/dflockd does not run" >&2
  exit 1
fi
if ! "$LOCKCHECK_VENV/bin/python" -c 'import dflockd_client, dflockd.server' 2>/dev/null; then
  echo "setup/dflockd: the venv lacks dflockd-client or dflockd" >&2
  exit 1
fi
echo "setup/dflockd: Python dflockd server and client ready in $LOCKCHECK_VENV"
