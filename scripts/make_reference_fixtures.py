"""Make the small PyTorch / Hugging Face reference fixtures that tinyllm's tests compare against.

tinyllm must not need PyTorch or transformers at test time (see shared/STYLE.md: "make fixtures with
the reference once, by a script in the repo, and commit them"). This script is that "once". It writes
into ``tests/fixtures/reference/``:

    llama_gqa/       tiny random LlamaForCausalLM (GQA, untied lm_head): config, weights,
                     inputs, logits, loss, per-layer hidden states and the gradient of every parameter
    qwen3/           the same for a tiny random Qwen3ForCausalLM (QK-norm, explicit head_dim, tied)
    adamw.safetensors + adamw.json
                     10-step torch.optim.AdamW trajectories in float64 (one group / two groups)
    hf_llama_dir/    a complete tiny Hugging Face model directory (save_pretrained + a trained byte-level
                     BPE tokenizer.json) and the logits it gives for one tokenized sentence

Everything is deterministic (fixed seeds, CPU, float32 models / float64 AdamW). Run it with the separate
reference environment (torch, transformers, tokenizers, safetensors; not tinyllm's own venv)::

    /work/refenv/bin/python scripts/make_reference_fixtures.py

The layout of every file is documented in ``tests/fixtures/README.md``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "reference"

torch.set_num_threads(2)  # the machine is shared: never more than 2 threads

BATCH, SEQ = 2, 12  # shape of the input_ids fed to the tiny models


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def init_weights(model: torch.nn.Module, seed: int, std: float = 0.1) -> None:
    """Re-initialise every parameter so that each one visibly matters.

    The Hugging Face default (std 0.02 matrices, norm weights exactly 1) hides bugs: a missing RMSNorm
    weight or a transposed matrix barely moves the logits. Here, matrices ~ N(0, std^2) and every norm
    weight (1-D, ``*norm*``) ~ 1 + std * N(0, 1). Parameters are visited in definition order, so the
    result depends only on ``seed``.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.ndim == 1 and "norm" in name:
                p.copy_(1.0 + std * noise)
            else:
                p.copy_(std * noise)


def random_batch(vocab_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids of length SEQ + 1, split into inputs x = ids[:, :-1] and targets y = ids[:, 1:]."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (BATCH, SEQ + 1), generator=gen, dtype=torch.int64)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


def clean_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def forward_backward_fixture(model: torch.nn.Module, out_dir: Path, data_seed: int) -> dict:
    """Save the model and the reference forward/backward results for one random batch.

    Writes ``config.json`` + ``model.safetensors`` (Hugging Face names, via save_pretrained) and
    ``io.safetensors`` holding input_ids, targets, logits, loss, hidden states and ``grad.<hf name>``
    for every trainable parameter. Returns a summary for printing.
    """
    clean_dir(out_dir)
    model.eval()  # no dropout anywhere (attention_dropout is 0 anyway)
    model.save_pretrained(out_dir)
    gen_cfg = out_dir / "generation_config.json"
    if gen_cfg.exists():  # not needed by a forward-pass fixture; keep the folder minimal
        gen_cfg.unlink()

    x, y = random_batch(model.config.vocab_size, data_seed)

    # Record the residual stream with forward hooks so the semantics are explicit (and do not depend
    # on how a given transformers version fills `output_hidden_states`).
    hidden: dict[str, torch.Tensor] = {}
    hooks = [
        model.model.embed_tokens.register_forward_hook(
            lambda m, i, o: hidden.__setitem__("hidden.embed", o.detach().clone())
        ),
        model.model.norm.register_forward_hook(
            lambda m, i, o: hidden.__setitem__("hidden.final_norm", o.detach().clone())
        ),
    ]
    for li, layer in enumerate(model.model.layers):

        def hook(m, i, o, li=li):
            o = o[0] if isinstance(o, tuple) else o
            hidden[f"hidden.layer{li}"] = o.detach().clone()

        hooks.append(layer.register_forward_hook(hook))

    model.zero_grad(set_to_none=True)
    logits = model(input_ids=x).logits  # (B, T, V), causal mask, positions 0..T-1
    for h in hooks:
        h.remove()
    vocab = logits.shape[-1]
    loss = F.cross_entropy(logits.view(-1, vocab), y.view(-1))  # mean over B*T tokens
    loss.backward()

    tensors = {
        "input_ids": x,
        "targets": y,
        "logits": logits.detach().float(),
        "loss": loss.detach().float().reshape(()),
        **hidden,
    }
    for name, p in model.named_parameters():  # tied weights appear once (as embed_tokens)
        tensors[f"grad.{name}"] = p.grad.detach().float()
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(out_dir / "io.safetensors"), metadata={"format": "pt"})
    return {"loss": loss.item(), "n_arrays": len(tensors)}


