#!/usr/bin/env bash
# libfaketime for the nemesis's clock faults (support/src/clock.rs): Debian's `faketime` and
# `libfaketime`, preloaded into a server process whose wall clock a test then steps or skews.
# Idempotent: does nothing when the library is already there.
#
# LOCKCHECK_LIBFAKETIME names the library if it lives elsewhere; this script leaves it alone
# when it exists.
set -euo pipefail
source "$(dirname "$0")/../env.sh"
arch="$(uname -m)"
lib="${LOCKCHECK_LIBFAKETIME:-/usr/lib/${arch}-linux-gnu/faketime/libfaketime.so.1}"

if [ -f "$lib" ] && command -v faketime >/dev/null 2>&1; then
  exit 0
fi
echo "setup/faketime: installing faketime and libfaketime (apt)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq faketime libfaketime >/dev/null
test -f "$lib" || { echo "setup/faketime: no $lib after the install" >&2; exit 1; }
