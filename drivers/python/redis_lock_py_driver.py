#!/usr/bin/env python3
"""A lockcheck driver (docs/driver-protocol.md) for redis-lock-py's `RedisLock` (PyPI
`redis-lock-py`, module `redis_lock`, pinned by scripts/setup/python.sh in a venv of its own,
$LOCKCHECK_HOME/venv-redis-lock-py: it needs redis-py >= 7.0.1 and its module name clashes with
python-redis-lock's).

    lockcheck check --backend "exec:$LOCKCHECK_HOME/venv-redis-lock-py/bin/python drivers/python/redis_lock_py_driver.py redis://127.0.0.1:6379/0"

Claims, each from the library's own documentation (README and docstrings, 1.3.0):
- mutual exclusion (every lock's): "Ensure atomicity by using the SETNX operation."
- server_side_expiry: `expire_timeout`: "The maximum lifetime of acquired lock." (`SET NX EX`).
- push_wakeups: "Implements a Pub/Sub messaging system between the client attempting to
  acquire the lock and the one currently holding it." (a release publishes to the waiters).
Not claimed: fencing, FIFO, semaphores, surviving a restart (none is promised).

Operations: acquire (`RedisLock(blocking_timeout=…).acquire()`: "The maximum blocking time in
seconds to wait for a lock to be acquired"), try_acquire (`RedisSpinLock.acquire(blocking=False)`,
the library's one call that tries once: "If not, return the results immediately"; the same key
and token scheme), release. No refresh: `extend(additional_time)` adds "additional time in
seconds" to what is left, where the protocol's refresh sets the lease to a TTL from now. No
remaining_ttl (no call for it), no cancel (its wait cannot be interrupted). Leases are whole
seconds (`SET … EX`): a lease is asked for ttl rounded up to a second, and the reply says so.
"""
import math
import os
import sys

import redis
import redis_lock
from redis_lock import RedisLock, RedisSpinLock
from redis_lock.exceptions import LockNotOwnedError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lockdriver import NotHeld, serve  # noqa: E402

client = redis.Redis.from_url(sys.argv[1])


def seconds(ms):
    return max(1, math.ceil(ms / 1000))


def acquire(req, blocking):
    if req["limit"] != 1:
        return "unsupported", {"error": "redis-lock-py has no semaphores"}
    expire = seconds(req["ttl_ms"])
    if blocking and req["wait_ms"] > 0:
        lock = RedisLock(client, req["key"], blocking_timeout=req["wait_ms"] / 1000, expire_timeout=expire)
        got = lock.acquire()
    else:
        lock = RedisSpinLock(client, req["key"], expire_timeout=expire)
        got = lock.acquire(blocking=False)
    if not got:
        return ("timed_out" if blocking and req["wait_ms"] > 0 else "not_granted"), {}
    return "ok", {"lease": lock.token.decode(), "ttl_ms": expire * 1000}


def release(req):
    lock = RedisLock(client, req["key"])
    lock._uuid = req["lease"].encode()  # a lease granted by any driver: its name is the token
    try:
        lock.release()
    except LockNotOwnedError:
        raise NotHeld()
    return "ok", {}


client.ping()
serve(
    f"redis-lock-py {redis_lock.__version__} RedisLock (redis-py {redis.__version__})",
    {"server_side_expiry": True, "push_wakeups": True},
    {"acquire": lambda req: acquire(req, True), "try_acquire": lambda req: acquire(req, False), "release": release},
    indeterminate_errors=(redis.ConnectionError, redis.TimeoutError),
)
