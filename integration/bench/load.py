#!/usr/bin/env python3
"""Backends and load clients for the scenarios wrk cannot drive (python3 stdlib only).

Subcommands:
  ws-echo PORT                  WebSocket echo backend (RFC 6455, no extensions)
  ws-client URL HOST ...        WebSocket load: CONNS connections, each sends one message and waits for its echo
  idle-client URL HOST ...      open CONNS keep-alive connections (one request each), hold them, report the
                                RSS of --watch-pid's process tree, then check every connection still answers
  stream-backend PORT           PUT/POST: reads and discards the body, answers its length;
                                GET /download?bytes=N: answers N zero bytes
  stream-client URL HOST ...    one upload or download of --bytes N, sampling --watch-pid's RSS meanwhile

Every client writes one JSON object to --out (see each cmd_ function for its fields) and exits 0 even when the
run had errors: the report decides what fails.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import tree_rss_kb  # noqa: E402  (same directory)

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"
CHUNK = 1 << 20


def _write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f)
        f.write("\n")


def _split_url(url):
    u = urlsplit(url)
    tls = u.scheme in ("https", "wss")
    return u.hostname, u.port or (443 if tls else 80), tls, (u.path or "/") + (f"?{u.query}" if u.query else "")


def _client_tls(server_name):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx, server_name


def _percentile(sorted_values, pct):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))]


# ---------------------------------------------------------------- WebSocket


def _ws_accept(key):
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


def _ws_header(first_byte, length, mask=b""):
    mbit = 0x80 if mask else 0
    if length < 126:
        head = bytes((first_byte, mbit | length))
    elif length < 1 << 16:
        head = bytes((first_byte, mbit | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((first_byte, mbit | 127)) + length.to_bytes(8, "big")
    return head + mask


def _unmask(payload, mask):
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class WsEcho(asyncio.Protocol):
    """Echoes every data frame back unmasked; answers ping with pong and close with close."""

    def connection_made(self, transport):
        self.transport = transport
        self.buf = bytearray()
        self.upgraded = False

    def data_received(self, data):
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self.transport.close()
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            m = re.search(r"^sec-websocket-key:\s*(\S+)", head, re.I | re.M)
            if not m:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self.transport.close()
                return
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + _ws_accept(m.group(1).encode()) + b"\r\n\r\n"
            )
            self.upgraded = True
        buf, pos, out = self.buf, 0, bytearray()
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, hdr = b1 & 0x7F, 2
            if length == 126:
                if len(buf) - pos < 4:
                    break
                length, hdr = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if len(buf) - pos < 10:
                    break
                length, hdr = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            mask = b""
            if b1 & 0x80:
                mask = bytes(buf[pos + hdr : pos + hdr + 4])
                hdr += 4
            if len(buf) - pos < hdr + length:
                break
            payload = _unmask(bytes(buf[pos + hdr : pos + hdr + length]), mask) if mask else buf[pos + hdr : pos + hdr + length]
            pos += hdr + length
            opcode = b0 & 0x0F
            if opcode == 0x8:  # close: answer it and hang up
                out += _ws_header(0x88, len(payload)) + payload
                self.transport.write(bytes(out))
                self.transport.close()
                return
            if opcode == 0x9:  # ping
                out += _ws_header(0x8A, len(payload)) + payload
            elif opcode != 0xA:  # data (and continuation) frames are echoed as they came, pong ignored
                out += _ws_header(b0, length) + payload
        del buf[:pos]
        if out:
            self.transport.write(bytes(out))


def cmd_ws_echo(args):
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(WsEcho, "127.0.0.1", args.port, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class WsLoad(asyncio.Protocol):
    """One client connection: upgrade, then send one message, wait for its echo, repeat while state.running."""

    def __init__(self, state, host, path):
        self.state, self.host, self.path = state, host, path
        self.key = base64.b64encode(os.urandom(16))
        mask = os.urandom(4)
        payload = os.urandom(state.size)
        # masked once: every message of this connection is the same frame
        self.frame = _ws_header(0x82, state.size, mask) + _unmask(payload, mask)
        self.echo_len = len(_ws_header(0x82, state.size)) + state.size
        self.buf = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = False
        self.sent_at = 0

    def connection_made(self, transport):
        self.transport = transport
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def send(self):
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.frame)

    def data_received(self, data):
        self.buf += data
        if not self.upgraded.done():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            ok = head.startswith("HTTP/1.1 101") and _ws_accept(self.key).decode() in head
            self.upgraded.set_result(ok if ok else head.split("\r\n", 1)[0])
            if not ok:
                self.transport.close()
            return
        st = self.state
        n = len(self.buf) // self.echo_len
        if not n:
            return
        now = time.perf_counter_ns()
        for i in range(n):
            if self.buf[i * self.echo_len] != 0x82:
                st.errors += 1
                self.transport.close()
                return
        del self.buf[: n * self.echo_len]
        if st.measuring:
            st.messages += n
            st.rtts.append(now - self.sent_at)
        if st.running:
            self.send()

    def connection_lost(self, exc):
        if not self.upgraded.done():
            self.upgraded.set_result("connection closed before the upgrade")
        elif self.state.running and not self.closed:
            self.state.errors += 1  # the proxy or the backend hung up mid-run
        self.closed = True


class _WsState:
    def __init__(self, size):
        self.size = size
        self.running = self.measuring = False
        self.messages = self.errors = 0
        self.rtts = []


def cmd_ws_client(args):
    """Fields: messages, seconds, rate (messages/s), p50_us, p99_us, conns, connected, errors, first_error."""

    async def main():
        loop = asyncio.get_running_loop()
        host, port, tls, path = _split_url(args.url)
        state = _WsState(args.size)
        sem = asyncio.Semaphore(128)
        first_error = []

        async def connect():
            async with sem:
                try:
                    ssl_args = {}
                    if tls:
                        ctx, name = _client_tls(host)
                        ssl_args = {"ssl": ctx, "server_hostname": name}
                    _, proto = await asyncio.wait_for(
                        loop.create_connection(lambda: WsLoad(state, args.host, path), host, port, **ssl_args), 10
                    )
                    result = await asyncio.wait_for(proto.upgraded, 10)
                except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
                    result = f"{type(e).__name__}: {e}"
                if result is True:
                    return proto
                first_error.append(str(result))
                return None

        protos = [p for p in await asyncio.gather(*(connect() for _ in range(args.conns))) if p]
        state.errors += args.conns - len(protos)
        if protos:
            # warm-up (unmeasured), then the measured run
            state.running = True
            for p in protos:
                p.send()
            await asyncio.sleep(args.warmup)
            state.measuring = True
            start = time.perf_counter()
            await asyncio.sleep(args.duration)
            state.measuring = False
            seconds = time.perf_counter() - start
            state.running = False
            await asyncio.sleep(0.05)  # let echoes in flight arrive before the close (not measured)
            for p in protos:
                p.closed = True
                p.transport.close()
        else:
            seconds = 0.0
        rtts = sorted(state.rtts)
        return {
            "messages": state.messages,
            "seconds": seconds,
            "rate": state.messages / seconds if seconds else 0.0,
            "p50_us": _percentile(rtts, 50) / 1e3 if rtts else None,
            "p99_us": _percentile(rtts, 99) / 1e3 if rtts else None,
            "conns": args.conns,
            "connected": len(protos),
            "errors": state.errors,
            "first_error": first_error[0] if first_error else None,
        }

    _write_json(args.out, asyncio.run(main()))


# ---------------------------------------------------------------- idle keep-alive connections


async def _http_get(reader, writer, host, path):
    """One keep-alive GET on an open connection; returns the status code (0 on a malformed answer)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
    if not m or len(status_line) < 2:
        return 0
    await reader.readexactly(int(m.group(1)))
    return int(status_line[1])


