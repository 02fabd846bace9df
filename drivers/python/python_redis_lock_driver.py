#!/usr/bin/env python3
"""A lockcheck driver (docs/driver-protocol.md) for python-redis-lock's `redis_lock.Lock`
(PyPI `python-redis-lock`, pinned by scripts/setup/python.sh).

    lockcheck check --backend "exec:python drivers/python/python_redis_lock_driver.py redis://127.0.0.1:6379/0"

Claims, each from the library's own documentation (README and `Lock.__init__` docstring, 4.0.1):
- server_side_expiry: "expire: The lock expiry time in seconds. If left at the default (None)
  the lock will not expire." (the key is `SET NX EX`, so Redis expires it).
- push_wakeups: README "Features: no spinloops at acquire" and "lock-signal:<name> - a list
  value for signaling the waiters when the lock is released" (waiters BLPOP the signal).
Not claimed: fencing, FIFO, semaphores, surviving a restart (the docs promise none of them).

Operations: acquire (`acquire(timeout=…)`: "An integer value specifying the maximum number of
seconds to block"), try_acquire (`acquire(blocking=False)`), release, refresh (`extend(expire)`:
"New expiration time"). No remaining_ttl (the library has no call for it) and no cancel (its
BLPOP wait cannot be interrupted). Its times are whole seconds: a lease is asked for ttl rounded
up to a second (the reply says so), and a wait rounded up likewise. The library refuses a wait
longer than the lease (`TimeoutTooLarge`): that request is answered `unsupported`.
"""
import math
import os
import sys

import redis
import redis_lock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lockdriver import NotHeld, serve  # noqa: E402

client = redis.StrictRedis.from_url(sys.argv[1])


def seconds(ms):
    return max(1, math.ceil(ms / 1000))


def acquire(req, blocking):
    if req["limit"] != 1:
        return "unsupported", {"error": "python-redis-lock has no semaphores"}
    expire = seconds(req["ttl_ms"])
    lock = redis_lock.Lock(client, req["key"], expire=expire)
    try:
        if blocking and req["wait_ms"] > 0:
            got = lock.acquire(timeout=seconds(req["wait_ms"]))
        else:
            got = lock.acquire(blocking=False)
    except redis_lock.TimeoutTooLarge as error:
        return "unsupported", {"error": str(error)}
    if not got:
        return ("timed_out" if blocking and req["wait_ms"] > 0 else "not_granted"), {}
    return "ok", {"lease": lock.id, "ttl_ms": expire * 1000}


def held(req):
    """The library's Lock for a lease granted by any driver: its id is the lease's name."""
    return redis_lock.Lock(client, req["key"], id=req["lease"], expire=seconds(req.get("ttl_ms", 1000)))


def release(req):
    try:
        held(req).release()
    except redis_lock.NotAcquired:
        raise NotHeld()
    return "ok", {}


def refresh(req):
    expire = seconds(req["ttl_ms"])
    try:
        held(req).extend(expire=expire)
    except redis_lock.NotAcquired:
        raise NotHeld()
    return "ok", {"ttl_ms": expire * 1000}


client.ping()
serve(
    f"python-redis-lock {redis_lock.__version__} Lock (redis-py {redis.__version__})",
    {"server_side_expiry": True, "push_wakeups": True},
    {
        "acquire": lambda req: acquire(req, True),
        "try_acquire": lambda req: acquire(req, False),
        "release": release,
        "refresh": refresh,
    },
    indeterminate_errors=(redis.ConnectionError, redis.TimeoutError),
)
