"""HTTP/1.1 conformance of the router's server, with nginx beside it as the reference (issue 25,
review 2026-12-06 §3 and N3, N7).

Each case is raw request bytes sent on a fresh connection, the answer nginx 1.22 gives (proxying
to the same stub backend, as in the review), and the router's. Where nginx is right, the router
answers the same; where they differ, `why` says which RFC text the router follows (the router
is stricter, never laxer: no case nginx rightly refuses is accepted). nginx runs here too, so
the reference column is measured, not copied.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httptools
import pytest

from tests.router.stubs import StubBackend
from tests.router.test_router_hardening import routed
from tests.support.llama import free_port
from tests.support.router import RouterProcess
from tests.support.tools import require_tool

pytestmark = pytest.mark.e2e

BODY = json.dumps({"model": "small", "messages": [{"role": "user", "content": "hello"}]}).encode()
N = len(BODY)
POST = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)


class Case(NamedTuple):
    data: bytes
    nginx: tuple[int, ...]  # the statuses nginx 1.22 answers, in order
    router: tuple[int, ...] | None = None  # None: the same as nginx
    why: str = ""  # why the router differs


SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
CASES: dict[str, Case] = {
    "baseline CL": Case(POST + b"Content-Length: %d\r\n\r\n" % N + BODY, (200,)),
    "baseline chunked": Case(POST + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(BODY), (200,)),
    "CL.TE": Case(
        POST
        + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (5 + 35)
        + SMUGGLE,
        (400,),
    ),
    "TE.CL": Case(
        POST + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + chunked(BODY), (400,)
    ),
    "two CL, different": Case(
        POST + b"Content-Length: %d\r\nContent-Length: 4\r\n\r\n" % N + BODY, (400,)
    ),
    "CL 'N, N'": Case(POST + b"Content-Length: %d, %d\r\n\r\n" % (N, N) + BODY, (400,)),
    "CL '+N'": Case(POST + b"Content-Length: +%d\r\n\r\n" % N + BODY, (400,)),
    "CL -1": Case(POST + b"Content-Length: -1\r\n\r\n" + BODY, (400,)),
    "CL tab before value": Case(
        POST + b"Content-Length:\t%d\r\n\r\n" % N + BODY,
        (400,),
        (200,),
        "RFC 9110 §5.6.3: OWS is spaces and horizontal tabs",
    ),
    "CL hex": Case(POST + b"Content-Length: 0x%x\r\n\r\n" % N + BODY, (400,)),
    "CL 2^64+N": Case(POST + b"Content-Length: %d\r\n\r\n" % (2**64 + N) + BODY, (400,)),
    "space before colon": Case(POST + b"Content-Length : %d\r\n\r\n" % N + BODY, (400,)),
    "TE obs-fold": Case(POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n" + chunked(BODY), (400,)),
    "TE 'identity, chunked'": Case(
        POST + b"Transfer-Encoding: identity, chunked\r\n\r\n" + chunked(BODY), (501,)
    ),
    "TE 'gzip, chunked'": Case(
        POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + chunked(BODY), (501,)
    ),
    "TE 'Chunked'": Case(POST + b"Transfer-Encoding: Chunked\r\n\r\n" + chunked(BODY), (200,)),
    "bare CR in a value": Case(
        POST + b"X-A: a\rb\r\nContent-Length: %d\r\n\r\n" % N + BODY, (400,)
    ),
    "chunk size overflow": Case(
        POST + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 17 + b"\r\n" + BODY, (400,)
    ),
    "chunk data longer than its size": Case(
        POST + b"Transfer-Encoding: chunked\r\n\r\n2\r\n" + BODY + b"\r\n0\r\n\r\n", (400,)
    ),
    "chunk extension": Case(
        POST + b"Transfer-Encoding: chunked\r\n\r\n%x;a=b\r\n%b\r\n0\r\n\r\n" % (N, BODY), (200,)
    ),
    "trailer field": Case(
        POST + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\nX-T: 1\r\n\r\n" % (N, BODY),
        (200,),
    ),
    "absolute-form": Case(
        b"POST http://x/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % N
        + BODY,
        (200,),
    ),
    "absolute-form GET /healthz": Case(b"GET http://x/healthz HTTP/1.1\r\nHost: x\r\n\r\n", (200,)),
    "asterisk-form": Case(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
    "CONNECT": Case(b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", (400,)),
    "no Host": Case(b"GET /healthz HTTP/1.1\r\n\r\n", (400,)),
    "two Host": Case(b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", (400,)),
    "Host with a space": Case(b"GET /healthz HTTP/1.1\r\nHost: x y\r\n\r\n", (400,)),
    "NUL in a value": Case(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", (400,)),
    "NUL in the URL": Case(b"GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
    "invalid header name": Case(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX(Y: 1\r\n\r\n",
        (200,),
        (400,),
        "RFC 9110 §5.1: a field name is a token; nginx drops the line, llhttp refuses it",
    ),
    "lowercase method": Case(b"get /healthz HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
    "HTTP/1.2": Case(b"GET /healthz HTTP/1.2\r\nHost: x\r\n\r\n", (200,)),
    "HTTP/2.0": Case(b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", (505,)),
    "HTTP/1.0 with chunked": Case(
        b"POST /v1/chat/completions HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(BODY),
        (400,),
    ),
    "HTTP/1.0 keep-alive twice": Case(
        b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2,
        (200, 200),
        (200,),
        "RFC 9112 §9.3: a server may close a 1.0 connection; it says `connection: close`",
    ),
    "pipelined GETs": Case(GET * 20, (200,) * 20, (200,) * 17, "RFC 9112 §9.3.2"),
    "body over 1 MiB": Case(POST + b"Content-Length: 2000000\r\n\r\n", (413,)),
    "URL of 9 KB": Case(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", (414,)),
    "header of 70 KB": Case(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 70_000 + b"\r\n\r\n",
        (400,),
        (431,),
        "RFC 6585 §5: 431 names the reason",
    ),
    "1000 small headers": Case(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: 12345678\r\n" * 1000 + b"\r\n",
        (400,),
        (431,),
        "RFC 6585 §5",
    ),
}


def answers(port: int, data: bytes, expected: int) -> tuple[int, ...]:
    """The statuses of the answers to `data` on a fresh connection, read until the connection
    closes, or `expected` answers are in and nothing more comes for 0.3 s (1.5 s otherwise)."""
    statuses: list[int] = []

    class Reader:
        def on_headers_complete(self) -> None:
            code = parser.get_status_code()
            if code != 100:
                statuses.append(code)

    parser = httptools.HttpResponseParser(Reader())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # answered and closed before it read everything
        while True:
            sock.settimeout(0.3 if len(statuses) >= expected else 1.5)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            try:
                parser.feed_data(chunk)
            except httptools.HttpParserError:
                break
    return tuple(statuses)


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
}}
"""


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """The router and nginx (the review's config: keepalive upstream, no buffering), each in
    front of a stub backend."""
    nginx = "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else require_tool("nginx")
    tmp = tmp_path_factory.mktemp("conformance")
    stub = StubBackend()
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, backend=stub.port, port=port))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)], stderr=subprocess.DEVNULL)
    try:
        with routed(tmp, {"aws/cpu": {}}, limits={"maxBodyBytes": 1_048_576}) as (router, _):
            deadline = time.monotonic() + 30
            while answers(port, GET, 1) != (200,):
                assert time.monotonic() < deadline, "nginx did not start"
            yield {"router": router.port, "nginx": port}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        stub.close()


