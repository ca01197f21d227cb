"""llama-server's answers as the router reshapes them: a non-streamed request asked as a stream
and rebuilt into one JSON answer (so that it is cancelled on the backend when its client leaves),
llama-server's client-mistake 500s as OpenAI's 400, and the token counts in a payload."""

from __future__ import annotations

import contextlib
import json
import re

from llmctl.router.errors import ApiError
from llmctl.router.upstream import Response, UpstreamError

_USAGE_PROMPT = re.compile(rb'"prompt_tokens":\s*(\d+)')
_USAGE_COMPLETION = re.compile(rb'"completion_tokens":\s*(\d+)')
_TIMINGS_PROMPT = re.compile(rb'"prompt_n":\s*(\d+)')
_TIMINGS_PREDICTED = re.compile(rb'"predicted_n":\s*(\d+)')


def token_counts(payload: bytes) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens from `usage`, or llama-server's `timings` in streams."""
    prompt = _USAGE_PROMPT.search(payload) or _TIMINGS_PROMPT.search(payload)
    completion = _USAGE_COMPLETION.search(payload) or _TIMINGS_PREDICTED.search(payload)
    return (
        int(prompt.group(1)) if prompt else None,
        int(completion.group(1)) if completion else None,
    )


# llama-server answers 500 to requests it cannot parse or does not support (a client mistake
# the router's validation cannot foresee: image parts for a text model, odd message shapes).
CLIENT_MISTAKE = re.compile(
    rb"parse_error|Failed to parse|[Ii]nvalid |is not supported|not supported|type must be"
    rb"|must be (?:a|an) |\[json\.exception|unsupported|Unsupported|Expected "
)


def as_client_error(payload: bytes) -> bytes:
    """llama-server's 500 body re-shaped as OpenAI's 400 invalid_request_error."""
    message = payload.decode("utf-8", "replace")
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        message = str(json.loads(payload)["error"]["message"])
    return json.dumps(
        {
            "error": {
                "message": f"the backend cannot process this request: {message[:1000]}",
                "type": "invalid_request_error",
                "code": "unsupported_request",
            }
        }
    ).encode()


def as_streamed(raw: bytes) -> bytes:
    """The body with stream (and usage in the last event) turned on. Keys added last win in
    llama-server's JSON parser, and the body stays byte for byte what the client sent."""
    return raw.rstrip()[:-1] + b',"stream":true,"stream_options":{"include_usage":true}}'


def broken_body(name: str, exc: UpstreamError) -> ApiError:
    """A backend's answer broke off before the client saw any of it."""
    return ApiError(
        502 if exc.kind != "timeout" else 504,
        f"{name}: {exc}",
        "upstream_error",
        "backend_error",
    )


def wants_assembly(body: dict[str, object], threshold: int) -> bool:
    """Whether a non-streamed request is asked of the backend as a stream (and answered
    as one JSON object): llama-server stops generating a stream as soon as its client
    goes away, but keeps generating a non-streamed answer to its end. Only long
    generations (no max_tokens, or at least limits.streamUpstreamFromMaxTokens), and only
    the shapes rebuilt faithfully: one choice, no logprobs, no tools."""
    if threshold <= 0:
        return False
    max_tokens = body.get("max_tokens", body.get("n_predict"))
    if isinstance(max_tokens, int) and 0 <= max_tokens < threshold:
        return False
    return not any(
        body.get(field) not in (None, False, 1)
        for field in ("n", "logprobs", "top_logprobs", "tools", "functions", "n_probs")
    ) and not isinstance(body.get("stream_options"), dict)


async def assemble(response: Response, name: str, path: str) -> bytes:
    """The JSON answer rebuilt from llama-server's events (see wants_assembly)."""
    chat = path == "/v1/chat/completions"
    first: dict[str, object] = {}
    texts: list[str] = []
    reasoning: list[str] = []
    finish: object = None
    usage: object = None
    timings: object = None
    buffer = b""
    try:
        while (chunk := await response.next_chunk()) is not None:
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                data = event.strip()
                if not data.startswith(b"data:"):
                    continue
                data = data[5:].strip()
                if data == b"[DONE]":
                    continue
                obj = json.loads(data)
                if "error" in obj:
                    text = str(obj["error"].get("message", obj["error"]))
                    if CLIENT_MISTAKE.search(text.encode()):
                        raise ApiError(
                            400,
                            f"the backend cannot process this request: {text[:1000]}",
                            "invalid_request_error",
                            "unsupported_request",
                        )
                    raise ApiError(500, f"{name}: {text}", "server_error", "backend_error")
                if not first:
                    first = obj
                usage = obj.get("usage") or usage
                timings = obj.get("timings") or timings
                for part in obj.get("choices") or ():
                    if chat:
                        delta = part.get("delta") or {}
                        texts.append(delta.get("content") or "")
                        reasoning.append(delta.get("reasoning_content") or "")
                    else:
                        texts.append(part.get("text") or "")
                    finish = part.get("finish_reason") or finish
    except UpstreamError as exc:
        raise broken_body(name, exc) from None
    except (ValueError, AttributeError, TypeError) as exc:
        raise ApiError(
            502, f"{name}: unreadable event: {exc}", "upstream_error", "backend_error"
        ) from None
    choice: dict[str, object] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if chat:
        message: dict[str, object] = {"role": "assistant", "content": "".join(texts)}
        if any(reasoning):
            message["reasoning_content"] = "".join(reasoning)
        choice["message"] = message
    else:
        choice["text"] = "".join(texts)
    answer: dict[str, object] = {
        "id": first.get("id"),
        "object": "chat.completion" if chat else "text_completion",
        "created": first.get("created"),
        "model": first.get("model"),
        "system_fingerprint": first.get("system_fingerprint"),
        "choices": [choice],
        "usage": usage,
    }
    if timings is not None:
        answer["timings"] = timings
    return json.dumps(answer, ensure_ascii=False).encode()
