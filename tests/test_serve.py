"""The OpenAI-compatible server, live on 127.0.0.1: the official openai client (chat, streaming, stop strings,
seeds, errors), continuous batching that changes no output, load without leaked cache, and a killed client."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from serve_fixtures import API_KEY, MODEL_ID, Server, server, start_server, stop_server, tiny_checkpoint  # noqa: F401

PROMPTS = ["Hello there", "Tell me a story about a cat", "1 2 3", "What is the capital of France? Answer shortly."]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:  # noqa: F811
    return openai.OpenAI(base_url=server.api, api_key=API_KEY, max_retries=0, timeout=60)


def chat(client: openai.OpenAI, text: str, **kwargs) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": text}], **kwargs)


def streamed(client: openai.OpenAI, text: str, **kwargs) -> tuple[list[str], str | None]:
    """The content pieces of a streamed chat reply, and its finish_reason."""
    pieces, finish = [], None
    for chunk in chat(client, text, stream=True, **kwargs):
        assert chunk.object == "chat.completion.chunk" and chunk.model == MODEL_ID
        choice = chunk.choices[0]
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
    return pieces, finish


def test_models_and_health(client: openai.OpenAI, server: Server) -> None:  # noqa: F811
    assert [m.id for m in client.models.list().data] == [MODEL_ID]
    health = server.health()
    assert health["status"] == "ok" and health["context_length"] == 2048 and health["max_batch"] == 4


def test_chat_completion_with_usage_and_finish_reason(client: openai.OpenAI) -> None:
    reply = chat(client, "Hello!", max_tokens=12, temperature=0)
    assert reply.object == "chat.completion" and reply.model == MODEL_ID
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason == "length"  # the test tokenizer has no eos: the reply runs to max_tokens
    assert reply.usage.completion_tokens == 12 and reply.usage.prompt_tokens > 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_gives_the_same_text_and_ends_with_done(client: openai.OpenAI, server: Server) -> None:  # noqa: F811
    whole = chat(client, PROMPTS[1], max_tokens=15, temperature=0).choices[0].message.content
    pieces, finish = streamed(client, PROMPTS[1], max_tokens=15, temperature=0)
    assert "".join(pieces) == whole and finish == "length" and len(pieces) > 3
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": True,
            "stream_options": {"include_usage": True}}
    response = httpx.post(server.api + "/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    assert '"completion_tokens": 3' in events[-2]  # the usage chunk, before [DONE]


def test_completions_endpoint(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=7, temperature=0)
    assert reply.object == "text_completion" and reply.usage.completion_tokens == 7
    pieces = [c.choices[0].text for c in client.completions.create(
        model=MODEL_ID, prompt="Once upon a time", max_tokens=7, temperature=0, stream=True)]
    assert "".join(pieces) == reply.choices[0].text


def test_stop_strings_match_across_token_boundaries(client: openai.OpenAI) -> None:
    pieces, _ = streamed(client, PROMPTS[0], max_tokens=30, temperature=0)
    full = "".join(pieces)
    # A stop string made of the end of one token's text and the start of the next.
    i = next(i for i in range(3, len(pieces) - 1) if pieces[i].strip() and pieces[i + 1].strip())
    stop = pieces[i][-1] + pieces[i + 1][:2]
    expected = full[: full.index(stop)]
    reply = chat(client, PROMPTS[0], max_tokens=30, temperature=0, stop=[stop, "never appears"])
    assert reply.choices[0].message.content == expected and reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens < 30
    pieces_stopped, finish = streamed(client, PROMPTS[0], max_tokens=30, temperature=0, stop=stop)
    assert "".join(pieces_stopped) == expected and finish == "stop"


def test_seeds_reproduce(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        return chat(client, "Hello", max_tokens=20, temperature=1.0, top_p=0.95, seed=seed).choices[0].message.content

    first = sample(1234)
    assert sample(1234) == first
    assert len({first, sample(1), sample(2), sample(3)}) > 1  # other seeds give other samples


def test_errors_map_to_the_clients_exception_types(client: openai.OpenAI, server: Server) -> None:  # noqa: F811
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.api, api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="max_tokens=5000 does not fit"):
        chat(client, "hi", max_tokens=5000)
    with pytest.raises(openai.BadRequestError, match="context is 2048 tokens"):
        client.completions.create(model=MODEL_ID, prompt=[5] * 2048, max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="temperature must be a number"):
        chat(client, "hi", extra_body={"temperature": "hot"})
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "wizard", "content": "hi"}])


def test_raw_http_errors_are_openai_json(server: Server) -> None:  # noqa: F811
    auth = {"Authorization": f"Bearer {API_KEY}"}
    url = server.api + "/chat/completions"
    cases = [
        (httpx.post(url, content=b"{not json", headers=auth), 400, "invalid_request_error"),
        (httpx.post(url, json={"messages": "hi"}, headers=auth), 400, "invalid_request_error"),
        (httpx.post(url, json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}, headers=auth),
         400, "invalid_request_error"),
        (httpx.post(url, json={"messages": [{"role": "user", "content": "hi"}]}), 401, "authentication_error"),
        (httpx.post(url, content=b"x" * (2 << 20), headers=auth), 413, "invalid_request_error"),
        (httpx.get(server.api + "/nothing", headers=auth), 404, "not_found_error"),
    ]
    for response, status, kind in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["type"] == kind and error["message"]
    assert server.health()["status"] == "ok"  # none of it hurt the server


def run_alone_and_together(client: openai.OpenAI, server: Server, stream: bool) -> None:  # noqa: F811
    lengths = [45, 10, 18, 60]  # each request ends on its own
    alone = [chat(client, p, max_tokens=n, temperature=0).choices[0].message.content for p, n in zip(PROMPTS, lengths)]
    before = server.health()
    # The four threads start one after another; a barrier sends the requests together, so that how far
    # apart they arrive does not depend on thread start-up (a step of the test model is a few ms).
    start = threading.Barrier(4, timeout=60)

    def one(p: str, n: int) -> str:
        start.wait()
        if stream:
            return "".join(streamed(client, p, max_tokens=n, temperature=0)[0])
        return chat(client, p, max_tokens=n, temperature=0).choices[0].message.content

    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(one, PROMPTS, lengths))
    after = server.health()
    assert together == alone
    # Decoded together: run one after another, no decode step would carry two requests. How many
    # do depends on how staggered the four arrive (a busy machine staggers them, and the faster a step,
    # the more steps a few milliseconds of stagger are), so count them: the two longest replies alone
    # overlap for 10 steps or more unless they arrive 35 steps apart or are run in turn.
    shared = after["shared_decode_steps"] - before["shared_decode_steps"]
    assert shared >= 10, f"only {shared} decode steps carried more than one of the concurrent requests"


def test_batching_is_invisible(client: openai.OpenAI, server: Server) -> None:  # noqa: F811
    """Greedy replies of 4 concurrent requests (decoded as one batch) equal the same requests run alone."""
    run_alone_and_together(client, server, stream=False)
    run_alone_and_together(client, server, stream=True)


def test_load_8_clients_10_requests_leaks_no_cache(server: Server) -> None:  # noqa: F811
    def one_client(k: int) -> list[str]:
        c = openai.OpenAI(base_url=server.api, api_key=API_KEY, max_retries=0, timeout=120)
        out = []
        for j in range(10):
            kwargs = dict(max_tokens=4 + (k + j) % 7, temperature=0.8, seed=k * 10 + j)
            if j % 2:
                out.append("".join(streamed(c, f"client {k} request {j}", **kwargs)[0]))
            else:
                out.append(chat(c, f"client {k} request {j}", **kwargs).choices[0].message.content)
        return out

    one_client(99)  # warm up, then measure
    rss_before = server.rss_bytes()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one_client, range(8)))
    assert all(len(r) == 10 for r in results)
    time.sleep(0.2)
    health = server.health()
    assert health["active"] == 0 and health["waiting"] == 0
    assert health["cache_rows_in_use"] == 0 and health["cache_positions_in_use"] == 0
    assert server.rss_bytes() - rss_before < 40 * 2**20


KILLED_CLIENT = """
import sys, httpx
body = {"model": sys.argv[2], "prompt": "a long story", "max_tokens": 2000, "stream": True, "temperature": 0}
with httpx.stream("POST", sys.argv[1] + "/completions", json=body, headers={"Authorization": "Bearer " + sys.argv[3]},
                  timeout=60) as response:
    for n, line in enumerate(response.iter_lines()):
        if n == 6:
            print("streaming", flush=True)
