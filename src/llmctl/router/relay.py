"""Relaying a streamed (SSE) answer to the client, chunk by chunk: one code path for a local
backend's answer and a peer router's (issue 25; they had drifted apart in two copies)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from llmctl.router.upstream import Response, UpstreamError, error_event


class Sink(Protocol):
    """What relaying needs of the client's answer (server.Exchange under uvicorn, asgi.Reply under
    other ASGI servers)."""

    @property
    def shutting_down(self) -> bool: ...  # the drain deadline cut this request
    @property
    def responded(self) -> bool: ...  # the status line went out
    async def send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None: ...

    async def start_stream(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...
    async def write_chunk(self, data: bytes) -> None: ...
    async def end_stream(self) -> None: ...


async def relay_stream(
    conn: Sink,
    response: Response,
    headers: list[tuple[bytes, bytes]],
    *,
    source: str,
    on_first: Callable[[], None],
    on_chunk: Callable[[bytes], None] | None = None,
) -> bool:
    """Pass the events through as they come. A failure after the first byte ends the stream with
    an error event (never a retry: the client has seen part of an answer), and so does the drain
    deadline at shutdown: a stream is never cut silently. False when `source` broke it off.

    `on_first` runs at the first chunk (time to first token), `on_chunk` at each (tokens)."""
    await conn.start_stream(response.status, headers)
    first = True
    tail = b"\n\n"
    try:
        while (chunk := await response.next_chunk()) is not None:
            if first:
                on_first()
                first = False
            if on_chunk is not None:
                on_chunk(chunk)
            tail = chunk[-2:]
            await conn.write_chunk(chunk)
    except UpstreamError as exc:
        await conn.write_chunk(
            error_event(tail, f"{source} failed mid-stream: {exc}", "stream_broken")
        )
        await conn.end_stream()
        return False
    except asyncio.CancelledError:
        if conn.shutting_down:
            await conn.write_chunk(
                error_event(
                    tail,
                    "the router shut down before this stream ended (drain deadline)",
                    "shutting_down",
                )
            )
            await conn.end_stream()
        raise
    await conn.end_stream()
    return True
