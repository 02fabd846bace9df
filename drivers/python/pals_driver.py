#!/usr/bin/env python3
"""A lockcheck driver (docs/driver-protocol.md) for PALs, PostgreSQL advisory locks (PyPI
`pals`, with SQLAlchemy and psycopg2, pinned by scripts/setup/python.sh), against the Postgres
server the argument names.

    lockcheck check --backend "exec:python drivers/python/pals_driver.py postgres://user@127.0.0.1:5432/postgres"

Claims, each from the library's own documentation (README, 0.4.0):
- mutual exclusion: "PALs makes it easy to use PostgreSQL Advisory Locks to do distributed
  application level locking."
- session_bound: "`pg_advisory_unlock_all()` is implicitly invoked by PostgreSQL whenever a
  connection (a.k.a session) ends, even if the client disconnects ungracefully. So if a
  process crashes or otherwise disappears, PostgreSQL should notice and remove all locks held
  by that connection/session."
- no_ttl: "there is no faculty for expiring an advisory lock in PostgreSQL. If a client holds
  a lock and then sleeps/hangs for mins/hours/days, no other client will be able to get that
  lock until the client releases it." The request's `ttl_ms` is ignored.
Not claimed: server_side_expiry, FIFO, fencing, semaphores (the README promises none).

Operations: acquire (`acquire(acquire_timeout=…)`, whole milliseconds, Postgres's
`lock_timeout`), try_acquire (`acquire(blocking=False)`), release. No refresh or remaining_ttl
(a lock has no time), no cancel (the wait is one `pg_advisory_lock` statement the library
cannot interrupt).

Each grant is a `Lock` of its own, with a connection of its own from the Locker's pool (an
advisory lock belongs to the session that took it), kept until its release. Only that session
can unlock it, so a release another driver process receives is forwarded to the process
holding the lease, whose `Lock.release()` does it (`lockdriver.Holders`); a holder process that
is gone took its sessions, and their locks, with it. A name no driver gave is `not_held`.
"""
import os
import re
import sys
from importlib.metadata import version

import pals
import sqlalchemy as sa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lockdriver import Holders, serve  # noqa: E402

url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", sys.argv[1])
# One connection per held lease: no pool limit (the default pool would block the 16th holder).
locker = pals.Locker("lockcheck", create_engine_callable=lambda: sa.create_engine(url, max_overflow=-1))
holders = Holders("pals", release_ends_with_process=True)


def acquire(req, blocking):
    if req["limit"] != 1:
        return "unsupported", {"error": "PALs has no semaphores"}
    lock = locker.lock(req["key"])
    if blocking and req["wait_ms"] > 0:
        got = lock.acquire(blocking=True, acquire_timeout=req["wait_ms"])
    else:
        got = lock.acquire(blocking=False)
    if not got:
        lock.release()  # gives the connection back (nothing is held: pg_advisory_unlock answers false)
        return ("timed_out" if blocking and req["wait_ms"] > 0 else "not_granted"), {}
    return "ok", {"lease": holders.add(lock.release)}


with locker.engine.connect() as connection:
    server = connection.execute(sa.text("show server_version")).scalar()
serve(
    f"PALs {version('pals')} (SQLAlchemy {sa.__version__}, Postgres {server})",
    {"session_bound": True, "no_ttl": True},
    {
        "acquire": lambda req: acquire(req, True),
        "try_acquire": lambda req: acquire(req, False),
        "release": lambda req: holders.release(req["lease"]),
    },
    indeterminate_errors=(sa.exc.OperationalError, sa.exc.InterfaceError),
)
