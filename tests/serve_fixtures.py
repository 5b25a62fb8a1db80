"""A live tinyllm server on 127.0.0.1 for the serving tests: a tiny random-weight model with a real chat
tokenizer (the SmolLM2-style fixture, 512 tokens), saved as a checkpoint and served by ``python -m tinyllm.serve``
in a subprocess on a free port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import FIXTURES, child_pythonpath

API_KEY = "test-key"
MODEL_ID = "tiny-chat"


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen
    tokenizer_path: Path

    @property
    def api(self) -> str:
        return self.url + "/v1"

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()

    def rss_bytes(self) -> int:
        """The server process's resident memory (Linux /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")


def make_tiny_checkpoint(directory: Path) -> Path:
    """A 2-layer GQA model over the 512-token chat tokenizer, weights scaled up so greedy choices have no near-ties.

    The tokenizer is saved without an eos id, so a reply always runs to max_tokens (or a stop string): lengths in the
    tests are exact, whatever the random weights say.
    """
    import tinyllm as tl
    from tinyllm.checkpoint import save_checkpoint
    from tinyllm.models import ModelConfig, Transformer
    from tinyllm.tokenizer import load_tokenizer

    tl.set_backend("numpy", seed=0)
    tokenizer = load_tokenizer(FIXTURES / "tokenizer" / "hf_smollm")
    tokenizer_path = directory / "tokenizer.json"
    tokenizer.save(tokenizer_path)
    data = json.loads(tokenizer_path.read_text())
    data["eos_id"] = None
    tokenizer_path.write_text(json.dumps(data))
    config = ModelConfig(vocab_size=tokenizer.vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=2048)
    model = Transformer(config)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        if p.ndim == 2:
            p.data[...] = rng.standard_normal(p.shape).astype(np.float32) * 0.15
    save_checkpoint(directory / "model", model, tokenizer_path=tokenizer_path)
    return directory / "model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, *extra: str) -> Server:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": child_pythonpath(), "OPENBLAS_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tinyllm.serve", "--checkpoint", str(checkpoint), "--port", str(port),
               "--model-name", MODEL_ID, *extra]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = Server(f"http://127.0.0.1:{port}", process, checkpoint.parent / "tokenizer.json")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            if server.health()["status"] == "ok":
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not answer /health within 90 s")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path) -> Iterator[Server]:
    """The server the tests share: API key required, 4 requests per step."""
    running = start_server(tiny_checkpoint, "--api-key", API_KEY, "--max-batch", "4")
    yield running
    stop_server(running)
