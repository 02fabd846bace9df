#!/usr/bin/env bash
# Postgres for the tests: Debian's postgresql (15 on bookworm). The tests run `initdb` and
# `postgres` themselves, as processes in a scratch directory of their own (see
# support/src/postgres.rs); as root they run them as the `postgres` system user through
# `setpriv`, because Postgres refuses to run as root. Idempotent: does nothing when the binaries
# and that user are there. Debian's package may start a system cluster on 5432; the tests use
# free ports and leave it alone.
#
# LOCKCHECK_POSTGRES_BIN names the directory of initdb and postgres (default
# /usr/lib/postgresql/15/bin).
set -euo pipefail
source "$(dirname "$0")/../env.sh"
bin="${LOCKCHECK_POSTGRES_BIN:-/usr/lib/postgresql/15/bin}"

if [ ! -x "$bin/postgres" ] || [ ! -x "$bin/initdb" ] || ! command -v setpriv >/dev/null 2>&1; then
  echo "setup/postgres: installing postgresql (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql util-linux >/dev/null
fi
if [ "$(id -u)" = 0 ] && ! getent passwd postgres >/dev/null; then
  echo "setup/postgres: creating the postgres system user"
  useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
fi
"$bin/postgres" --version
