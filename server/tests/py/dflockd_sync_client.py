"""The real Python dflockd client (dflockd-client, sync API) against a dflockd server.

Run by conformance/tests/dflockd_interop.rs against lockcheck's reference server:
locks, fencing tokens, semaphores, two-phase acquisition, renewal, stats, auth and TLS.
Exits non-zero (with a traceback) on the first failed expectation.
"""

import argparse
import ssl
import time

import dflockd_client as dc
from dflockd_client import _sync

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--cafile")
parser.add_argument("--secret")
parser.add_argument("--prefix", default="sync")
args = parser.parse_args()

servers = [("127.0.0.1", args.port)]
ctx = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
common = dict(servers=servers, ssl_context=ctx, auth_token=args.secret)


def key(name):
    return f"{args.prefix}-{name}"


def lock(name, **kw):
    return dc.SyncDistributedLock(key(name), **{**common, **kw})


def semaphore(name, limit, **kw):
    return dc.SyncDistributedSemaphore(key(name), limit=limit, **{**common, **kw})


# Locks, and fencing tokens in the newest format.
a = lock("lock")
assert a.acquire()
first = a.token
b = lock("lock", acquire_timeout_s=0)
assert not b.acquire(), "a lock is exclusive"
assert a.release()
assert b.acquire()
assert dc.fence_from_token(b.token) > dc.fence_from_token(first), (first, b.token)
assert b.release()
print("ok: locks and fencing tokens")

# Semaphores and their limit rule.
permits = [semaphore("sem", 2, acquire_timeout_s=0) for _ in range(3)]
assert permits[0].acquire() and permits[1].acquire()
assert not permits[2].acquire(), "the limit is 2"
try:
    semaphore("sem", 3, acquire_timeout_s=0).acquire()
    raise AssertionError("a different limit was accepted")
except dc.LimitMismatchError:
    pass
assert permits[0].release()
assert permits[2].acquire()
for p in permits[1:]:
    assert p.release()
print("ok: semaphores")

# Two-phase acquisition.
holder = lock("two-phase")
assert holder.enqueue() == "acquired"
waiter = lock("two-phase")
assert waiter.enqueue() == "queued"
assert holder.release()
assert waiter.wait(5)
assert waiter.release()
print("ok: two-phase")

# Background renewal: a two-second lease held for 3 s (the passing time is the test).
# (The client renews at half the lease but never more often than once a second, so a
# one-second lease would race its own renewal.)
renewed = lock("renew", lease_ttl_s=2)
assert renewed.acquire()
time.sleep(3)
assert not lock("renew", acquire_timeout_s=0).acquire(), "renewal kept the lease"
assert renewed.release()
print("ok: renewal")

# Stats.
held = lock("stats")
assert held.acquire()
conn = _sync.open_conn("127.0.0.1", args.port, ssl_context=ctx, connect_timeout_s=5)
if args.secret:
    _sync.authenticate(conn, args.secret)
stats = _sync.stats(conn)
assert any(entry["key"] == key("stats") for entry in stats["locks"]), stats
conn.close()
assert held.release()
print("ok: stats")

# Auth.
if args.secret:
    for wrong in ("wrong", None):
        intruder = dc.SyncDistributedLock(key("auth"), servers=servers, ssl_context=ctx, auth_token=wrong)
        try:
            intruder.acquire()
            raise AssertionError(f"auth token {wrong!r} was accepted")
        except (PermissionError, dc.AuthError):
            pass
    print("ok: auth")

if ctx is not None:
    print("ok: tls")
