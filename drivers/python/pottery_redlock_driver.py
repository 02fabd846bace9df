#!/usr/bin/env python3
"""A lockcheck driver (docs/driver-protocol.md) for pottery's `Redlock` over several Redis
masters (PyPI `pottery`, pinned by scripts/setup/python.sh); the masters are the arguments.

    lockcheck check --backend "exec:python drivers/python/pottery_redlock_driver.py redis://h1:6379/0 redis://h2:6379/0 redis://h3:6379/0"

Claims, each from the library's own documentation (`Redlock` docstrings, 3.0.1):
- mutual exclusion (every lock's): "This algorithm safely and reliably provides a
  mutually-exclusive locking primitive to protect a resource shared across threads, processes,
  and even machines, without a single point of failure."
- server_side_expiry: "auto_release_time -- the timeout in seconds by which to automatically
  release this Redlock, unless it's already been released" (`SET NX PX` on each master).
Not claimed: fencing, FIFO, semaphores, surviving a restart (none is promised; Redlock's own
description, redis.io/topics/distlock, warns that a restart without fsync loses locks).

Operations: acquire (`acquire(timeout=…)`, seconds as a float), try_acquire
(`acquire(blocking=False)`), release, refresh (`extend()`: a Redlock made with the new
`auto_release_time`). No cancel: its wait is a `time.sleep` retry loop that cannot be
interrupted. No remaining_ttl: `locked()` ("How much longer we'll hold the lock") answers
Redlock's validity time, the masters' TTL less a clock-drift margin (1 % of the Redlock's
`auto_release_time` + 2 ms) and the time the query took, on purpose short of the lease's end,
where the protocol's remaining_ttl is the lease's remaining time by the server's clock (served,
it reads as a lease ending early, P4, by that margin).
"""
import os
import sys
from importlib.metadata import version

import redis
from pottery import ExtendUnlockedLock, Redlock, ReleaseUnlockedLock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lockdriver import NotHeld, serve  # noqa: E402

masters = [redis.Redis.from_url(url) for url in sys.argv[1:]]


def redlock(req, ttl_ms, lease=None):
    lock = Redlock(key=req["key"], masters=masters, auto_release_time=ttl_ms / 1000)
    if lease is not None:
        lock._uuid = lease  # a lease granted by any driver: its name is the Redlock's token
    return lock


def acquire(req, blocking):
    if req["limit"] != 1:
        return "unsupported", {"error": "pottery's Redlock has no semaphores"}
    lock = redlock(req, req["ttl_ms"])
    if blocking and req["wait_ms"] > 0:
        got = lock.acquire(blocking=True, timeout=req["wait_ms"] / 1000)
    else:
        got = lock.acquire(blocking=False)
    if not got:
        return ("timed_out" if blocking and req["wait_ms"] > 0 else "not_granted"), {}
    return "ok", {"lease": lock._uuid}


def release(req):
    try:
        redlock(req, 1000, req["lease"]).release()
    except ReleaseUnlockedLock:
        raise NotHeld()
    return "ok", {}


def refresh(req):
    try:
        redlock(req, req["ttl_ms"], req["lease"]).extend()
    except ExtendUnlockedLock:
        raise NotHeld()
    return "ok", {}


for master in masters:
    master.ping()
serve(
    f"pottery {version('pottery')} Redlock over {len(masters)} masters (redis-py {redis.__version__})",
    {"server_side_expiry": True},
    {
        "acquire": lambda req: acquire(req, True),
        "try_acquire": lambda req: acquire(req, False),
        "release": release,
        "refresh": refresh,
    },
    indeterminate_errors=(redis.ConnectionError, redis.TimeoutError),
)
