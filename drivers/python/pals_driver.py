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
Not claimed: server_side_expiry, and no TTL at all: "there is no faculty for expiring an
advisory lock in PostgreSQL. If a client holds a lock and then sleeps/hangs for
mins/hours/days, no other client will be able to get that lock until the client releases it."
The request's `ttl_ms` is ignored. Nor FIFO, fencing, semaphores (the README promises none).

Operations: acquire (`acquire(acquire_timeout=…)`, whole milliseconds, Postgres's
`lock_timeout`), try_acquire (`acquire(blocking=False)`), release. No refresh or remaining_ttl
(a lock has no time), no cancel (the wait is one `pg_advisory_lock` statement the library
cannot interrupt).

Each grant is a `Lock` of its own, with a connection of its own from the Locker's pool (an
advisory lock belongs to the session that took it), kept until its release. Only that session
can unlock it, and PALs offers no other way, so a lease is released only by the driver process
that was granted it: a lease of another process is answered `unsupported` (the suite skips
it), a name no driver gave (`pals-PID-N` is the form) `not_held`.
"""
import os
import re
import sys
import threading
from importlib.metadata import version

import pals
import sqlalchemy as sa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lockdriver import NotHeld, serve  # noqa: E402

url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", sys.argv[1])
# One connection per held lease: no pool limit (the default pool would block the 16th holder).
locker = pals.Locker("lockcheck", create_engine_callable=lambda: sa.create_engine(url, max_overflow=-1))
LEASE = re.compile(r"pals-(\d+)-(\d+)")
held = {}  # lease -> its Lock
held_lock = threading.Lock()
granted = iter(range(1, 1 << 62))


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
    with held_lock:
        lease = f"pals-{os.getpid()}-{next(granted)}"
        held[lease] = lock
    return "ok", {"lease": lease}


def release(req):
    name = LEASE.fullmatch(req["lease"])
    if name is None:
        raise NotHeld()
    if int(name.group(1)) != os.getpid():
        return "unsupported", {"error": "PALs releases a lock only on the session that took it"}
    with held_lock:
        lock = held.pop(req["lease"], None)
    if lock is None or not lock.release():
        raise NotHeld()
    return "ok", {}


with locker.engine.connect() as connection:
    server = connection.execute(sa.text("show server_version")).scalar()
serve(
    f"PALs {version('pals')} (SQLAlchemy {sa.__version__}, Postgres {server})",
    {"session_bound": True},
    {
        "acquire": lambda req: acquire(req, True),
        "try_acquire": lambda req: acquire(req, False),
        "release": release,
    },
    indeterminate_errors=(sa.exc.OperationalError, sa.exc.InterfaceError),
)
