"""The driver protocol's JSON-lines loop (docs/driver-protocol.md), shared by the drivers of
lock libraries in this folder. A driver gives `serve` its hello and one function per operation;
each function returns the reply's result and fields, or raises:

- `NotHeld`: the lease is not held (`not_held`);
- `Indeterminate`: the request may have taken effect (`indeterminate`);
- any other exception: `failed`, with its text (the library refused before anything was sent).

Requests are served concurrently, one thread each: an acquire may wait while a release or a
cancel of that acquire arrives. `cancelled(id)` is an Event a cancel of acquire `id` sets.
`Holders` names the leases of a library that can release a lock only in the process holding
it, and forwards a release to that process.
"""
import itertools
import json
import os
import re
import socket
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


class Holders:
    """Leases a library can release only in the process that was granted them (an advisory
    lock belongs to its database session; a lock object keeps its own token). The protocol
    wants a lease's name valid in every driver process, so a release another driver process
    receives is forwarded to the holder, whose own lock object releases it, as an application
    hands a release to the process that holds the lock. Each driver process listens on an
    abstract Unix socket named after `library` and its pid (nothing on disk to clean up after
    a SIGKILL); lease names are `LIBRARY-PID-N`.

    `release_ends_with_process`: whether a holder process that is gone has released its leases
    (its sessions ended with it). Otherwise a release of a gone process's lease is `failed`:
    nothing was done, and the lease may still be held until the backend expires it."""

    def __init__(self, library, release_ends_with_process):
        self.library = library
        self.release_ends_with_process = release_ends_with_process
        self.pattern = re.compile(rf"{re.escape(library)}-(\d+)-\d+")
        self.held = {}  # lease -> its release function (True: released; False: not held)
        self.lock = threading.Lock()
        self.granted = itertools.count(1)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self._address(os.getpid()))
        self.listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _address(self, pid):
        return f"\0lockcheck-driver-{self.library}-{pid}"

    def add(self, release):
        """Names a new lease, released by `release()`."""
        with self.lock:
            lease = f"{self.library}-{os.getpid()}-{next(self.granted)}"
            self.held[lease] = release
        return lease

    def _release_here(self, lease):
        with self.lock:
            release = self.held.pop(lease, None)
        return release is not None and bool(release())

    def release(self, lease):
        """Releases `lease` here or in the process holding it; raises NotHeld if it is not
        held (or is no name of this library's leases)."""
        name = self.pattern.fullmatch(lease)
        if name is None:
            raise NotHeld()
        pid = int(name.group(1))
        if pid == os.getpid():
            released = self._release_here(lease)
        else:
            released = self._forward(pid, lease)
        if not released:
            raise NotHeld()
        return "ok", {}

    def _forward(self, pid, lease):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as holder:
            try:
                holder.connect(self._address(pid))
            except (ConnectionRefusedError, FileNotFoundError):
                if self.release_ends_with_process:
                    return False
                raise RuntimeError(f"the driver process {pid} holding {lease} is gone; its lease may be held until it expires")
            try:
                holder.sendall(lease.encode() + b"\n")
                answer = holder.makefile().readline().strip()
            except OSError as error:
                raise Indeterminate(f"the release forwarded to driver process {pid}: {error}")
        if answer not in ("released", "not_held"):
            raise Indeterminate(f"the release forwarded to driver process {pid} answered {answer!r}")
        return answer == "released"

    def _accept(self):
        while True:
            connection, _ = self.listener.accept()
            threading.Thread(target=self._serve_forwarded, args=(connection,), daemon=True).start()

    def _serve_forwarded(self, connection):
        with connection:
            lease = connection.makefile().readline().strip()
            try:
                answer = "released" if self._release_here(lease) else "not_held"
            except Exception as error:  # noqa: BLE001 - reported to the forwarding process
                traceback.print_exc(file=sys.stderr)
                answer = f"error {type(error).__name__}: {error}"
            connection.sendall(answer.encode() + b"\n")