@pytest.mark.parametrize("name", list(CASES))
def test_router_answers_as_nginx_does_where_nginx_is_right(
    targets: dict[str, int], name: str
) -> None:
    case = CASES[name]
    expected = case.router if case.router is not None else case.nginx
    assert answers(targets["nginx"], case.data, len(case.nginx)) == case.nginx, "nginx changed"
    assert answers(targets["router"], case.data, len(expected)) == expected


def test_no_case_is_accepted_that_nginx_refuses() -> None:
    """The table's own rule: where nginx refuses (4xx/5xx), the router refuses too, except
    where the RFC says the value is valid (`why` names the section)."""
    for name, case in CASES.items():
        if case.router is None:
            continue
        laxer = case.nginx[0] >= 400 and case.router[0] < 400
        assert not laxer or "RFC 9110 §5.6.3" in case.why, name


# --- trailers never become headers (N3) ------------------------------------------------------


def trailer_request(trailer: bytes, headers: bytes = b"") -> bytes:
    return (
        POST
        + headers
        + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n%b\r\n\r\n" % (N, BODY, trailer)
    )


def raw_head(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        out = b""
        while b"\r\n\r\n" not in out and (chunk := sock.recv(65536)):
            out += chunk
    return out.split(b"\r\n\r\n")[0].lower()


def test_trailer_fields_never_become_headers(tmp_path: Path) -> None:
    """N3: a key sent only in a trailer was accepted (200), a right key trailing a wrong one
    too, and a trailer `x-llm-complexity: reasoning` sent the request to the GPU tier."""
    env = {"ROUTER_KEYS": "sk-test-1"}
    backends: dict[str, dict[str, Any]] = {"aws/cpu": {}, "aws/gpu": {"tier": "gpu"}}
    with routed(tmp_path, backends, env=env, apiKeys={"env": "ROUTER_KEYS"}) as (router, _):
        assert isinstance(router, RouterProcess)
        key = b"Authorization: Bearer sk-test-1"
        only_in_trailer = raw_head(router.port, trailer_request(key))
        assert only_in_trailer.startswith(b"http/1.1 401 "), only_in_trailer
        after_a_wrong_one = raw_head(
            router.port, trailer_request(key, b"Authorization: Bearer wrong\r\n")
        )
        assert after_a_wrong_one.startswith(b"http/1.1 401 "), after_a_wrong_one
        tier = raw_head(router.port, trailer_request(b"X-LLM-Complexity: reasoning", key + b"\r\n"))
        assert tier.startswith(b"http/1.1 200 ") and b"x-llm-tier: cpu" in tier, tier
