"""The real Python dflockd client (dflockd-client, asyncio API) against a dflockd server.

Run by conformance/tests/dflockd_interop.rs against lockcheck's reference server.
"""

import argparse
import asyncio
import ssl

import dflockd_client as dc
from dflockd_client import _async

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--cafile")
parser.add_argument("--secret")
parser.add_argument("--prefix", default="async")
args = parser.parse_args()

servers = [("127.0.0.1", args.port)]
ctx = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
common = dict(servers=servers, ssl_context=ctx, auth_token=args.secret)


def key(name):
    return f"{args.prefix}-{name}"


def lock(name, **kw):
    return dc.AsyncDistributedLock(key(name), **{**common, **kw})


def semaphore(name, limit, **kw):
    return dc.AsyncDistributedSemaphore(key(name), limit=limit, **{**common, **kw})


async def main():
    a = lock("lock")
    assert await a.acquire()
    first = a.token
    b = lock("lock", acquire_timeout_s=0)
    assert not await b.acquire()
    assert await a.release()
    assert await b.acquire()
    assert dc.fence_from_token(b.token) > dc.fence_from_token(first)
    assert await b.release()
    print("ok: locks and fencing tokens")

    permits = [semaphore("sem", 2, acquire_timeout_s=0) for _ in range(3)]
    assert await permits[0].acquire() and await permits[1].acquire()
    assert not await permits[2].acquire()
    assert await permits[0].release()
    assert await permits[2].acquire()
    for p in permits[1:]:
        assert await p.release()
    print("ok: semaphores")

    holder = lock("two-phase")
    assert await holder.enqueue() == "acquired"
    waiter = lock("two-phase")
    assert await waiter.enqueue() == "queued"
    # The waiter is granted while it waits: release from another task.
    async def release_soon():
        assert await holder.release()

    waited, _ = await asyncio.gather(waiter.wait(5), release_soon())
    assert waited
    assert await waiter.release()
    print("ok: two-phase")

    renewed = lock("renew", lease_ttl_s=2)
    assert await renewed.acquire()
    await asyncio.sleep(3)  # past the two-second lease: the passing time is the test
    assert not await lock("renew", acquire_timeout_s=0).acquire()
    assert await renewed.release()
    print("ok: renewal")

    conn = await _async.open_conn("127.0.0.1", args.port, ssl_context=ctx, connect_timeout_s=5)
    if args.secret:
        await _async.authenticate(conn, args.secret)
    stats = await _async.stats(conn)
    assert isinstance(stats["connections"], int) and stats["connections"] >= 1, stats
    await conn.close()
    print("ok: stats")

    if args.secret:
        intruder = dc.AsyncDistributedLock(key("auth"), servers=servers, ssl_context=ctx, auth_token="wrong")
        try:
            await intruder.acquire()
            raise AssertionError("a wrong auth token was accepted")
        except (PermissionError, dc.AuthError):
            pass
        print("ok: auth")
    if ctx is not None:
        print("ok: tls")


asyncio.run(main())