def cmd_idle_client(args):
    """Fields: conns, opened, held (answered a second request after the hold), rss_before_mb, rss_mb (highest
    sample while all were open), errors, first_error, open_seconds."""

    async def main():
        host, port, tls, path = _split_url(args.url)
        rss_before = tree_rss_kb(args.watch_pid) / 1024
        sem = asyncio.Semaphore(args.parallel)
        first_error = []
        ssl_args = {}
        if tls:
            ctx, name = _client_tls(host)
            ssl_args = {"ssl": ctx, "server_hostname": name}

        async def open_one():
            async with sem:
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, **ssl_args), 15)
                    status = await asyncio.wait_for(_http_get(reader, writer, args.host, path), 15)
                    if status == 200:
                        return reader, writer
                    first_error.append(f"status {status}")
                    writer.close()
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as e:
                    first_error.append(f"{type(e).__name__}: {e}")
                return None

        started = time.perf_counter()
        conns = [c for c in await asyncio.gather(*(open_one() for _ in range(args.conns))) if c]
        open_seconds = time.perf_counter() - started
        # hold them: sample the proxy's RSS meanwhile (this is the measurement, not a wait for readiness)
        rss_peak = 0.0
        deadline = time.monotonic() + args.hold
        while True:
            rss_peak = max(rss_peak, tree_rss_kb(args.watch_pid) / 1024)
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)

        async def still_there(reader, writer):
            async with sem:
                try:
                    return await asyncio.wait_for(_http_get(reader, writer, args.host, path), 15) == 200
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as e:
                    first_error.append(f"second request: {type(e).__name__}: {e}")
                    return False

        held = sum(await asyncio.gather(*(still_there(r, w) for r, w in conns)))
        rss_peak = max(rss_peak, tree_rss_kb(args.watch_pid) / 1024)
        for _, w in conns:
            w.close()
        return {
            "conns": args.conns,
            "opened": len(conns),
            "held": held,
            "rss_before_mb": rss_before,
            "rss_mb": rss_peak,
            "errors": args.conns - held,
            "first_error": first_error[0] if first_error else None,
            "open_seconds": open_seconds,
        }

    _write_json(args.out, asyncio.run(main()))


