"""The OpenAI API's request fields, checked, and its error and response shapes.

A request body is JSON; every field is checked for its type and range before anything reaches the
model, and a bad one is answered as OpenAI answers it, with a status and a JSON body:

    400 {"error": {"message": "max_tokens must be an integer, got 'ten'", "type": "invalid_request_error",
                   "param": "max_tokens", "code": null}}

Statuses: 400 bad input, 401 a wrong or missing API key, 404 an unknown model or path,
413 a body too large, 429 the request queue full. The official client turns them into
BadRequestError, AuthenticationError, NotFoundError, APIStatusError and RateLimitError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
}


class APIError(Exception):
    """An error to answer with ``status`` and OpenAI's JSON error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": ERROR_TYPES.get(self.status, "invalid_request_error"),
                      "param": self.param, "code": self.code}
        }


@dataclass
class CompletionRequest:
    """What a /v1/chat/completions or /v1/completions request asks for, after checking."""

    model: str | None
    messages: list[dict[str, str]] | None = None  # chat
    prompt: str | list[int] | None = None  # completions
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False


def _number(body: dict, name: str, low: float, high: float, default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise APIError(400, f"{name} must be a number, got {value!r}", name)
    if not low <= value <= high:
        raise APIError(400, f"{name} must be between {low} and {high}, got {value}", name)
    return float(value)


def _integer(body: dict, name: str, low: int, default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise APIError(400, f"{name} must be an integer, got {value!r}", name)
    if value < low:
        raise APIError(400, f"{name} must be at least {low}, got {value}", name)
    return value


def _message_text(content: Any, index: int) -> str:
    """A message's content: a string, or OpenAI's list of parts [{"type": "text", "text": ...}]."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        if all(isinstance(p.get("text"), str) for p in content):
            return "".join(p["text"] for p in content)
    raise APIError(400, f"messages[{index}].content must be a string or a list of text parts", "messages")


def parse_request(body: Any, chat: bool) -> CompletionRequest:
    """Check a decoded JSON body; ``APIError`` (400) naming the first bad field."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise APIError(400, f"model must be a string, got {model!r}", "model")
    request = CompletionRequest(model=model)
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "messages must be a non-empty list of {role, content} objects", "messages")
        request.messages = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise APIError(400, f"messages[{i}] must be an object with a string role", "messages")
            if m["role"] not in ("system", "user", "assistant", "developer"):
                raise APIError(400, f"messages[{i}].role {m['role']!r} is not system, user or assistant", "messages")
            role = "system" if m["role"] == "developer" else m["role"]
            request.messages.append({"role": role, "content": _message_text(m.get("content"), i)})
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        is_ids = isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        if not (isinstance(prompt, str) or is_ids) or not prompt:
            raise APIError(400, "prompt must be a non-empty string (or a list of token ids)", "prompt")
        request.prompt = prompt
    request.max_tokens = _integer(body, "max_tokens", 1, None)
    if chat and body.get("max_completion_tokens") is not None:
        request.max_tokens = _integer(body, "max_completion_tokens", 1, None)
    request.temperature = _number(body, "temperature", 0.0, 2.0, 1.0)
    request.top_p = _number(body, "top_p", 0.0, 1.0, None)
    if request.top_p == 0.0:
        raise APIError(400, "top_p must be above 0", "top_p")
    request.top_k = _integer(body, "top_k", 1, None)
    request.seed = _integer(body, "seed", -(2**63), None)
    if request.seed is not None:
        request.seed %= 2**64  # NumPy seeds are non-negative; OpenAI's may be negative
    n = _integer(body, "n", 1, 1)
    if n != 1:
        raise APIError(400, f"n={n}: this server returns one choice per request", "n")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4):
        raise APIError(400, "stop must be a string or a list of up to 4 strings", "stop")
    request.stop = [s for s in (stop or []) if s]
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, f"stream must be true or false, got {stream!r}", "stream")
    request.stream = stream
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise APIError(400, "stream_options must be an object", "stream_options")
        request.include_usage = bool(options.get("include_usage", False))
    return request
