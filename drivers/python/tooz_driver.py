#!/usr/bin/env python3
"""A lockcheck driver (docs/driver-protocol.md) for tooz's locks (PyPI `tooz`, pinned by
scripts/setup/python.sh) on the backend the argument's URL names: `redis://HOST:PORT` or
`zookeeper://HOST:PORT` (tooz's own URLs).

    lockcheck check --backend "exec:python drivers/python/tooz_driver.py redis://127.0.0.1:6379"
    lockcheck check --backend "exec:python drivers/python/tooz_driver.py zookeeper://127.0.0.1:2181"

Claims, from the library's own documentation (`CoordinationDriver.get_lock`, 9.1.0): mutual
exclusion only, "This is a exclusive lock, a second call to acquire() will block or return
False." Nothing else: tooz documents no expiry of a lock, no order of grants, no fencing, no
session binding, on any backend.

The lease's time is the backend's:
- redis: a redis-py `Lock` whose timeout is the coordinator's `lock_timeout` (whole seconds,
  a URL option: "For a list of options recognized by this driver, see the documentation for
  the member CLIENT_ARGS"), so the driver keeps one coordinator per whole-second lease length,
  `lock_timeout` = ttl rounded up to a second (the reply says so). No heartbeat runs (it would
  keep every held lock alive: `heartbeat` re-acquires them).
- zookeeper: kazoo's `Lock` (ephemeral sequential nodes): no TTL, held until released or the
  session ends; the request's `ttl_ms` is ignored, and the driver claims `no_ttl`.

Operations: acquire (`acquire(blocking=SECONDS)`: "Otherwise, the value is used as a timeout
value and the call returns maximum after this number of seconds"), try_acquire
(`acquire(blocking=False)`), release. No refresh or remaining_ttl (tooz's `Lock` has neither)
and no cancel (its wait cannot be interrupted). tooz says "The behavior of releasing a lock
which was not acquired in the first place is undefined (it can range from harmless to
releasing some other users lock)", so a lease is released only through the `Lock` that was
granted it: a release another driver process receives is forwarded to the process holding the
lease (`lockdriver.Holders`). A name no driver gave is `not_held`; a lease whose holder process
is gone is `failed` (it may be held until it expires or its session ends).
"""
import math
import os
import sys
import threading
from importlib.metadata import version

from tooz import coordination

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lockdriver import Holders, serve  # noqa: E402

url = sys.argv[1]
backend = url.split(":", 1)[0]
member = f"lockcheck-{os.getpid()}".encode()
coordinators = {}  # lock_timeout (s; None for zookeeper) -> a started coordinator
coordinators_lock = threading.Lock()
holders = Holders("tooz", release_ends_with_process=False)


def coordinator(seconds):
    with coordinators_lock:
        if seconds not in coordinators:
            options = "" if seconds is None else f"{'&' if '?' in url else '?'}lock_timeout={seconds}"
            started = coordination.get_coordinator(url + options, member)
            started.start(start_heart=False)
            coordinators[seconds] = started
        return coordinators[seconds]


def seconds(ms):
    return max(1, math.ceil(ms / 1000))


def acquire(req, blocking):
    if req["limit"] != 1:
        return "unsupported", {"error": "tooz's locks have one holder"}
    ttl = seconds(req["ttl_ms"]) if backend == "redis" else None
    lock = coordinator(ttl).get_lock(req["key"].encode().hex().encode())
    wait = blocking and req["wait_ms"] > 0
    try:
        got = lock.acquire(blocking=req["wait_ms"] / 1000 if wait else False)
    except Exception as error:  # noqa: BLE001 - kazoo's LockTimeout comes through tooz as is
        if type(error).__name__ == "LockTimeout":
            return "timed_out", {}
        raise
    if not got:
        return ("timed_out" if wait else "not_granted"), {}
    lease = holders.add(lock.release)
    return "ok", ({"lease": lease} if ttl is None else {"lease": lease, "ttl_ms": ttl * 1000})


coordinator(1 if backend == "redis" else None)
serve(
    f"tooz {version('tooz')} {backend} lock",
    {} if backend == "redis" else {"no_ttl": True},
    {
        "acquire": lambda req: acquire(req, True),
        "try_acquire": lambda req: acquire(req, False),
        "release": lambda req: holders.release(req["lease"]),
    },
    indeterminate_errors=(coordination.ToozConnectionError,),
)
