"""The fine-tuning loop: LoRA learns, adapter-only checkpoints, exact resume, full fine-tuning."""

from __future__ import annotations

import numpy as np
from test_sft import byte_tokenizer

import tinyllm as tl
from tinyllm.finetune import (
    apply_lora,
    finetune,
    load_adapter_checkpoint,
    load_text,
    lora_parameters,
)
from tinyllm.models import ModelConfig, Transformer
from tinyllm.train import TrainConfig

CONFIG = ModelConfig(vocab_size=258, dim=32, n_layers=2, n_heads=2, max_seq_len=64)


def base() -> Transformer:
    """A random model whose (tied) embeddings are large enough for the frozen output projection to express a
    confident prediction (with GPT-2's std 0.02 the logits stay within about +-0.1, whatever LoRA does)."""
    tl.set_backend("numpy", seed=0)
    model = Transformer(CONFIG)
    model.tok_embeddings.weight.data *= 10.0  # std 0.2
    return model


def text_data(tmp_path):  # noqa: ANN001, ANN201
    path = tmp_path / "text.txt"
    path.write_text("To be, or not to be: that is the question. Whether 'tis nobler in the mind to suffer. " * 12)
    return load_text(path, byte_tokenizer())


def train_config(out_dir, **kw) -> TrainConfig:  # noqa: ANN001
    values = dict(batch_size=4, block_size=32, max_steps=8, lr=1e-2, min_lr=1e-3, warmup_steps=2, eval_interval=4,
                  eval_iters=2, log_interval=2, out_dir=str(out_dir), progress=False, weight_decay=0.0)
    return TrainConfig(**(values | kw))


def test_lora_finetune_learns_and_checkpoints_adapters_only(tmp_path):
    data = text_data(tmp_path)
    model = apply_lora(base(), r=4, alpha=8)
    frozen = {n: p.data.copy() for n, p in model.named_parameters() if not p.requires_grad}
    result = finetune(model, data, train_config(tmp_path / "run", max_steps=20, eval_interval=10))
    assert result["val_loss"] < 0.9 * result["start_val_loss"]
    files = sorted(p.name for p in (tmp_path / "run" / "last").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors", "optimizer.safetensors", "trainer_state.json"]
    for n, p in model.named_parameters():
        if n in frozen:
            np.testing.assert_array_equal(p.data, frozen[n])


def test_resume_is_exact(tmp_path):
    data = text_data(tmp_path)
    straight = apply_lora(base(), r=4)
    finetune(straight, data, train_config(tmp_path / "a"))
    interrupted = apply_lora(base(), r=4)
    finetune(interrupted, data, train_config(tmp_path / "b"), stop_at_step=4)
    resumed = base()
    state = load_adapter_checkpoint(tmp_path / "b" / "last", resumed)
    assert state[1]["step"] == 4
    result = finetune(resumed, data, train_config(tmp_path / "b"), resume=state)
    assert result["step"] == 8
    for p, q in zip(lora_parameters(straight), lora_parameters(resumed)):
        np.testing.assert_array_equal(p.data, q.data)


def test_full_finetune_writes_a_model_checkpoint(tmp_path):
    from tinyllm.checkpoint import load_checkpoint

    model = base()
    result = finetune(model, text_data(tmp_path), train_config(tmp_path / "full"))
    assert result["val_loss"] < result["start_val_loss"]
    checkpoint = load_checkpoint(tmp_path / "full" / "last")
    assert checkpoint.train_state["step"] == 8
