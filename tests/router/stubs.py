"""A fake llama-server that can crash, hang or misbehave on cue, for the router's hardening
tests. It speaks enough HTTP/1.1 (keep-alive, Content-Length bodies) and llama-server's OpenAI
shapes; the last user message is the command:

    hello              a chat.completion
    sleep:S            the same after S seconds
    stream:N:D         N SSE events D seconds apart, then `data: [DONE]`
    reset              close the connection without an answer (the process stays up)
    crash              the process "dies": every connection reset, the port refuses
    500:MESSAGE        a 500 with llama-server's error shape
    long:N:D           N tokens D seconds apart: as SSE (with a usage event) when the body
                       says `stream: true`, else one JSON answer at the end
    echo:TEXT          a chat.completion whose content is the command itself
    double:now|later   the echo, then a second, unsolicited response on the same connection:
                       in the same write, or 0.2 s later (review 2026-12-06 N2)

It also holds what the stubs built on the standard library's HTTP server share (fedstubs.py,
test_router_reliability.py): the reply and event shapes, `StubHandler` and `LoopbackServer`.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY = {
    "id": "x",
    "object": "chat.completion",
    "created": 0,
    "model": "stub",
    "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "fine"}}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def sse_event(text: str, model: str = "stub") -> bytes:
    chunk = {
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": {"content": text}}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def chunked(data: bytes) -> bytes:
    """`data` as one chunk of a chunked HTTP/1.1 body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class StubHandler(BaseHTTPRequestHandler):
    """The base of the standard-library stubs: HTTP/1.1 keep-alive, no request log, JSON
    answers with a length, SSE answers in chunks, and a death in the middle of one."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _start_events(self, headers: dict[str, str] | None = None) -> None:
        """A 200 `text/event-stream` answer with a chunked body, and `headers`."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def _send_event(self, data: bytes) -> None:
        self.wfile.write(chunked(data))
        self.wfile.flush()

    def _die(self) -> None:
        """The backend dies: the connection ends where the answer stands, unfinished."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


class LoopbackServer:
    """A threaded standard-library HTTP server on a free loopback port."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _response(status: int, body: bytes, reason: str = "OK") -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


class StubBackend:
    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.hits = 0  # POSTs received
        self.health_hits = 0
        self.hang_health = False  # /health never answers (a frozen process)
        self.reset_everything = False  # accept, read the request line, reset (a broken port)
        self.alive = False
        self.last_stream_flag: object = None  # the `stream` of the last POST body
        self.cancelled = threading.Event()  # a streamed answer found its client gone
        self.extra_sent = threading.Event()  # a double: command sent its second response
        self.extra_closed = threading.Event()  # ... and its client then closed the connection
        self.extra_connection: socket.socket | None = None
        self._lock = threading.Lock()
        self._clients: set[socket.socket] = set()
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.port = self.listener.getsockname()[1]
        self.listener.listen(256)
        self.alive = True
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def crash(self) -> None:
        """Like kill -9: the port refuses, every open connection is reset."""
        self.alive = False
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self._lock:
            clients, self._clients = list(self._clients), set()
        for client in clients:
            _reset(client)

    def close(self) -> None:
        if self.alive:
            self.crash()

    # --- serving ---------------------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._clients.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        reader = _Reader(client)  # not makefile(): its reference keeps a reset socket open
        try:
            while True:
                line = reader.readline()
                if not line:
                    return
                if self.reset_everything:
                    if line.startswith(b"GET /health"):
                        self.health_hits += 1
                    _reset(client)
                    return
                headers: dict[str, str] = {}
                while (header := reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", "0") or 0))
                method, path = line.split()[:2]
                if method == b"GET":
                    if path == b"/health":
                        self.health_hits += 1
                        while self.hang_health:
                            time.sleep(0.05)
                        client.sendall(_response(200, b'{"status":"ok"}'))
                    else:
                        client.sendall(_response(200, b"llamacpp:requests_processing 0\n"))
                    continue
                self.hits += 1
                if not self._answer(client, json.loads(body)):
                    return
        except OSError:
            return
        finally:
            if client is self.extra_connection:
                self.extra_closed.set()
            with self._lock:
                self._clients.discard(client)
            try:
                client.close()
            except OSError:
                pass

    def _answer(self, client: socket.socket, body: dict[str, Any]) -> bool:
        if "messages" in body:
            command = str(body["messages"][-1]["content"])
        else:
            command = str(body.get("prompt", "hello"))
        self.last_stream_flag = body.get("stream")
        if command.startswith("long:"):
            return _long_answer(self, client, body, command)
        if command == "crash":
            self.crash()
            return False
        if command == "reset":
            _reset(client)
            return False
        if command.startswith("500:"):
            error = {"error": {"code": 500, "message": command[4:], "type": "server_error"}}
            client.sendall(_response(500, json.dumps(error).encode(), "Internal Server Error"))
            return True
        if command.startswith(("echo:", "double:")):
            reply = dict(REPLY, choices=[{"index": 0, "message": {"content": command}}])
            answer = _response(200, json.dumps(reply).encode())
            if not command.startswith("double:"):
                client.sendall(answer)
                return True
            extra = dict(REPLY, choices=[{"index": 0, "message": {"content": "EXTRA"}}])
            if command == "double:later":
                client.sendall(answer)
                answer = b""
                time.sleep(0.2)
            client.sendall(answer + _response(200, json.dumps(extra).encode()))
            self.extra_connection = client
            self.extra_sent.set()
            return True
        if command.startswith("sleep:"):
            time.sleep(float(command.split(":")[1]))
        if command.startswith("stream:"):
            _, count, delay = command.split(":")
            client.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            for i in range(int(count)):
                client.sendall(chunked(sse_event(f"tok{i} ")))
                time.sleep(float(delay))
            client.sendall(chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            return True
        client.sendall(_response(200, json.dumps(REPLY).encode()))
        return True


def _long_answer(
    self: StubBackend, client: socket.socket, body: dict[str, Any], command: str
) -> bool:
    _, count, delay = command.split(":")
    chat = "messages" in body
    if body.get("stream") is not True:
        time.sleep(int(count) * float(delay))
        reply = dict(REPLY, choices=[dict(REPLY["choices"][0])])  # type: ignore[arg-type]
        client.sendall(_response(200, json.dumps(reply).encode()))
        return True
    client.sendall(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    try:
        for i in range(int(count)):
            last = i == int(count) - 1
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop" if last else None}
            if chat:
                choice["delta"] = {"content": f"tok{i} "}
            else:
                choice["text"] = f"tok{i} "
            event = {"id": "cmpl-1", "created": 7, "model": "stub", "choices": [choice]}
            client.sendall(chunked(b"data: " + json.dumps(event).encode() + b"\n\n"))
            time.sleep(float(delay))
        usage = {
            "id": "cmpl-1",
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": int(count)},
        }
        for data in (b"data: " + json.dumps(usage).encode() + b"\n\n", b"data: [DONE]\n\n"):
            client.sendall(chunked(data))
        client.sendall(b"0\r\n\r\n")
    except OSError:
        self.cancelled.set()
        return False
    return True


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def readline(self) -> bytes:
        while b"\n" not in self.buf:
            if not self._fill():
                line, self.buf = self.buf, b""
                return line
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def read(self, size: int) -> bytes:
        while len(self.buf) < size:
            if not self._fill():
                break
        data, self.buf = self.buf[:size], self.buf[size:]
        return data
