#!/usr/bin/env python3
"""A lockcheck driver (docs/driver-protocol.md) for kazoo's ZooKeeper recipes (PyPI `kazoo`,
pinned by scripts/setup/python.sh): `Lock` (`lock`) or `Semaphore` (`semaphore`), against the
ZooKeeper ensemble the second argument names.

    lockcheck check --backend "exec:python drivers/python/kazoo_driver.py lock 127.0.0.1:2181"
    lockcheck check --backend "exec:python drivers/python/kazoo_driver.py semaphore 127.0.0.1:2181"

Claims, each from the library's own documentation (`kazoo.recipe.lock`, 2.11.0):
- session_bound: "In the event that a LOST state occurs, its certain that the lock and/or the
  lease has been lost." and `Lock.acquire`: "When ephemeral is set to False session
  expiration will not release the lock" (the default, ephemeral, lock node ends with the
  session; a Semaphore's lease node is ephemeral too).
- semaphores (`semaphore` only): "max_leases: The maximum amount of leases available for the
  semaphore."
- no_ttl: a kazoo lock has no TTL ("Acquire the lock. By defaults blocks and waits forever.";
  nothing ends a held lock but its release or its session), so the request's `ttl_ms` is
  ignored and a lease is held until it is released.
Not claimed: server_side_expiry (there is no expiry), and FIFO: the lock queues contenders by
sequence number and each watches its predecessor, but kazoo's documentation promises no order of grants ("contenders(): Return an ordered list of the
current contenders" is about the list). Nor fencing (the lock node's sequence number is not
offered as a token), push wake-ups, or surviving a server restart.

Operations: acquire (`acquire(timeout=…)`, seconds as a float; `LockTimeout` is a time-out),
try_acquire (`acquire(blocking=False)`), release, cancel (`cancel()`: "Cancel a pending lock
acquire." / "Cancel a pending semaphore acquire."). No refresh and no remaining_ttl: a lease
has no time to extend or count down.

A lease's name is its lock node's name (`Lock`: `<uuid hex>__lock__<sequence>`; `Semaphore`:
its lease node, `<uuid hex>`) under the key's path, so any driver process can release it.
Release deletes that node, as the recipes' own `release` does (`_delete_node`, `delete`), and
answers not_held when the node is gone: the recipes' `release` swallows `NoNodeError` and
answers True for a lease that ended with its session, which the protocol must answer not_held.
Keys are hex-encoded into one path segment (a key may hold `/` or characters ZooKeeper
refuses in a path).

`Semaphore.acquire` clears a cancellation made before it runs (`self.cancelled = False`): an
acquire whose cancel arrived first is answered cancelled without starting; a cancel in the
few instructions between that check and the clearing is lost, and the acquire runs out its
wait.
"""
import os
import re
import sys
import threading
from importlib.metadata import version

from kazoo.client import KazooClient
from kazoo.exceptions import (
    CancelledError,
    ConnectionLoss,
    LockTimeout,
    NoNodeError,
    OperationTimeoutError,
    SessionExpiredError,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lockdriver import NotHeld, cancelled, serve  # noqa: E402

mode, hosts = sys.argv[1], sys.argv[2]
if mode not in ("lock", "semaphore"):
    sys.exit(f"usage: kazoo_driver.py lock|semaphore HOSTS (not {mode!r})")
# A 2 s session: a crashed holder's lock node is removed within it.
client = KazooClient(hosts=hosts, timeout=2.0)
client.start(timeout=10)
LEASE = re.compile(r"[0-9a-f]{32}__lock__\d{10}" if mode == "lock" else r"[0-9a-f]{32}")


def path(key):
    return f"/lockcheck/{mode}/{key.encode().hex()}"


def recipe(req):
    if mode == "lock":
        return client.Lock(path(req["key"]))
    return client.Semaphore(path(req["key"]), max_leases=req["limit"])


def lease_name(lock):
    return lock.node if mode == "lock" else lock.create_path.rsplit("/", 1)[1]


def acquire(req, blocking):
    if mode == "lock" and req["limit"] != 1:
        return "unsupported", {"error": "kazoo's Lock has one holder (the semaphore mode has more)"}
    lock = recipe(req)
    wait = blocking and req["wait_ms"] > 0
    if not wait:
        got = lock.acquire(blocking=False)
        return ("ok", {"lease": lease_name(lock)}) if got else ("not_granted", {})
    cancel = cancelled(req["id"])
    if cancel.is_set():
        return "cancelled", {}
    # The library's own cancel, from the moment the protocol's arrives (set once the acquire is
    # over too, so the thread ends; a cancel of a finished acquire changes nothing).
    threading.Thread(target=lambda: cancel.wait() and lock.cancel(), daemon=True).start()
    try:
        got = lock.acquire(blocking=True, timeout=req["wait_ms"] / 1000)
    except LockTimeout:
        return "timed_out", {}
    except CancelledError:
        return "cancelled", {}
    finally:
        cancel.set()
    if not got:
        return "timed_out", {}
    return "ok", {"lease": lease_name(lock)}


def release(req):
    if not LEASE.fullmatch(req["lease"]):
        raise NotHeld()  # no lock node of this recipe has that name
    try:
        client.delete(f"{path(req['key'])}/{req['lease']}")
    except NoNodeError:
        raise NotHeld()
    return "ok", {}


serve(
    f"kazoo {version('kazoo')} {'Lock' if mode == 'lock' else 'Semaphore'} (ZooKeeper {hosts})",
    {"session_bound": True, "semaphores": mode == "semaphore", "no_ttl": True},
    {
        "acquire": lambda req: acquire(req, True),
        "try_acquire": lambda req: acquire(req, False),
        "release": release,
    },
    indeterminate_errors=(ConnectionLoss, OperationTimeoutError, SessionExpiredError),
    cancel=True,
)
