"""Request validation: strict JSON as llama-server reads it and the OpenAI request shape, so that
a client's mistake is a 400 from the router that names the field, never a backend's 500."""

from __future__ import annotations

import json
import re

from llmctl.router.errors import invalid as _invalid


def _check_type(body: dict[str, object], field: str, types: tuple[type, ...], what: str) -> None:
    value = body.get(field)
    if value is None:
        return
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise _invalid(
            f"'{field}' must be {what}, got {type(value).__name__}", field, "invalid_type"
        )


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # built once: loads() builds one a call
# A \uD800-\uDFFF escape (one half of a surrogate pair): only then can a parsed string hold a
# lone surrogate, which strict UTF-8 (and llama-server's parser) cannot represent.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate(value: object) -> bool:
    """Whether any string in the parsed body holds a lone surrogate (iterative: no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_json(raw: bytes) -> object:
    """Strict JSON as llama-server reads it: UTF-8 only, no NaN/Infinity, no lone surrogates,
    bounded nesting. Every violation is an ApiError(400), never a 500 or a traceback."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(
            f"the request body must be UTF-8 encoded JSON: {exc.reason} at byte {exc.start}",
            None,
            "invalid_encoding",
        ) from None
    try:
        body = _DECODER.decode(text)
    except RecursionError:
        raise _invalid("the request body is nested too deeply", None, "invalid_json") from None
    except ValueError as exc:
        raise _invalid(f"the request body is not valid JSON: {exc}", None, "invalid_json") from None
    if _SURROGATE_ESCAPE.search(raw) and _lone_surrogate(body):
        raise _invalid(
            "the request body holds a lone UTF-16 surrogate escape (\\uD800-\\uDFFF without "
            "its pair)",
            None,
            "invalid_json",
        )
    return body


def _check_content(i: int, message: dict[str, object]) -> None:
    content = message.get("content")
    where = f"messages[{i}].content"
    if content is None:
        if message.get("role") in ("assistant",):
            return  # an assistant turn that only called tools
        raise _invalid(f"'{where}' is required", where, "missing_field")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _invalid(
            f"'{where}' must be a string or an array of content parts", where, "invalid_type"
        )
    for j, part in enumerate(content):
        here = f"{where}[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _invalid(f"'{here}' must be an object with a string 'type'", here, "invalid_type")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise _invalid(f"'{here}.text' must be a string", f"{here}.text", "invalid_type")


def _check_tools(body: dict[str, object]) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _invalid("'tools' must be an array of tools", "tools", "invalid_type")
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise _invalid(
                f"'{where}' must be an object with type 'function'", where, "invalid_type"
            )
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _invalid(
                f"'{where}.function' must be an object with a string 'name'",
                f"{where}.function",
                "invalid_type",
            )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _invalid(
                f"'{where}.function.parameters' must be an object",
                f"{where}.function.parameters",
                "invalid_type",
            )
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, str | dict):
        raise _invalid("'tool_choice' must be a string or an object", "tool_choice", "invalid_type")


def validate_body(raw: bytes, chat: bool) -> dict[str, object]:
    """The parsed request body, or an ApiError(400) that names the field."""
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object", None, "invalid_json")
    model = body.get("model")
    if model is None:
        raise _invalid("'model' is required", "model", "missing_field")
    if not isinstance(model, str):
        raise _invalid(
            f"'model' must be a string, got {type(model).__name__}", "model", "invalid_type"
        )
    if chat:
        messages = body.get("messages")
        if messages is None:
            raise _invalid("'messages' is required", "messages", "missing_field")
        if not isinstance(messages, list) or not messages:
            raise _invalid(
                "'messages' must be a non-empty array of messages", "messages", "invalid_type"
            )
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise _invalid(
                    f"'messages[{i}]' must be an object", f"messages[{i}]", "invalid_type"
                )
            if not isinstance(message.get("role"), str):
                raise _invalid(
                    f"'messages[{i}].role' must be a string", f"messages[{i}].role", "invalid_type"
                )
            _check_content(i, message)
        _check_tools(body)
    else:
        prompt = body.get("prompt")
        if prompt is None:
            raise _invalid("'prompt' is required", "prompt", "missing_field")
        if not isinstance(prompt, str | list):
            raise _invalid("'prompt' must be a string or an array", "prompt", "invalid_type")
    _check_type(body, "stream", (bool,), "a boolean")
    _check_type(body, "max_tokens", (int,), "an integer")
    _check_type(body, "temperature", (int, float), "a number")
    _check_type(body, "top_p", (int, float), "a number")
    _check_type(body, "metadata", (dict,), "an object")
    return body
