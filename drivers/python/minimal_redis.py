#!/usr/bin/env python3
"""A lockcheck driver (docs/driver-protocol.md) for redis-py's Lock, claiming only what
redis-py promises: leases that expire on the server, no fencing, no FIFO, no semaphores.

    lockcheck check --backend "exec:python3 drivers/python/minimal_redis.py redis://127.0.0.1:6379/0"
"""
import json, sys, threading, time, uuid

import redis
from redis.exceptions import LockNotOwnedError, RedisError

client = redis.Redis.from_url(sys.argv[1])
out = threading.Lock()
cancelled = {}  # acquire id -> Event, set by a cancel
# The owner's remaining lease: redis-py's Lock has no call for it, so one script, as atomic as its own.
pttl = client.register_script(
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pttl', KEYS[1]) end return -3")


def reply(id, result, **fields):
    with out:
        sys.stdout.write(json.dumps({"id": id, "result": result, **fields}) + "\n")
        sys.stdout.flush()


def lock(req, ttl_ms):
    return client.lock(req["key"], timeout=ttl_ms / 1000)


def held(req, token):
    """A Lock object for a lease granted earlier, by any driver: the token is the lease's name."""
    l = lock(req, req.get("ttl_ms", 1))
    l.local.token = token.encode()
    return l


def acquire(req, wait_ms):
    if req["limit"] != 1:
        return reply(req["id"], "unsupported", error="semaphores")
    l, token = lock(req, req["ttl_ms"]), uuid.uuid4().hex
    deadline = time.monotonic() + wait_ms / 1000
    stop = cancelled.setdefault(req["id"], threading.Event())
    while True:
        tried = time.monotonic()  # the lease counts from the attempt that wins it
        if l.acquire(blocking=False, token=token):
            return reply(req["id"], "ok", lease=token, elapsed_us=int((time.monotonic() - tried) * 1e6))
        if stop.is_set():
            return reply(req["id"], "cancelled")
        if time.monotonic() >= deadline:
            return reply(req["id"], "timed_out" if wait_ms else "not_granted")
        stop.wait(min(0.005, max(0.0, deadline - time.monotonic())))  # redis-py waits by polling


def serve(req):
    op, id = req["op"], req["id"]
    try:
        if op == "acquire":
            acquire(req, req["wait_ms"])
        elif op == "try_acquire":
            acquire(req, 0)
        elif op == "release":
            held(req, req["lease"]).release()
            reply(id, "ok")
        elif op == "refresh":
            held(req, req["lease"]).extend(req["ttl_ms"] / 1000, replace_ttl=True)
            reply(id, "ok")
        elif op == "remaining_ttl":
            left = pttl(keys=[req["key"]], args=[req["lease"]])
            reply(id, "ok", remaining_ms=max(left, 0)) if left >= 0 else reply(id, "not_held")
        elif op == "cancel":
            cancelled.setdefault(req["target"], threading.Event()).set()
            reply(id, "ok")
        else:
            reply(id, "unsupported")
    except LockNotOwnedError:
        reply(id, "not_held")
    except (redis.ConnectionError, redis.TimeoutError) as error:  # sent, maybe applied
        reply(id, "indeterminate", error=str(error))
    except RedisError as error:
        reply(id, "failed", error=str(error))
    finally:
        cancelled.pop(id, None)


client.ping()
print(json.dumps({
    "hello": "lockcheck-driver", "protocol": 1, "name": f"redis-py {redis.__version__} Lock",
    "capabilities": {"server_side_expiry": True},
    "operations": ["acquire", "try_acquire", "release", "refresh", "remaining_ttl", "cancel"],
}), flush=True)
for line in sys.stdin:
    threading.Thread(target=serve, args=(json.loads(line),), daemon=True).start()
