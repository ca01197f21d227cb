"""The API server's side of `pods/portforward` over WebSocket (channel protocol v4), for the
Kubernetes stand-in: it relays one port to a real TCP server on loopback, the way the kubelet
relays to a pod's port.

Protocol (as the official Python client's `kubernetes.stream.portforward` speaks it): a GET with
`?ports=P` upgrades to a WebSocket with subprotocol `v4.channel.k8s.io`; each port has a data
channel (2i) and an error channel (2i+1); the server's first frame on each channel is the port
number, 2 bytes little-endian; after that every binary frame is one channel byte plus data.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler
from typing import BinaryIO

from tests.support.http_fake import Request, Response

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = "v4.channel.k8s.io"
OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x2, 0x8, 0x9, 0xA
IO_TIMEOUT_S = 30.0  # every read ends: a stuck test fails instead of hanging


def _frame(opcode: int, payload: bytes) -> bytes:
    """A server frame: final, unmasked."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return head + payload


def _read_frame(stream: BinaryIO) -> tuple[int, bytes] | None:
    """One client frame (clients must mask), or None at EOF."""
    head = stream.read(2)
    if len(head) < 2:
        return None
    opcode, size = head[0] & 0x0F, head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", stream.read(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", stream.read(8))[0]
    mask = stream.read(4) if head[1] & 0x80 else b""
    payload = stream.read(size)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def portforward_response(
    forwards: dict[str, tuple[str, int]], namespace: str, pod: str, request: Request
) -> Response:
    from tests.support.fake_kube import status

    if request.headers.get("upgrade", "").lower() != "websocket":
        return status(400, "BadRequest", "Upgrade request required")
    offered = [p.strip() for p in request.headers.get("sec-websocket-protocol", "").split(",")]
    if SUBPROTOCOL not in offered:
        return status(400, "BadRequest", f"subprotocols {offered} not supported")
    ports = [int(p) for p in request.query.get("ports", "").split(",") if p]
    if len(ports) != 1:
        return status(400, "BadRequest", "this stand-in forwards exactly one port")
    port = ports[0]
    key = request.headers["sec-websocket-key"]
    accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    target = forwards.get(f"{namespace}/{pod}:{port}")

    def relay(handler: BaseHTTPRequestHandler) -> None:
        out = handler.wfile
        out.write(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n"
            f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n".encode()
        )
        port_bytes = struct.pack("<H", port)
        out.write(_frame(OP_BINARY, b"\x00" + port_bytes))
        out.write(_frame(OP_BINARY, b"\x01" + port_bytes))
        out.flush()
        handler.connection.settimeout(IO_TIMEOUT_S)
        try:
            upstream = socket.create_connection(target, timeout=IO_TIMEOUT_S) if target else None
        except OSError:
            upstream = None
        if upstream is None:
            message = f"error forwarding port {port} to pod {pod}: connection refused"
            out.write(_frame(OP_BINARY, b"\x01" + message.encode()))
            out.write(_frame(OP_CLOSE, b""))
            out.flush()
            return
        lock = threading.Lock()

        def client_to_pod() -> None:
            try:
                while True:
                    frame = _read_frame(handler.rfile)
                    if frame is None or frame[0] == OP_CLOSE:
                        break
                    opcode, payload = frame
                    if opcode == OP_PING:
                        with lock:
                            out.write(_frame(OP_PONG, payload))
                            out.flush()
                    elif opcode == OP_BINARY and payload[:1] == b"\x00":
                        upstream.sendall(payload[1:])
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)

        reader = threading.Thread(target=client_to_pod, daemon=True)
        reader.start()
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                with lock:
                    out.write(_frame(OP_BINARY, b"\x00" + data))
                    out.flush()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError), lock:
                out.write(_frame(OP_CLOSE, struct.pack("!H", 1000)))
                out.flush()
            upstream.close()
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            reader.join(timeout=5)

    return Response(101, hijack=relay)
