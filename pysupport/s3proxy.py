"""A loopback TCP proxy in front of the S3 server, for fault, TLS and latency tests.

    with S3Proxy(upstream_port, delay_ms=10, rule=fn, tls=(certfile, keyfile)) as proxy:
        ... talk to proxy.url (http(s)://127.0.0.1:<proxy.port>) ...
    proxy.requests   # [Request]: method, path, query, headers (lower-case), body_len, action
                     # (and the body's sha256 / md5 with hash_bodies=True)

(or proxy = S3Proxy(...).start() ... proxy.stop()).

It understands just enough HTTP/1.1 on the client→server side (request line, headers,
Content-Length bodies, keep-alive) to count requests and to apply a fault to chosen ones:

- rule(req) -> None                 pass the request through
- ("reset", n)                      forward the headers and n body bytes, then reset both sides
                                    (a request without a body: right after its headers)
- ("stall",)                        stop reading the request and never answer (until stop())
- ("stall_response",)               forward the whole request, but never forward the answer
- ("drop_response",)                forward the whole request; when the answer comes, reset the
                                    connection instead (the server did the work, the client
                                    never hears of it)
- ("status", code)                  answer `code` with an S3-style XML error, without forwarding
  (code 503 → SlowDown, 500 → InternalError; the connection is closed afterwards)
- ("truncate", fraction)            forward the whole request; pass the answer's status line and
                                    headers (Content-Length included) but only `fraction` of its
                                    body, then reset (an answer without a body is cut inside its
                                    headers instead)

random_faults(seed, rate, mix) builds a seeded rule that faults a `rate` share of the requests,
each with a kind drawn from `mix` (weights; see FAULT_KINDS), and counts what it did.

delay_ms delays every chunk, in each direction, by that much (a round trip of 2 × delay_ms). The
bytes in flight per direction are capped (DELAY_BUFFER) so a slow reader pushes back on the
writer, as TCP would. rate (bytes/s) caps each connection's client→server throughput, to make an
upload last long enough to interfere with it. With tls=(cert, key) the proxy accepts HTTPS and
talks plain HTTP upstream.

Only 127.0.0.1 is ever bound or contacted. Runs on its own event-loop thread.
"""
import asyncio
import base64
import hashlib
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field

CHUNK = 256 * 1024
DELAY_BUFFER = 16 * 1024 * 1024
# The receive buffer of every client connection, fixed (no autotuning). A "stall" stops reading:
# what the client can still push is its send buffer plus this. With autotuning the buffer grew
# to tcp_rmem's maximum (32 MiB on some machines): a whole 20 MiB part vanished into it, the
# client's body was complete, its stalled-stream protection stood down, and the stall showed
# only at the attempt deadline (test_stalled_body_is_retried_within_seconds, 2026-12-04).
RECEIVE_BUFFER = 1024 * 1024
S3_ERRORS = {500: ("InternalError", "We encountered an internal error. Please try again."),
             503: ("SlowDown", "Please reduce your request rate.")}