# ----------------------------------------------------------------------------------------------------
# 1a. tiny Llama with grouped-query attention
# ----------------------------------------------------------------------------------------------------


def make_llama_gqa() -> None:
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA: 2 query heads share each K/V head
        intermediate_size=64,
        max_position_embeddings=64,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32)
    init_weights(model, seed=1)
    info = forward_backward_fixture(model, OUT / "llama_gqa", data_seed=2)
    print(f"llama_gqa: loss={info['loss']:.6f}, {info['n_arrays']} arrays")


# ----------------------------------------------------------------------------------------------------
# 1b. tiny Qwen3 (QK-norm, explicit head_dim, tied embeddings)
# ----------------------------------------------------------------------------------------------------


def make_qwen3() -> None:
    config = Qwen3Config(
        vocab_size=96,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,  # explicit; 4 heads * 8 = 32 here, but Qwen3 does not derive it from hidden_size
        intermediate_size=64,
        max_position_embeddings=64,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attention_bias=False,
        hidden_act="silu",
        use_sliding_window=False,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config).to(torch.float32)
    init_weights(model, seed=3)  # includes q_norm / k_norm weights (1-D, "norm" in name)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    info = forward_backward_fixture(model, OUT / "qwen3", data_seed=4)
    print(f"qwen3: loss={info['loss']:.6f}, {info['n_arrays']} arrays")


# ----------------------------------------------------------------------------------------------------
# 1c. AdamW trajectory (float64)
# ----------------------------------------------------------------------------------------------------

ADAMW_SHAPES = [(5, 7), (7,), (3, 4, 2)]
ADAMW_STEPS = 10
ADAMW_HPARAMS = {"lr": 1e-2, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}


def run_adamw(init: list[torch.Tensor], grads: list[list[torch.Tensor]], grouped: bool):
    """Run torch.optim.AdamW from `init` using the given gradients; return params after each step
    and the final optimizer state (exp_avg, exp_avg_sq) per parameter."""
    params = [p.clone().requires_grad_(True) for p in init]
    hp = dict(lr=ADAMW_HPARAMS["lr"], betas=tuple(ADAMW_HPARAMS["betas"]), eps=ADAMW_HPARAMS["eps"])
    if grouped:  # nanoGPT style: decay matrices (ndim >= 2) only
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": ADAMW_HPARAMS["weight_decay"]},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, **hp)
    else:
        opt = torch.optim.AdamW(params, weight_decay=ADAMW_HPARAMS["weight_decay"], **hp)
    history = []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
        history.append([p.detach().clone() for p in params])
    state = [(opt.state[p]["exp_avg"].clone(), opt.state[p]["exp_avg_sq"].clone()) for p in params]
    return history, state


