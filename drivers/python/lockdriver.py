"""The driver protocol's JSON-lines loop (docs/driver-protocol.md), shared by the drivers of
lock libraries in this folder. A driver gives `serve` its hello and one function per operation;
each function returns the reply's result and fields, or raises:

- `NotHeld`: the lease is not held (`not_held`);
- `Indeterminate`: the request may have taken effect (`indeterminate`);
- any other exception: `failed`, with its text (the library refused before anything was sent).

Requests are served concurrently, one thread each: an acquire may wait while a release or a
cancel of that acquire arrives. `cancelled(id)` is an Event a cancel of acquire `id` sets.
"""
import json
import sys
import threading
import traceback


class NotHeld(Exception):
    pass


class Indeterminate(Exception):
    pass


_out = threading.Lock()
_cancels = {}
_cancels_lock = threading.Lock()


def cancelled(id):
    with _cancels_lock:
        return _cancels.setdefault(id, threading.Event())


def reply(id, result, **fields):
    with _out:
        sys.stdout.write(json.dumps({"id": id, "result": result, **fields}) + "\n")
        sys.stdout.flush()


def _serve_one(handlers, indeterminate_errors, req):
    id, op = req["id"], req["op"]
    try:
        if op == "cancel":
            cancelled(req["target"]).set()
            return reply(id, "ok")
        handler = handlers.get(op)
        if handler is None:
            return reply(id, "unsupported")
        result, fields = handler(req)
        reply(id, result, **fields)
    except NotHeld:
        reply(id, "not_held")
    except Indeterminate as error:
        reply(id, "indeterminate", error=str(error))
    except indeterminate_errors as error:  # sent, maybe applied
        reply(id, "indeterminate", error=f"{type(error).__name__}: {error}")
    except Exception as error:  # noqa: BLE001 - a refusal, reported with its text
        traceback.print_exc(file=sys.stderr)
        reply(id, "failed", error=f"{type(error).__name__}: {error}")
    finally:
        with _cancels_lock:
            _cancels.pop(id, None)


def serve(name, capabilities, handlers, indeterminate_errors=(), cancel=False):
    """Writes the hello, then serves every request line until stdin closes. `cancel`: the
    driver's acquire watches `cancelled(id)` (a library whose wait cannot be interrupted leaves
    it out, and lockcheck gives such an acquire up on its own side)."""
    operations = [op for op in ("acquire", "try_acquire", "release", "refresh", "remaining_ttl") if op in handlers]
    if cancel:
        operations.append("cancel")
    print(json.dumps({"hello": "lockcheck-driver", "protocol": 1, "name": name,
                      "capabilities": capabilities, "operations": operations}), flush=True)
    threads = []
    for line in sys.stdin:
        thread = threading.Thread(target=_serve_one, args=(handlers, tuple(indeterminate_errors), json.loads(line)))
        thread.daemon = True
        thread.start()
        threads.append(thread)
    for thread in threads:  # stdin closed: finish what is in flight
        thread.join()