# ---------------------------------------------------------------- streaming


ZEROS = memoryview(bytes(CHUNK))


class StreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _answer(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _discard_body(self):
        buf = bytearray(CHUNK)
        total = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return total
                total += self._discard(size, buf)
                self.rfile.readline()
        return self._discard(int(self.headers.get("Content-Length", "0")), buf)

    def _discard(self, left, buf):
        view, total = memoryview(buf), 0
        while left:
            n = self.rfile.readinto(view[: min(left, CHUNK)])
            if not n:
                raise ConnectionError("body ended early")
            left -= n
            total += n
        return total

    def do_PUT(self):
        self._answer(f"{self._discard_body()}\n".encode())

    do_POST = do_PUT

    def do_GET(self):
        u = urlsplit(self.path)
        if u.path != "/download":
            self._answer(b"ok\n")
            return
        left = int(parse_qs(u.query).get("bytes", ["0"])[0])
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(left))
        self.end_headers()
        while left:
            n = min(left, CHUNK)
            self.wfile.write(ZEROS[:n])
            left -= n

    def log_message(self, *a):
        pass


def cmd_stream_backend(args):
    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

        def handle_error(self, request, client_address):
            pass  # a client that hangs up mid-body

    Server(("127.0.0.1", args.port), StreamHandler).serve_forever()


class _RssSampler(threading.Thread):
    def __init__(self, pid, every=0.05):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_kb = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak_kb = max(self.peak_kb, tree_rss_kb(self.pid))
            self.stop.wait(self.every)


def _read_head(f):
    lines = []
    while True:
        line = f.readline(65536)
        if not line:
            raise ConnectionError("connection closed before the response head")
        if line in (b"\r\n", b"\n"):
            break
        lines.append(line.decode("latin-1").rstrip("\r\n"))
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


