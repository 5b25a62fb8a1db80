"""The HTTP side: an OpenAI-compatible API and the chat page, on Starlette (run by uvicorn).

    GET  /                       the chat page (static/index.html: plain HTML and JavaScript, no CDN)
    GET  /health                 {"status": "ok", active and waiting requests, cache rows in use, ...}
    GET  /v1/models              the one model served
    POST /v1/chat/completions    messages rendered with the model's chat template
    POST /v1/completions         a plain prompt

A completion request is checked (``protocol.py``), turned into token ids, and handed to the
``Scheduler`` thread, which owns the model. Tokens come back as events on an ``asyncio.Queue``
(put there with ``call_soon_threadsafe``), so the event loop never waits on the model. With
``"stream": true`` each piece of text goes out at once as a server-sent event in OpenAI's
chunk format, ending with ``data: [DONE]``:

    data: {"id": "chatcmpl-...", "object": "chat.completion.chunk", "choices": [{"index": 0,
           "delta": {"content": "Hello"}, "finish_reason": null}], ...}

A client that disconnects, or a stop string that matches, cancels the request: the scheduler
frees its cache row before its next step.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import anyio
from jinja2.exceptions import TemplateError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

from ..tokenizer.text_stream import TextStream
from .protocol import APIError, CompletionRequest, parse_request
from .scheduler import GenerationRequest, QueueFullError, Scheduler

MAX_BODY_BYTES = 1 << 20  # 1 MiB of JSON is far more than any context this server runs


class EventStream(StreamingResponse):
    """Server-sent events that notice a client leaving at once, even while no token is being sent,
    and always close the event generator (whose ``finally`` cancels the generation)."""

    media_type = "text/event-stream"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:  # the client went away mid-write
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            await self.body_iterator.aclose()


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(
    model: Any,
    tokenizer: Any,
    model_id: str = "tinyllm",
    max_batch: int = 8,
    max_queue: int = 64,
    api_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Starlette:
    """The Starlette app serving ``model`` with ``tokenizer``; its scheduler thread runs while the app does.

    >>> # uvicorn.run(create_app(model, tokenizer, "smollm2"), host="127.0.0.1", port=8000)
    """
    scheduler = Scheduler(model, max_batch=max_batch, max_queue=max_queue)
    max_seq_len = model.config.max_seq_len
    vocab_size = model.config.vocab_size
    stop_ids = frozenset([tokenizer.eos_id]) if getattr(tokenizer, "eos_id", None) is not None else frozenset()
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202
        scheduler.start()
        yield
        scheduler.stop()

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise APIError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                           code="invalid_api_key")

    async def read_json(request: Request) -> Any:
        length = request.headers.get("content-length", "")
        too_large = APIError(413, f"the request body is larger than {max_body_bytes} bytes", code="body_too_large")
        if length.isdigit() and int(length) > max_body_bytes:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise too_large
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise APIError(400, f"the request body is not valid JSON: {error}") from None

    def prompt_ids(req: CompletionRequest) -> list[int]:
        if req.messages is not None:
            if getattr(tokenizer, "chat_template", None) is None:
                raise APIError(400, "this model has no chat template; use /v1/completions with a prompt")
            try:
                text = tokenizer.apply_chat_template(req.messages, add_generation_prompt=True)
            except TemplateError as error:
                raise APIError(400, f"the chat template rejected the messages: {error}", "messages") from None
            return tokenizer.encode(text, allowed_special="all")
        if isinstance(req.prompt, list):
            bad = [t for t in req.prompt if not 0 <= t < vocab_size]
            if bad:
                raise APIError(400, f"token id {bad[0]} is outside the vocabulary (0..{vocab_size - 1})", "prompt")
            return list(req.prompt)
        return tokenizer.encode(req.prompt, allowed_special="all")

    async def completion(request: Request, chat: bool) -> Any:
        check_key(request)
        req = parse_request(await read_json(request), chat)
        if req.model is not None and req.model != model_id:
            raise APIError(404, f"the model {req.model!r} does not exist; this server serves {model_id!r}", "model",
                           "model_not_found")
        ids = prompt_ids(req)
        room = max_seq_len - len(ids)
        if room <= 0:
            raise APIError(400, f"the prompt has {len(ids)} tokens but the model's context is {max_seq_len} tokens; "
                                "shorten it", "messages" if chat else "prompt", "context_length_exceeded")
        max_tokens = req.max_tokens if req.max_tokens is not None else (room if chat else min(16, room))
        if max_tokens > room:
            raise APIError(400, f"max_tokens={max_tokens} does not fit: the context is {max_seq_len} tokens and the "
                                f"prompt takes {len(ids)}, which leaves {room}", "max_tokens", "context_length_exceeded")

        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = GenerationRequest(
            ids, max_tokens, emit=lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
            temperature=req.temperature, top_k=req.top_k, top_p=req.top_p, seed=req.seed, stop_ids=stop_ids,
        )
        try:
            scheduler.submit(job)
        except QueueFullError as error:
            raise APIError(429, f"the server is busy ({error}); retry later", code="queue_full") from None
        kind = "chat.completion" if chat else "text_completion"
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        head = {"id": ident, "object": kind, "created": int(time.time()), "model": model_id,
                "system_fingerprint": None}
        text_stream = TextStream(tokenizer, req.stop)

        def usage(n: int) -> dict[str, int]:
            return {"prompt_tokens": len(ids), "completion_tokens": n, "total_tokens": len(ids) + n}

        def step(event: tuple[str, Any]) -> tuple[str, str | None]:
            """One scheduler event -> (text to send, finish_reason or None)."""
            what, value = event
            if what == "error":
                raise APIError(500, f"generation failed: {value}")
            if what == "done":
                return text_stream.flush(), value
            text, stopped = text_stream.push(value)
            if stopped:
                scheduler.cancel(job)
                return text, "stop"
            return text, None

        if req.stream:
            return EventStream(stream_events(chat, head, events, step, usage, req.include_usage, job))

        n_tokens, pieces, finish = 0, [], None
        try:
            while finish is None:
                try:
                    event = await asyncio.wait_for(events.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return JSONResponse({}, status_code=499)
                    continue
                n_tokens += event[0] == "token"
                text, finish = step(event)
                pieces.append(text)
        finally:
            scheduler.cancel(job)  # nothing, if it has finished; frees its row if the client went away
        text = "".join(pieces)
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return JSONResponse({**head, "choices": [choice], "usage": usage(n_tokens)})

    async def stream_events(chat, head, events, step, usage, include_usage, job):  # noqa: ANN001, ANN202
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(text: str | None, finish: str | None, role: bool = False) -> str:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
                if text:
                    delta["content"] = text
                choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
            body = {**head, "object": kind, "choices": [choice]}
            if include_usage:
                body["usage"] = None
            return sse(body)

        try:
            if chat:
                yield chunk(None, None, role=True)
            n_tokens, finish = 0, None
            while finish is None:
                event = await events.get()
                n_tokens += event[0] == "token"
                try:
                    text, finish = step(event)
                except APIError as error:
                    yield sse(error.body())
                    break
                if text and finish is None:
                    yield chunk(text, None)
                elif finish is not None:
                    if text:
                        yield chunk(text, None)
                    yield chunk(None, finish)
            if include_usage:
                yield sse({**head, "object": kind, "choices": [], "usage": usage(n_tokens)})
            yield "data: [DONE]\n\n"
        finally:
            scheduler.cancel(job)

    async def chat_completions(request: Request) -> Any:
        return await completion(request, chat=True)

    async def completions(request: Request) -> Any:
        return await completion(request, chat=False)

    def model_card() -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": created, "owned_by": "tinyllm",
                "context_length": max_seq_len}

    async def list_models(request: Request) -> JSONResponse:
        check_key(request)
        return JSONResponse({"object": "list", "data": [model_card()]})

    async def get_model(request: Request) -> JSONResponse:
        check_key(request)
        if request.path_params["name"] != model_id:
            raise APIError(404, f"the model {request.path_params['name']!r} does not exist; this server serves "
                                f"{model_id!r}", "model", "model_not_found")
        return JSONResponse(model_card())

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": model_id, "context_length": max_seq_len, **scheduler.stats()})

    async def page(request: Request) -> HTMLResponse:
        html = resources.files("tinyllm.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = {404: f"no such endpoint: {request.method} {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(error.status_code, error.detail)
        return JSONResponse(APIError(error.status_code, message).body(), status_code=error.status_code)

    routes = [
        Route("/", page),
        Route("/health", health),
        Route("/v1/models", list_models),
        Route("/v1/models/{name:path}", get_model),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={APIError: api_error, HTTPException: http_error})
    app.state.scheduler = scheduler
    return app