def _listening_socket():
    """A loopback listening socket on a free port whose connections get RECEIVE_BUFFER (set
    before listen, so the window is sized from the first segment)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@dataclass
class Request:
    index: int
    conn: int
    method: str
    path: str
    query: str
    headers: dict
    body_len: int = 0
    action: object = None
    started: float = field(default_factory=time.time)
    # with hash_bodies=True: sha256 (hex) and md5 (base64) of the body bytes forwarded
    sha256: str = None
    md5: str = None

    def op(self):
        """S3 operation name, from method and query (enough for the uploader's requests)."""
        q = self.query
        if self.method == "PUT" and "partNumber=" in q and "uploadId=" in q:
            return "UploadPart"
        if self.method == "POST" and "uploads" in q.split("&"):
            return "CreateMultipartUpload"
        if self.method == "POST" and "uploadId=" in q:
            return "CompleteMultipartUpload"
        if self.method == "DELETE" and "uploadId=" in q:
            return "AbortMultipartUpload"
        if self.method == "GET" and "uploads" in q.split("&"):
            return "ListMultipartUploads"
        if self.method == "PUT":
            return "PutObject"
        if self.method == "HEAD":
            return "HeadObject"
        if self.method == "GET" and ("list-type=2" in q or self.path.count("/") <= 1):
            return "ListObjectsV2"
        if self.method == "GET":
            return "GetObject"
        if self.method == "POST" and ("delete" in q.split("&") or "delete=" in q.split("&")):
            return "DeleteObjects"
        if self.method == "DELETE":
            return "DeleteObject"
        return self.method


class _Reset(Exception):
    pass


class S3Proxy:
    def __init__(self, upstream_port, delay_ms=0, rule=None, tls=None, rate=None,
                 hash_bodies=False, upstream_host="127.0.0.1"):
        assert upstream_host == "127.0.0.1"
        self.hash_bodies = hash_bodies
        self.upstream = (upstream_host, upstream_port)
        self.delay = delay_ms / 1000.0
        self.rate = rate
        self.rule = rule
        self.tls = tls
        self.requests = []
        self.port = None
        self._conns = 0
        self._loop = None
        self._server = None
        self._thread = None
        self._writers = set()
        self._lock = threading.Lock()
        # Request bodies being received right now, and the most at once (parts in flight).
        self.active_bodies = 0
        self.max_active_bodies = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        ready = threading.Event()

        def main():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            ctx = None
            if self.tls:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(*self.tls)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, sock=_listening_socket(), ssl=ctx,
                                     limit=CHUNK * 4))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, daemon=True, name="s3proxy")
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self):
        if not self._loop:
            return

        async def shutdown():
            self._server.close()
            for w in list(self._writers):
                _hard_close(w)
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        fut = asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        try:
            fut.result(5)
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def set_rule(self, rule):
        self.rule = rule

    def ops(self):
        with self._lock:
            return [(r.op(), r.action) for r in self.requests]

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    # ------------------------------------------------------------------ plumbing
    async def _handle(self, creader, cwriter):
        try:
            await self._handle_inner(creader, cwriter)
        except asyncio.CancelledError:  # stop() cancels every connection
            _hard_close(cwriter)

    async def _handle_inner(self, creader, cwriter):
        self._conns += 1
        conn_id = self._conns
        try:
            ureader, uwriter = await asyncio.open_connection(*self.upstream, limit=CHUNK * 4)
        except OSError:
            _hard_close(cwriter)
            return
        self._writers.update((cwriter, uwriter))
        state = {"hold_responses": False, "drop_responses": False, "truncate": None}
        up = DelayLine(uwriter, self.delay, self.rate)
        down = DelayLine(cwriter, self.delay)
        t1 = asyncio.ensure_future(self._client_to_server(conn_id, creader, cwriter, up, uwriter, state))
        t2 = asyncio.ensure_future(self._server_to_client(ureader, down, state))
        done, pending = await asyncio.wait({t1, t2}, return_when=asyncio.FIRST_COMPLETED)
        # One side ended: let the other finish what is queued, briefly, then close both.
        for t in done:
            if isinstance(t.exception(), _Reset):
                for p in pending:
                    p.cancel()
                _hard_close(cwriter)
                _hard_close(uwriter)
                self._writers.difference_update((cwriter, uwriter))
                return
        try:
            await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 600)
        except asyncio.TimeoutError:
            pass
        for w in (cwriter, uwriter):
            try:
                w.close()
            except Exception:  # noqa: BLE001
                pass
        self._writers.difference_update((cwriter, uwriter))

    async def _server_to_client(self, ureader, down, state):
        while True:
            if state["truncate"] is not None:
                await self._truncated_response(ureader, down, *state["truncate"])
            data = await ureader.read(CHUNK)
            if not data:
                await down.close()
                return
            if state["hold_responses"]:
                continue  # swallowed: the client waits for an answer that never comes
            if state["drop_responses"]:
                raise _Reset()
            if state["truncate"] is not None:
                # The request was faulted while this read was already waiting: cut from here on.
                await self._truncated_response(ureader, down, *state["truncate"], first=data)
            await down.send(data)

    async def _truncated_response(self, ureader, down, fraction, method, first=b""):
        """Forward the answer's head and `fraction` of its body, then reset (never returns)."""
        buf = first
        while b"\r\n\r\n" not in buf:
            data = await ureader.read(CHUNK)
            if not data:
                break
            buf += data
        head, sep, body = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.decode("latin-1").split("\r\n")[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip() or 0)
        if method == "HEAD" or not sep:
            length = 0  # a HEAD answer's Content-Length describes the object, not a body here
        if length == 0:
            await down.send(head[:max(1, int(len(head) * fraction))])
        else:
            cut = min(int(length * fraction), length - 1)
            while len(body) < cut:
                data = await ureader.read(CHUNK)
                if not data:
                    break
                body += data
            await down.send(head + sep + body[:cut])
        await down.flush()
        raise _Reset()

    async def _client_to_server(self, conn_id, creader, cwriter, up, uwriter, state):
        while True:
            try:
                head = await creader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                await up.close()
                return
            except asyncio.LimitOverrunError:
                raise _Reset()
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            path, _, query = target.partition("?")
            with self._lock:
                req = Request(len(self.requests), conn_id, method, path, query, headers)
                self.requests.append(req)
            action = self.rule(req) if self.rule else None
            req.action = action
            length = int(headers.get("content-length", "0") or 0)
            chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            if action and action[0] == "status":
                # Read (and drop) the body, answer, close.
                if length:
                    await creader.readexactly(length)
                code, msg = S3_ERRORS.get(action[1], ("InternalError", "injected"))
                body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code>"
                        "<Message>%s</Message></Error>" % (code, msg)).encode()
                resp = ("HTTP/1.1 %d Injected\r\nContent-Type: application/xml\r\n"
                        "Content-Length: %d\r\nConnection: close\r\n\r\n" % (action[1], len(body))).encode()
                cwriter.write(resp + body)
                await cwriter.drain()
                raise _Reset()
            if action and action[0] == "stall":
                await asyncio.sleep(3600)
                raise _Reset()
            await up.send(head)
            if action and action[0] == "stall_response":
                state["hold_responses"] = True
            if action and action[0] == "drop_response":
                state["drop_responses"] = True
            if action and action[0] == "truncate":
                state["truncate"] = (action[1], method)
            if action and action[0] == "reset" and not length and not chunked:
                await up.flush()  # no body to cut: the reset follows the headers
                raise _Reset()
            if chunked:
                # Not expected from our client (the tests assert it); pass the rest through raw.
                while True:
                    data = await creader.read(CHUNK)
                    if not data:
                        await up.close()
                        return
                    req.body_len += len(data)
                    await up.send(data)
            if length:
                self.active_bodies += 1
                self.max_active_bodies = max(self.max_active_bodies, self.active_bodies)
            try:
                await self._forward_body(creader, up, req, length, action)
            finally:
                if length:
                    self.active_bodies -= 1

    async def _forward_body(self, creader, up, req, length, action):
        hashes = (hashlib.sha256(), hashlib.md5()) if self.hash_bodies else ()
        left = length
        reset_at = action[1] if action and action[0] == "reset" else None
        while left > 0:
            n = min(CHUNK, left)
            if reset_at is not None:
                n = min(n, max(reset_at - req.body_len, 0))
                if n == 0:
                    await up.flush()
                    raise _Reset()
            data = await creader.read(n)
            if not data:
                await up.close()
                raise _Reset()
            left -= len(data)
            req.body_len += len(data)
            for h in hashes:
                h.update(data)
            await up.send(data)
        if hashes:
            req.sha256 = hashes[0].hexdigest()
            req.md5 = base64.b64encode(hashes[1].digest()).decode()


