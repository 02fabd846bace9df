#!/usr/bin/env python3
"""A lockcheck driver (docs/driver-protocol.md) for dflockd-client (PyPI `dflockd-client`,
pinned by scripts/setup/python.sh), against a dflockd server: `lockcheck serve` or the Python
dflockd. The argument is the server's HOST:PORT.

    lockcheck check --backend "exec:python drivers/python/dflockd_client_driver.py 127.0.0.1:6388"

It drives the client's documented low-level functions (`acquire`, `release`, `renew`,
`sem_acquire`, … over a `SyncConn`: "the docs … two-phase acquisition, exception handling,
low-level transport"), not `SyncDistributedLock`, whose background renewal ("lease auto-renews
in a daemon thread") would keep every lease alive and leave nothing of the lease to check.
Each acquire has a connection of its own, kept while its lease is held (the lock objects own
one connection each, too).

Claims, each from the library's own documentation (README and docstrings, 2.1.1):
- fencing: "Every grant returns a 32-char hex token whose first 16 hex chars are a monotonic
  `uint64` (big-endian) that strictly increases on every grant from a server." (the fence is
  `fence_from_token(token)`).
- fifo, semaphores: "Distributed locks and counting semaphores with FIFO ordering".
- server_side_expiry: leases have a server-side TTL ("`lease_ttl_s`"; "Background lease
  renewal" exists because a lease ends on the server unless renewed).
- session_bound: a lease lives on the connection that acquired it, and both servers free it
  when that connection closes (dflockd's `--auto-release-on-disconnect`, on by default;
  `lockcheck serve` likewise).
Not claimed: surviving a server restart, fencing across restarts (promised only "on a
non-regressing wall clock, or … with --fence-state-file", neither of which is set up here).

Operations: acquire (`acquire(conn, key, acquire_timeout_s, lease_ttl_s)`, whole seconds),
try_acquire (the same with a zero timeout), release, refresh (`renew(…, lease_ttl_s)`), each
for semaphores through the `sem_*` functions. No remaining_ttl (the client has no call for it
outside a renew), no cancel (a waiting `l` cannot be withdrawn on its connection). A lease is
asked for ttl rounded up to a second, and the reply says so.
"""
import math
import os
import sys
import threading
from importlib.metadata import version

import dflockd_client
from dflockd_client import _sync as dl
from dflockd_client import fence_from_token
from dflockd_client.errors import DflockdError, DflockdTimeoutError, LeaseExpiredError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lockdriver import NotHeld, serve  # noqa: E402

host, port = sys.argv[1].rsplit(":", 1)
port = int(port)
held = {}  # lease -> the connection that acquired it
held_lock = threading.Lock()


def connect():
    return dl.open_conn(host, port, ssl_context=None, connect_timeout_s=5)


def seconds(ms):
    return max(1, math.ceil(ms / 1000))


def acquire(req, wait_ms):
    limit, ttl = req["limit"], seconds(req["ttl_ms"])
    conn = connect()
    try:
        wait = math.ceil(wait_ms / 1000)
        if limit == 1:
            token, lease_s = dl.acquire(conn, req["key"], wait, ttl)
        else:
            token, lease_s = dl.sem_acquire(conn, req["key"], wait, limit, ttl)
    except DflockdTimeoutError:
        conn.close()
        return ("timed_out" if wait_ms else "not_granted"), {}
    except BaseException:
        conn.close()
        raise
    with held_lock:
        held[token] = conn
    return "ok", {"lease": token, "fence": fence_from_token(token), "ttl_ms": lease_s * 1000}


def on_a_connection(req, call):
    """`call(conn)` on the lease's own connection where this driver holds it, else on a fresh
    one (a lease granted to another driver)."""
    with held_lock:
        conn = held.get(req["lease"])
    if conn is not None:
        return call(conn), conn
    fresh = connect()
    try:
        return call(fresh), None
    finally:
        fresh.close()


def release(req):
    semaphore = req["limit"] != 1
    try:
        _, conn = on_a_connection(
            req,
            lambda c: (dl.sem_release if semaphore else dl.release)(c, req["key"], req["lease"]),
        )
    except (DflockdError, ValueError):
        raise NotHeld()
    with held_lock:
        held.pop(req["lease"], None)
    if conn is not None:
        conn.close()
    return "ok", {}


def refresh(req):
    ttl, semaphore = seconds(req["ttl_ms"]), req["limit"] != 1
    try:
        left, _ = on_a_connection(
            req,
            lambda c: (dl.sem_renew if semaphore else dl.renew)(c, req["key"], req["lease"], ttl),
        )
    except (DflockdError, LeaseExpiredError, ValueError):
        raise NotHeld()
    return "ok", {"ttl_ms": left * 1000}


serve(
    f"dflockd-client {version('dflockd-client')} on {sys.argv[1]}",
    {"fencing": True, "fifo": True, "semaphores": True, "server_side_expiry": True, "session_bound": True},
    {
        "acquire": lambda req: acquire(req, req["wait_ms"]),
        "try_acquire": lambda req: acquire(req, 0),
        "release": release,
        "refresh": refresh,
    },
    indeterminate_errors=(ConnectionError, OSError),
)