def make_adamw() -> None:
    gen = torch.Generator().manual_seed(5)
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in ADAMW_SHAPES]
    grads = [
        [torch.randn(s, generator=gen, dtype=torch.float64) for s in ADAMW_SHAPES] for _ in range(ADAMW_STEPS)
    ]
    tensors: dict[str, torch.Tensor] = {}
    for j, p in enumerate(init):
        tensors[f"param.step0.p{j}"] = p
        tensors[f"grouped.param.step0.p{j}"] = p.clone()
    for i, step_grads in enumerate(grads, start=1):
        for j, g in enumerate(step_grads):
            tensors[f"grad.step{i}.p{j}"] = g
    for prefix, grouped in (("", False), ("grouped.", True)):
        history, state = run_adamw(init, grads, grouped)
        for i, step_params in enumerate(history, start=1):
            for j, p in enumerate(step_params):
                tensors[f"{prefix}param.step{i}.p{j}"] = p
        for j, (m, v) in enumerate(state):
            tensors[f"{prefix}exp_avg.final.p{j}"] = m
            tensors[f"{prefix}exp_avg_sq.final.p{j}"] = v
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(OUT / "adamw.safetensors"), metadata={"format": "pt"})

    meta = {
        "description": "torch.optim.AdamW trajectories in float64; see tests/fixtures/README.md",
        "torch_version": torch.__version__,
        "dtype": "float64",
        "shapes": [list(s) for s in ADAMW_SHAPES],
        "n_params": len(ADAMW_SHAPES),
        "steps": ADAMW_STEPS,
        "hyperparameters": ADAMW_HPARAMS,
        "amsgrad": False,
        "maximize": False,
        "step_indexing": "param.step0 = initial params; grad.step{i} (i=1..steps) is the gradient used "
        "by the i-th optimizer.step(); param.step{i} = params after that step",
        "runs": {
            "all_decay": {
                "param_prefix": "param.",
                "state_prefix": "",
                "param_groups": [
                    {"params": [0, 1, 2], "weight_decay": ADAMW_HPARAMS["weight_decay"]},
                ],
            },
            "grouped": {
                "param_prefix": "grouped.param.",
                "state_prefix": "grouped.",
                "param_groups": [
                    {"params": [0, 2], "weight_decay": ADAMW_HPARAMS["weight_decay"]},
                    {"params": [1], "weight_decay": 0.0},
                ],
            },
        },
        "shared_gradients": "both runs start from param.step0 and use the same grad.step{i}.p{j}",
    }
    (OUT / "adamw.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"adamw: {len(tensors)} arrays")


# ----------------------------------------------------------------------------------------------------
# 1d. a complete tiny Hugging Face directory (model + tokenizer)
# ----------------------------------------------------------------------------------------------------

TOKENIZER_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A language model predicts the next token from the tokens before it.",
    "Tokenizers split text into pieces; byte-level BPE never meets an unknown character.",
    "In 2024 there were 365 days, 12 months and 52 weeks, give or take one.",
    "def add(a, b):\n    return a + b\n",
    "Hello, world! Hello again, world. It's a small world after all.",
    "The cat sat on the mat, and the dog sat on the log.",
    "Numbers like 3.14159 and 2.71828 show up in mathematics all the time.",
]
HF_DIR_TEXT = "Hello world! The quick model sat on 12 mats."


def train_tokenizer(vocab_size: int = 300) -> Tokenizer:
    """Train a GPT-2 style byte-level BPE (no prefix space, GPT-2 regex split) on TOKENIZER_CORPUS."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, even unseen ones
        show_progress=False,
    )
    tok.train_from_iterator(TOKENIZER_CORPUS, trainer=trainer)
    return tok


def make_hf_llama_dir() -> None:
    out_dir = clean_dir(OUT / "hf_llama_dir")
    tok = train_tokenizer()
    vocab_size = tok.get_vocab_size()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token=None,
    )
    fast.save_pretrained(out_dir)  # tokenizer.json + tokenizer_config.json

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        bos_token_id=tok.token_to_id("<|endoftext|>"),
        eos_token_id=tok.token_to_id("<|endoftext|>"),
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    init_weights(model, seed=6)
    model.save_pretrained(out_dir)

    ids = tok.encode(HF_DIR_TEXT).ids
    assert fast(HF_DIR_TEXT, add_special_tokens=False)["input_ids"] == ids
    assert tok.decode(ids) == HF_DIR_TEXT
    input_ids = torch.tensor([ids], dtype=torch.int64)  # (1, T)
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits.float()  # (1, T, V)
    save_file(
        {"input_ids": input_ids.contiguous(), "logits": logits.contiguous()},
        str(out_dir / "expected.safetensors"),
        metadata={"format": "pt", "text": HF_DIR_TEXT},
    )
    tokens = [tok.id_to_token(i) for i in ids]
    (out_dir / "expected.json").write_text(
        json.dumps({"text": HF_DIR_TEXT, "input_ids": ids, "tokens": tokens}, indent=2) + "\n"
    )
    print(f"hf_llama_dir: vocab={vocab_size}, {len(ids)} tokens: {tokens}")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    make_llama_gqa()
    make_qwen3()
    make_adamw()
    make_hf_llama_dir()


if __name__ == "__main__":
    main()