FAULT_KINDS = ("500", "503", "reset", "stall", "stall_response", "drop_response", "truncate")
# Every kind equally likely, except stalls: each costs the client a whole attempt deadline.
DEFAULT_MIX = {"500": 3, "503": 3, "reset": 3, "drop_response": 3, "truncate": 3,
               "stall": 1, "stall_response": 1}


class RandomFaults:
    """A seeded rule for S3Proxy: each request is faulted with probability `rate`, the kind drawn
    from `mix` ({kind: weight}, kinds in FAULT_KINDS):

    - "500" / "503": an InternalError / SlowDown answer, nothing forwarded;
    - "reset": the connection reset after a random part of the request body (right after the
      headers when there is none);
    - "stall": the request is no longer read and never answered;
    - "stall_response": forwarded, the answer never arrives;
    - "drop_response": forwarded (the server acts on it), the connection reset when it answers;
    - "truncate": forwarded, the answer cut at a random point of its body.

    `max_stalls` caps the stalls ("stall" + "stall_response"): each costs the client its whole
    attempt deadline, so a short run can only afford a few. `only(req)` restricts which requests
    may be faulted. `enabled` switches faulting off and on; `counts` holds {kind: n} and
    `by_op` {(op, kind): n}; `total` counts every request seen.
    """

    def __init__(self, seed, rate, mix=None, max_stalls=None, only=None):
        import random
        self.seed = seed
        self.rng = random.Random(seed)
        self.rate = rate
        mix = dict(DEFAULT_MIX if mix is None else mix)
        unknown = set(mix) - set(FAULT_KINDS)
        assert not unknown, "unknown fault kinds %s (known: %s)" % (unknown, FAULT_KINDS)
        self.kinds = [k for k in FAULT_KINDS if mix.get(k)]
        self.weights = [mix[k] for k in self.kinds]
        self.max_stalls = max_stalls
        self.only = only
        self.enabled = True
        self.total = 0
        self.counts = {}
        self.by_op = {}
        self._lock = threading.Lock()

    def __call__(self, req):
        with self._lock:
            self.total += 1
            if not self.enabled or (self.only and not self.only(req)):
                return None
            if self.rng.random() >= self.rate:
                return None
            kind = self.rng.choices(self.kinds, self.weights)[0]
            stalls = self.counts.get("stall", 0) + self.counts.get("stall_response", 0)
            if kind.startswith("stall") and self.max_stalls is not None and stalls >= self.max_stalls:
                kind = "503"
            self.counts[kind] = self.counts.get(kind, 0) + 1
            op = req.op() + (":lock.json" if req.path.endswith("/lock.json") else "")
            key = (op, kind)
            self.by_op[key] = self.by_op.get(key, 0) + 1
            if kind in ("500", "503"):
                return ("status", int(kind))
            if kind == "reset":
                length = int(req.headers.get("content-length", "0") or 0)
                return ("reset", self.rng.randrange(length) if length > 0 else 0)
            if kind == "truncate":
                return ("truncate", self.rng.random())
            return (kind,)

    def faulted(self):
        return sum(self.counts.values())

    def summary(self):
        return {"seed": self.seed, "rate": self.rate, "requests": self.total,
                "faulted": self.faulted(), "kinds": dict(sorted(self.counts.items())),
                "by_op": {"%s/%s" % k: v for k, v in sorted(self.by_op.items())}}


