"""Issue 18: the examples as a user runs them (subprocesses, tiny settings): never lose a run, one-line errors.

Each run trains for a handful of steps on a few kilobytes of text, so the file takes seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, child_pythonpath, cupy_skip_reason

from tinyllm.checkpoint import load_checkpoint, save_checkpoint
from tinyllm.models import ModelConfig, Transformer
from tinyllm.plot import main as plot_main
from tinyllm.tokenizer import BPETokenizer

TRAIN = REPO_ROOT / "examples" / "train_shakespeare.py"
GENERATE = REPO_ROOT / "examples" / "generate.py"
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 120
OTHER_TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer.\n\n" * 120
# The tiny preset made tinier: a run is a few steps of 2 x 16 tokens.
TINY = ("--preset", "tiny", "--vocab-size", "280", "--block-size", "16", "--batch-size", "2", "--max-steps", "4",
        "--eval-interval", "2", "--eval-iters", "1", "--log-interval", "2", "--no-progress", "--sample-tokens", "0")


def run(script: Path, *args: str, cwd: Path = REPO_ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": child_pythonpath(), **(env or {})}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=env, stdin=subprocess.DEVNULL)


def assert_one_line_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert sum(line.startswith("error: ") for line in lines) == 1
    for phrase in phrases:
        assert phrase in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("texts")
    (directory / "a.txt").write_text(TEXT, encoding="utf-8")
    (directory / "b.txt").write_text(OTHER_TEXT, encoding="utf-8")
    return directory / "a.txt", directory / "b.txt"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, texts) -> Path:
    """One tiny run of train_shakespeare.py on text a, 4 steps; tests copy it before changing it."""
    out = tmp_path_factory.mktemp("run") / "out"
    result = run(TRAIN, *TINY, "--data", str(texts[0]), "--out-dir", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def run_dir(finished_run, tmp_path) -> Path:
    shutil.copytree(finished_run, tmp_path / "out")
    return tmp_path / "out"


def manifest_bytes(out: Path) -> dict[str, bytes]:
    return {name: (out / name / "checkpoint.json").read_bytes() for name in ("last", "best")}


# -- item 1: a second run never replaces the first silently ------------------------------------------------


def test_a_new_run_over_a_run_is_refused_before_any_work_until_resume_or_overwrite(run_dir, texts):
    before, log = manifest_bytes(run_dir), (run_dir / "log.jsonl").read_bytes()
    cache = sorted(p.name for p in (run_dir / "cache").iterdir())
    again = run(TRAIN, *TINY, "--vocab-size", "290", "--data", str(texts[0]), "--out-dir", str(run_dir))
    assert again.returncode == 2
    assert_one_line_error(again, "already holds a run", "--resume", "--overwrite")
    assert manifest_bytes(run_dir) == before and (run_dir / "log.jsonl").read_bytes() == log
    assert sorted(p.name for p in (run_dir / "cache").iterdir()) == cache  # no tokenizer was trained for 290

    both = run(TRAIN, *TINY, "--resume", "--overwrite", "--out-dir", str(run_dir))
    assert_one_line_error(both, "choose one")

    fresh = run(TRAIN, *TINY, "--max-steps", "2", "--data", str(texts[0]), "--out-dir", str(run_dir), "--overwrite")
    assert fresh.returncode == 0, fresh.stderr
    assert load_checkpoint(run_dir / "last").train_state["step"] == 2  # a new run of 2 steps replaced the old 4


# -- item 2: resuming on other data needs --new-data ---------------------------------------------------------


def test_resuming_on_another_text_is_refused_unless_new_data(run_dir, texts):
    assert load_checkpoint(run_dir / "last").train_state["text_sha256"]  # the manifest records the text's hash
    before = manifest_bytes(run_dir)
    other = run(TRAIN, "--resume", "--max-steps", "6", "--no-progress", "--sample-tokens", "0", "--data", str(texts[1]),
                "--out-dir", str(run_dir))
    assert other.returncode == 2
    assert_one_line_error(other, "was trained on a text with SHA-256", "--new-data")
    assert manifest_bytes(run_dir) == before

    allowed = run(TRAIN, "--resume", "--new-data", "--max-steps", "6", "--no-progress", "--sample-tokens", "0",
                  "--data", str(texts[1]), "--out-dir", str(run_dir))
    assert allowed.returncode == 0, allowed.stderr
    assert "resuming at step 4" in allowed.stdout and "done: step 6" in allowed.stdout


def test_a_checkpoint_without_the_text_hash_still_resumes_with_a_warning(run_dir, texts):
    path = run_dir / "last" / "checkpoint.json"
    manifest = json.loads(path.read_text())
    del manifest["train_state"]["text_sha256"]  # as an older tinyllm saved it
    path.write_text(json.dumps(manifest))
    result = run(TRAIN, "--resume", "--max-steps", "6", "--no-progress", "--sample-tokens", "0", "--data",
                 str(texts[1]), "--out-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "does not record the hash of the text" in result.stderr and "done: step 6" in result.stdout


# -- item 8: a damaged last/ with an intact best/ says how to resume from best/ ------------------------------


def test_a_damaged_last_checkpoint_points_to_resume_best(run_dir, texts):
    model_file = next((run_dir / "last").glob("model-*.safetensors"))
    model_file.write_bytes(model_file.read_bytes()[:-10])
    step = load_checkpoint(run_dir / "best").train_state["step"]
    result = run(TRAIN, "--resume", "--no-progress", "--sample-tokens", "0", "--data", str(texts[0]),
                 "--out-dir", str(run_dir))
    assert result.returncode == 1
    assert_one_line_error(result, "is damaged", f"is intact (step {step}): continue from it with --resume best")
    from_best = run(TRAIN, "--resume", "best", "--max-steps", "6", "--no-progress", "--sample-tokens", "0",
                    "--data", str(texts[0]), "--out-dir", str(run_dir))
    assert from_best.returncode == 0, from_best.stderr
    assert f"resuming at step {step}" in from_best.stdout
    assert load_checkpoint(run_dir / "last").train_state["step"] == 6  # last/ is whole again


# -- item 7: user errors are one line, found before any slow work --------------------------------------------


@pytest.mark.parametrize(("flags", "phrase"), [
    (("--dim", "30"), "head_dim must be even"),
    (("--dim", "30", "--n-heads", "4"), "dim=30 is not divisible by n_heads=4"),
    (("--vocab-size", "100"), "--vocab-size 100: the BPE vocabulary needs at least 257"),
    (("--lr", "nan"), "lr must be a finite number"),
    (("--grad-clip", "nan"), "grad_clip must be a finite number"),
    (("--max-steps", "0"), "max_steps must be a positive integer"),
    (("--data", "no/such/file.txt"), "--data no/such/file.txt does not exist"),
    (("--new-data",), "--new-data only applies with --resume"),
])
def test_bad_training_flags_are_one_line_and_leave_no_cache(tmp_path, texts, flags, phrase):
    data = () if "--data" in flags else ("--data", str(texts[0]))
    result = run(TRAIN, *TINY, *data, "--out-dir", str(tmp_path / "out"), *flags)
    assert result.returncode == 2
    assert_one_line_error(result, phrase)
    assert not (tmp_path / "out").exists()  # no cache/, no checkpoint


def test_debug_shows_the_traceback(tmp_path):
    result = run(TRAIN, *TINY, "--data", str(tmp_path / "missing.txt"), "--out-dir", str(tmp_path / "out"), "--debug")
    assert result.returncode == 2 and "Traceback" in result.stderr and "UsageError" in result.stderr


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    """A tinyllm checkpoint of context 16 with its tokenizer, made in-process (no training needed)."""
    directory = tmp_path_factory.mktemp("checkpoint")
    tokenizer_path = directory / "tokenizer.json"
    BPETokenizer.train(TEXT, 280).save(tokenizer_path)
    model = Transformer(ModelConfig(vocab_size=280, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, max_seq_len=16))
    save_checkpoint(directory / "best", model, train_state={"step": 0}, tokenizer_path=tokenizer_path)
    return directory / "best"


@pytest.mark.parametrize(("flags", "phrase"), [
    (("--temperature", "nan"), "--temperature nan: must be a finite number >= 0"),
    (("--temperature", "-1"), "--temperature -1.0: must be a finite number >= 0"),
    (("--top-p", "1.5"), "--top-p 1.5: must be in (0, 1]"),
    (("--top-k", "0"), "--top-k 0: must be 1 or more"),
    (("--max-new-tokens", "-3"), "--max-new-tokens -3: must be 0 or more"),
    (("--max-seq-len", "0"), "--max-seq-len 0: must be 1 or more"),
    (("--model", "no/such/model"), "--model no/such/model does not exist"),
    (("--temperature", "warm"), "invalid float value: 'warm'"),
])
def test_bad_sampling_flags_are_one_line(checkpoint_dir, flags, phrase):
    result = run(GENERATE, "--model", str(checkpoint_dir), *flags)
    assert result.returncode == 2
    assert_one_line_error(result, phrase)
    assert "[loaded" not in result.stderr  # refused before loading the model


def test_wrong_models_are_one_line(checkpoint_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run(GENERATE, "--model", str(empty)), "no checkpoint.json", "no config.json")
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint_dir, broken)
    (broken / "checkpoint.json").unlink()
    assert_one_line_error(run(GENERATE, "--model", str(broken)), "tinyllm checkpoint without its checkpoint.json")
    manifest = json.loads((checkpoint_dir / "checkpoint.json").read_text())
    del manifest["files"]
    (tmp_path / "no_files").mkdir()
    (tmp_path / "no_files" / "checkpoint.json").write_text(json.dumps(manifest))
    assert_one_line_error(run(GENERATE, "--model", str(tmp_path / "no_files")), 'no "files" object')
    assert_one_line_error(run(GENERATE, "--model", str(checkpoint_dir), "--chat"), "has no chat template")
    assert_one_line_error(run(GENERATE, "--model", str(checkpoint_dir), "--max-seq-len", "99"),
                          "--max-seq-len 99 is longer than the model's context, 16 tokens")


def test_cupy_without_cupy_is_one_line(checkpoint_dir):
    if cupy_skip_reason() is None:
        pytest.skip("CuPy works here")
    result = run(GENERATE, "--model", str(checkpoint_dir), "--backend", "cupy")
    assert_one_line_error(result, "pip install")


# -- item 5: --max-seq-len is honoured for tinyllm checkpoints -----------------------------------------------


def test_max_seq_len_shortens_a_checkpoints_context(checkpoint_dir):
    args = ("--model", str(checkpoint_dir), "--prompt", "ROMEO:", "--max-new-tokens", "50", "--temperature", "0")
    full, short = run(GENERATE, *args), run(GENERATE, *args, "--max-seq-len", "9")
    assert full.returncode == 0 and short.returncode == 0, short.stderr
    n_prompt = int(re.search(r"prefill (\d+) prompt tokens", short.stderr).group(1))
    assert f"[{16 - n_prompt} tokens in" in full.stderr  # up to the model's own context of 16
    assert f"[{9 - n_prompt} tokens in" in short.stderr  # up to --max-seq-len


# -- items 10, 11: the README's first run: the text's place, offline, the plot -------------------------------


def test_readme_and_help_say_where_the_text_goes():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start")[1].split("\n## ")[0]
    assert "data/tinyshakespeare.txt" in quick_start and "--data" in quick_start and "offline" in quick_start.lower()
    help_text = run(TRAIN, "--help").stdout
    assert "data/tinyshakespeare.txt" in help_text and "any UTF-8 text" in help_text
    assert "shared" not in help_text  # no path of our own development setup


def test_the_first_run_works_offline_with_the_text_where_the_readme_says(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tinyshakespeare.txt").write_text(TEXT, encoding="utf-8")
    offline = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    result = run(TRAIN, *TINY, cwd=tmp_path, env=offline)  # no --data: the README's command
    assert result.returncode == 0, result.stderr
    assert "data: data/tinyshakespeare.txt ->" in result.stdout and "downloading" not in result.stdout
    assert (tmp_path / "out" / "shakespeare" / "best" / "checkpoint.json").exists()


def test_the_readme_install_draws_the_plot():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    first_command = readme.split("## Quick start")[1].split("```bash\n")[1].splitlines()[0]
    extras = re.search(r'pip install -e "\.\[([a-z,]+)\]"', first_command)
    assert extras, first_command
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()  # (tomllib is Python 3.11+; tinyllm supports 3.10)
    for extra in extras.group(1).split(","):
        listed = re.search(rf"^{extra} = \[(.*)\]$", pyproject, flags=re.MULTILINE)
        if listed and '"matplotlib' in listed.group(1):
            return
    pytest.fail(f"the quick start's extras [{extras.group(1)}] do not install matplotlib")


def test_any_finished_runs_log_can_be_plotted(finished_run, tmp_path, capsys):
    output = tmp_path / "curve.png"
    assert plot_main([str(finished_run / "log.jsonl"), "-o", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copy(finished_run / "log.jsonl", tmp_path / "log.jsonl")
    assert plot_main([str(tmp_path)]) == 0 and (tmp_path / "loss.png").exists()  # a run directory: loss.png beside
    assert plot_main([str(tmp_path / "nothing")]) == 1
    assert "does not exist" in capsys.readouterr().err


# -- item 12: the Ctrl-C hint repeats the command as it was run ----------------------------------------------


def load_example(name: str):  # noqa: ANN201
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_resume_hint_keeps_every_flag_and_adds_resume():
    hint = load_example("train_shakespeare").resume_hint
    assert hint(["--data", "my text.txt", "--lr", "0.01"]).endswith("--data 'my text.txt' --lr 0.01 --resume")
    assert hint(["--overwrite", "--data", "a.txt"]).endswith(" --data a.txt --resume")  # --overwrite would restart
    assert "best" not in hint(["--resume", "best", "--data", "a.txt"])  # last/ is the newer one after a resume
    assert hint(["--resume", "--data", "a.txt"]).count("--resume") == 1


def test_ctrl_c_prints_the_command_as_run_plus_resume(tmp_path, texts):
    out = tmp_path / "out"
    args = [*TINY, "--max-steps", "100000", "--data", str(texts[0]), "--out-dir", str(out)]
    env = {**os.environ, "PYTHONPATH": child_pythonpath(), "PYTHONUNBUFFERED": "1"}
    # A shell that starts pytest in the background (CI's may) makes SIGINT ignored, and the child
    # would inherit that: give it the default disposition, as a terminal's foreground job has.
    process = subprocess.Popen([sys.executable, str(TRAIN), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=REPO_ROOT,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in process.stdout:  # wait until training has started and saved step 0
            if line.startswith("step 0:"):
                break
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    hint = stderr.strip().splitlines()[-1]
    assert "Continue from the last checkpoint with: python " in hint
    assert hint.endswith(" ".join([*TINY, "--max-steps", "100000", "--data", str(texts[0]), "--out-dir", str(out),
                                   "--resume"]))
