"""examples/finetune.py run as a user would (a subprocess), on the tiny Hugging Face directory fixture."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import FIXTURES, REPO_ROOT, child_pythonpath

SCRIPT = REPO_ROOT / "examples" / "finetune.py"
GENERATE = REPO_ROOT / "examples" / "generate.py"
MODEL = FIXTURES / "reference" / "hf_llama_dir"


def run(script, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    env = {**os.environ, "PYTHONPATH": child_pythonpath()}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300, env=env)


def test_lora_run_saves_an_adapter_that_generate_uses_and_resumes(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("ROMEO: But soft, what light through yonder window breaks?\n" * 40)
    common = ("--model", str(MODEL), "--data", str(text), "--block-size", "16", "--batch-size", "2", "--eval-iters", "2",
              "--eval-interval", "3", "--out-dir", str(tmp_path / "run"), "--no-progress", "--lr", "1e-2")
    result = run(SCRIPT, *common, "--max-steps", "6", "--save-adapter", str(tmp_path / "adapter"),
                 "--save-merged", str(tmp_path / "merged"), "--sample-tokens", "4", "--lora-targets", "wq,v_proj,w_up")
    assert result.returncode == 0, result.stderr
    assert "LoRA:" in result.stdout and "val loss (nats per token): before" in result.stdout
    assert "--- sample" in result.stdout
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["q_proj", "up_proj", "v_proj"]
    assert (tmp_path / "run" / "log.jsonl").exists() and (tmp_path / "run" / "last" / "trainer_state.json").exists()

    # the adapter on the base and the merged model generate the same greedy text
    prompt = ("--prompt", "ROMEO:", "--temperature", "0", "--max-new-tokens", "8")
    with_lora = run(GENERATE, "--model", str(MODEL), "--lora", str(tmp_path / "adapter"), *prompt)
    merged = run(GENERATE, "--model", str(tmp_path / "merged"), *prompt)
    assert with_lora.returncode == 0 and merged.returncode == 0, with_lora.stderr + merged.stderr
    assert with_lora.stdout == merged.stdout

    resumed = run(SCRIPT, *common, "--max-steps", "9", "--resume", "--sample-tokens", "0")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout and "at step 6" in resumed.stdout
    assert json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())["state"]["step"] == 9


def test_bad_input_is_named(tmp_path):
    result = run(SCRIPT, "--model", str(MODEL), "--lora-targets", "qkv", "--out-dir", str(tmp_path), "--block-size", "16")
    assert result.returncode != 0 and "not found in the model; valid: wq (q_proj)" in result.stderr
    result = run(SCRIPT, "--model", str(MODEL), "--full", "--quantize", "q4")
    assert result.returncode != 0 and "--full trains every weight" in result.stderr
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}))
    result = run(SCRIPT, "--model", str(MODEL), "--data", str(chat), "--out-dir", str(tmp_path), "--block-size", "16")
    assert result.returncode != 0 and "valid roles: system, user, assistant" in result.stderr


def test_full_run_resumes(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("ROMEO: But soft, what light through yonder window breaks?\n" * 40)
    common = ("--model", str(MODEL), "--data", str(text), "--block-size", "16", "--batch-size", "2", "--eval-iters", "1",
              "--eval-interval", "2", "--out-dir", str(tmp_path / "run"), "--no-progress", "--sample-tokens", "0",
              "--full")
    first = run(SCRIPT, *common, "--max-steps", "2")
    assert first.returncode == 0 and "full fine-tuning" in first.stdout, first.stderr
    resumed = run(SCRIPT, *common, "--max-steps", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "at step 2" in resumed.stdout and "step 4: val loss" in resumed.stdout


def test_a_new_run_over_a_finetuning_run_is_refused_before_loading_anything(tmp_path):
    (tmp_path / "run" / "last").mkdir(parents=True)
    result = run(SCRIPT, "--model", str(MODEL), "--out-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "--resume" in result.stderr and "--overwrite" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "[loaded" not in result.stdout