def random_faults(seed, rate, mix=None, max_stalls=None, only=None):
    """See RandomFaults."""
    return RandomFaults(seed, rate, mix, max_stalls, only)


class DelayLine:
    """Writes chunks to `writer`, each `delay` seconds after it was handed over, in order; at most
    `rate` bytes per second if given."""

    def __init__(self, writer, delay, rate=None):
        self.writer = writer
        self.delay = delay
        self.rate = rate
        self.next_free = time.monotonic()
        self.queue = asyncio.Queue()
        self.bytes = 0
        self.room = asyncio.Event()
        self.room.set()
        self.task = asyncio.ensure_future(self._run()) if delay > 0 else None

    async def send(self, data):
        if self.rate:
            now = time.monotonic()
            self.next_free = max(self.next_free, now) + len(data) / self.rate
            if self.next_free > now:
                await asyncio.sleep(self.next_free - now)
        if not self.task:
            self.writer.write(data)
            await self.writer.drain()
            return
        while self.bytes > DELAY_BUFFER:
            self.room.clear()
            await self.room.wait()
        self.bytes += len(data)
        self.queue.put_nowait((time.monotonic() + self.delay, data))

    async def flush(self):
        if self.task:
            while self.bytes:
                await asyncio.sleep(0.001)

    async def close(self):
        if self.task:
            self.queue.put_nowait((time.monotonic() + self.delay, None))
            try:
                await self.task
            except Exception:  # noqa: BLE001
                pass
            return
        try:
            self.writer.write_eof()
        except Exception:  # noqa: BLE001
            pass

    async def _run(self):
        while True:
            due, data = await self.queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                try:
                    self.writer.write_eof()
                except Exception:  # noqa: BLE001
                    pass
                return
            self.writer.write(data)
            try:
                await self.writer.drain()
            except ConnectionError:
                return
            self.bytes -= len(data)
            self.room.set()


def _hard_close(writer):
    """Close with RST (SO_LINGER 0), as a crashed peer or a middlebox reset would."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        writer.transport.abort()
    except Exception:  # noqa: BLE001
        pass


def self_signed_cert(directory, cn="localhost"):
    """(certfile, keyfile) of a fresh self-signed certificate (openssl CLI)."""
    import subprocess
    from pathlib import Path
    d = Path(directory)
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=%s" % cn, "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)
