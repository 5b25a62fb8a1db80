"""The continuous-batching scheduler in-process (no HTTP): a request that joins while another decodes, requests
finishing at different steps, max_tokens=1, cancelling, and a model error that fails the requests in flight."""

from __future__ import annotations

import threading

import numpy as np

from tinyllm.models import ModelConfig, Transformer
from tinyllm.sampling import generate
from tinyllm.serve.scheduler import GenerationRequest, Scheduler, wait_idle


def sharp_model() -> Transformer:
    model = Transformer(ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64))
    for p in model.parameters():
        if p.ndim == 2:
            p.data *= 8.0  # far from uniform: no near-ties between greedy choices
    return model


class Collector:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.end: tuple[str, object] | None = None
        self.done = threading.Event()

    def __call__(self, event: tuple[str, object]) -> None:
        if event[0] == "token":
            self.tokens.append(event[1])
        else:
            self.end = event
            self.done.set()


def test_a_request_joins_while_another_decodes_and_both_equal_generate_alone() -> None:
    model = sharp_model()
    scheduler = Scheduler(model, max_batch=4)
    scheduler.start()
    try:
        late = Collector()
        late_request = GenerationRequest([7, 8, 9], 12, emit=late, temperature=0)

        class FirstThenJoin(Collector):
            def __call__(self, event: tuple[str, object]) -> None:
                super().__call__(event)
                if len(self.tokens) == 5:  # mid-way through the first request, on the scheduler's thread
                    scheduler.submit(late_request)

        first = FirstThenJoin()
        scheduler.submit(GenerationRequest([1, 2, 3, 4, 5], 20, emit=first, temperature=0))
        assert first.done.wait(30) and late.done.wait(30)
        assert first.tokens == list(generate(model, [1, 2, 3, 4, 5], 20, temperature=0))
        assert late.tokens == list(generate(model, [7, 8, 9], 12, temperature=0))
        assert first.end == ("done", "length") and late.end == ("done", "length")
        assert scheduler.rows_decoded > scheduler.steps  # some steps carried both
        assert wait_idle(scheduler) and scheduler.stats()["cache_rows_in_use"] == 0
    finally:
        scheduler.stop()


def test_stop_ids_one_token_cancel_and_seeds() -> None:
    model = sharp_model()
    greedy = list(generate(model, [3, 1, 4], 10, temperature=0))
    scheduler = Scheduler(model, max_batch=2)
    scheduler.start()
    try:
        stopped, single, sampled, cancelled = Collector(), Collector(), Collector(), Collector()
        scheduler.submit(GenerationRequest([3, 1, 4], 10, emit=stopped, temperature=0, stop_ids=frozenset([greedy[3]])))
        scheduler.submit(GenerationRequest([3, 1, 4], 1, emit=single, temperature=0))
        scheduler.submit(GenerationRequest([2, 7], 8, emit=sampled, temperature=1.0, seed=5))
        waiting = GenerationRequest([5], 30, emit=cancelled)
        scheduler.submit(waiting)
        scheduler.cancel(waiting)
        for c in (stopped, single, sampled):
            assert c.done.wait(30)
        assert stopped.tokens == greedy[: greedy.index(greedy[3])] and stopped.end == ("done", "stop")  # eos not sent
        assert single.tokens == greedy[:1] and single.end == ("done", "length")
        assert sampled.tokens == list(generate(model, [2, 7], 8, temperature=1.0, seed=5))
        assert wait_idle(scheduler)
        assert len(cancelled.tokens) < 30 and cancelled.end is None  # dropped: no "done" event, its row freed
    finally:
        scheduler.stop()


def test_a_model_error_fails_the_requests_in_flight_and_the_scheduler_goes_on() -> None:
    model = sharp_model()
    scheduler = Scheduler(model, max_batch=2)
    scheduler.start()
    try:
        bad, good = Collector(), Collector()
        scheduler.submit(GenerationRequest([999], 5, emit=bad))  # out of the vocabulary: the model raises
        assert bad.done.wait(30) and bad.end[0] == "error" and "IndexError" in bad.end[1]
        scheduler.submit(GenerationRequest([1, 2], 4, emit=good, temperature=0))
        assert good.done.wait(30) and good.tokens == list(generate(model, [1, 2], 4, temperature=0))
        assert np.all(scheduler.cache.lengths == 0)
    finally:
        scheduler.stop()


def test_wait_idle_waits_for_a_prefill_in_progress() -> None:
    """While a request's prefill runs it is in neither the waiting queue nor the active rows: still not idle."""
    model = sharp_model()
    started, release = threading.Event(), threading.Event()
    plain_forward = model.forward

    def slow_prefill(idx, *args, **kwargs):  # a long prompt's prefill, held until the test lets it go
        if idx.shape[1] > 1:
            started.set()
            release.wait(30)
        return plain_forward(idx, *args, **kwargs)

    model.forward = slow_prefill
    scheduler = Scheduler(model, max_batch=2)
    scheduler.start()
    try:
        done = Collector()
        scheduler.submit(GenerationRequest([1, 2, 3], 3, emit=done, temperature=0))
        assert started.wait(30)
        assert not scheduler.waiting and not scheduler.active and scheduler.admitting is not None
        assert not wait_idle(scheduler, timeout=0.2)
        release.set()
        assert wait_idle(scheduler, timeout=30) and done.done.is_set() and len(done.tokens) == 3
    finally:
        release.set()
        scheduler.stop()