"""


def test_a_client_killed_mid_stream_frees_its_slot_and_stalls_no_one(client: openai.OpenAI, server: Server) -> None:  # noqa: F811
    killed = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, server.api, MODEL_ID, API_KEY],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert killed.stdout.readline().strip() == "streaming"
        assert server.health()["active"] >= 1
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
        start = time.monotonic()
        reply = chat(client, "Are you still there?", max_tokens=10, temperature=0)
        assert reply.usage.completion_tokens == 10 and time.monotonic() - start < 20
        deadline = time.monotonic() + 10
        while server.health()["cache_rows_in_use"] and time.monotonic() < deadline:
            time.sleep(0.05)
        health = server.health()
        assert health["active"] == 0 and health["cache_rows_in_use"] == 0, health
    finally:
        killed.kill()


def test_a_full_queue_answers_429(tiny_checkpoint) -> None:  # noqa: F811
    small = start_server(tiny_checkpoint, "--max-batch", "1", "--max-queue", "1")
    try:
        c = openai.OpenAI(base_url=small.api, api_key="none", max_retries=0, timeout=120)

        def request(_: int) -> str:
            try:
                chat(c, "Hello", max_tokens=400, temperature=0)
                return "ok"
            except openai.RateLimitError:
                return "429"

        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(request, range(6)))
        assert "429" in outcomes and "ok" in outcomes, outcomes
        assert small.health()["cache_rows_in_use"] == 0
    finally:
        stop_server(small)