def _read_body(f, headers, buf):
    view, total = memoryview(buf), 0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int(f.readline().split(b";", 1)[0], 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return total
            while size:
                n = f.readinto(view[: min(size, len(buf))])
                if not n:
                    raise ConnectionError("body ended early")
                size -= n
                total += n
            f.readline()
    left = int(headers.get("content-length", "-1"))
    if left < 0:
        raise ConnectionError("response without Content-Length or chunked encoding")
    while left:
        n = f.readinto(view[: min(left, len(buf))])
        if not n:
            raise ConnectionError(f"body ended early, {left} bytes missing")
        left -= n
        total += n
    return total


def cmd_stream_client(args):
    """Fields: direction, bytes, transferred, seconds, mb_per_s, status, ok, error, rss_before_mb,
    rss_peak_mb, rss_after_mb (the watched process tree's RSS before, at most during, and after the transfer)."""
    host, port, tls, _ = _split_url(args.url)
    sampler = _RssSampler(args.watch_pid) if args.watch_pid else None
    rss_before = tree_rss_kb(args.watch_pid) / 1024 if args.watch_pid else None
    doc = {"direction": args.direction, "bytes": args.bytes, "transferred": 0, "seconds": 0.0, "mb_per_s": 0.0,
           "status": 0, "ok": False, "error": None}
    buf = bytearray(CHUNK)
    try:
        sock = socket.create_connection((host, port), timeout=args.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            ctx, name = _client_tls(host)
            sock = ctx.wrap_socket(sock, server_hostname=name)
        f = sock.makefile("rb", buffering=CHUNK)
        if sampler:
            sampler.start()
        start = time.perf_counter()
        if args.direction == "upload":
            sock.sendall(f"PUT /upload HTTP/1.1\r\nHost: {args.host}\r\nContent-Length: {args.bytes}\r\n"
                         "Content-Type: application/octet-stream\r\n\r\n".encode())
            left = args.bytes
            while left:
                n = min(left, CHUNK)
                sock.sendall(ZEROS[:n])
                left -= n
            doc["transferred"] = args.bytes
            status, headers = _read_head(f)
            body = bytearray(65536)
            n = _read_body(f, headers, body)
            echoed = bytes(body[:n]).strip()
            doc["ok"] = status == 200 and echoed == str(args.bytes).encode()
            if status == 200 and not doc["ok"]:
                doc["error"] = f"the backend received {echoed.decode(errors='replace')} bytes, not {args.bytes}"
        else:
            sock.sendall(f"GET /download?bytes={args.bytes} HTTP/1.1\r\nHost: {args.host}\r\n\r\n".encode())
            status, headers = _read_head(f)
            doc["transferred"] = _read_body(f, headers, buf) if status == 200 else 0
            doc["ok"] = status == 200 and doc["transferred"] == args.bytes
            if status == 200 and not doc["ok"]:
                doc["error"] = f"received {doc['transferred']} bytes, not {args.bytes}"
        doc["seconds"] = time.perf_counter() - start
        doc["status"] = status
        if status != 200:
            doc["error"] = f"status {status}"
        doc["mb_per_s"] = doc["transferred"] / (1 << 20) / doc["seconds"] if doc["seconds"] else 0.0
        sock.close()
    except (OSError, ValueError, IndexError, ssl.SSLError, ConnectionError) as e:
        doc["error"] = f"{type(e).__name__}: {e}"
    if sampler:
        sampler.stop.set()
        if sampler.is_alive():
            sampler.join()
        doc["rss_before_mb"] = rss_before
        doc["rss_peak_mb"] = max(sampler.peak_kb / 1024, rss_before)
        doc["rss_after_mb"] = tree_rss_kb(args.watch_pid) / 1024
    _write_json(args.out, doc)


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ws-echo")
    s.add_argument("port", type=int)
    s.set_defaults(func=cmd_ws_echo)
    s = sub.add_parser("ws-client")
    s.add_argument("url")
    s.add_argument("host")
    s.add_argument("--conns", type=int, default=64)
    s.add_argument("--duration", type=float, default=10)
    s.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds after every connection is up")
    s.add_argument("--size", type=int, default=64, help="message payload bytes")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_ws_client)
    s = sub.add_parser("idle-client")
    s.add_argument("url")
    s.add_argument("host")
    s.add_argument("--conns", type=int, default=10000)
    s.add_argument("--parallel", type=int, default=256, help="connections being opened at once")
    s.add_argument("--hold", type=float, default=3, help="seconds to hold every connection open")
    s.add_argument("--watch-pid", type=int, required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_idle_client)
    s = sub.add_parser("stream-backend")
    s.add_argument("port", type=int)
    s.set_defaults(func=cmd_stream_backend)
    s = sub.add_parser("stream-client")
    s.add_argument("url")
    s.add_argument("host")
    s.add_argument("--direction", choices=["upload", "download"], required=True)
    s.add_argument("--bytes", type=int, required=True)
    s.add_argument("--watch-pid", type=int)
    s.add_argument("--timeout", type=float, default=120, help="socket timeout, seconds")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_stream_client)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
