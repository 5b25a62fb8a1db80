"""The BPE trainer's two tie rules (issue 18 item 16): on equal counts the smallest pair wins (the
default) or, with ``tie_break="greatest"``, the lexicographically greatest, as GPT-2-style
reference trainers do.

The reference is a naive trainer written here from the definition (every chunk occurrence kept,
all pairs recounted for each merge, the winner picked by one ``max``). It shares nothing with the
fast trainer (no chunk de-duplication, no incremental counts, no heap), and the rule is one
line, so it can be read and checked by eye. An outside trainer would not serve better: Hugging
Face ``tokenizers`` breaks ties by token id and minbpe by the first pair met, so neither offers
this rule, and copying a third party's trainer into the repository to make a fixture is what we
keep out.
"""

from __future__ import annotations

import pytest
from conftest import SHAKESPEARE
from hypothesis import given
from hypothesis import strategies as st
from test_tokenizer import reference_train

from tinyllm.tokenizer import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, BPETokenizer


def reference_train_greatest(text: str, vocab_size: int, pattern: str, special_tokens: list[str]) -> list[tuple[int, int]]:
    """Most frequent pair first; on equal counts the greatest (bytes of left, bytes of right)."""
    return reference_train(text, vocab_size, pattern, special_tokens, tie_break="greatest")


def test_wikipedia_example_under_both_rules() -> None:
    # After (a, a) -> "aa", the pairs (a, b) and (aa, a) both occur twice.
    smallest = BPETokenizer.train("aaabdaaabac", vocab_size=259, special_tokens=())
    greatest = BPETokenizer.train("aaabdaaabac", vocab_size=259, special_tokens=(), tie_break="greatest")
    assert smallest.merges == [(97, 97), (97, 98), (256, 257)]  # aa, ab, aa+ab
    assert greatest.merges == [(97, 97), (256, 97), (257, 98)]  # aa, aa+a, aaa+b
    assert [greatest.id_to_token(i) for i in (256, 257, 258)] == [b"aa", b"aaa", b"aaab"]
    assert greatest.encode("aaabdaaabac") == [258, 100, 258, 97, 99]


def test_greatest_rule_reproduces_the_reference_merges_on_shakespeare() -> None:
    text = SHAKESPEARE.read_text(encoding="utf-8")[:6_000]
    fast = BPETokenizer.train(text, 340, pattern=GPT2_SPLIT_PATTERN, special_tokens=["<|endoftext|>"], tie_break="greatest")
    reference = reference_train_greatest(text, 340, GPT2_SPLIT_PATTERN, ["<|endoftext|>"])
    assert fast.merges == reference
    default = BPETokenizer.train(text, 340, pattern=GPT2_SPLIT_PATTERN, special_tokens=["<|endoftext|>"])
    assert default.merges != reference  # the rules really differ here, so the test can tell them apart


@given(
    text=st.text(alphabet="ab c\n'1é!", max_size=120),
    n_merges=st.integers(0, 40),
    pattern=st.sampled_from([GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN]),
    with_special=st.booleans(),
)
def test_greatest_rule_matches_the_reference_on_tie_heavy_texts(text, n_merges, pattern, with_special) -> None:
    # A small alphabet makes equal counts the rule rather than the exception.
    specials = ["<|x|>"] if with_special else []
    if with_special:
        text = text.replace("1", "<|x|>")
    vocab_size = 256 + len(specials) + n_merges
    fast = BPETokenizer.train(text, vocab_size, pattern=pattern, special_tokens=specials, tie_break="greatest")
    assert fast.merges == reference_train_greatest(text, vocab_size, pattern, specials)


def test_an_unknown_tie_rule_is_refused() -> None:
    with pytest.raises(ValueError, match=r"tie_break must be one of \('smallest', 'greatest'\), got 'largest'"):
        BPETokenizer.train("abc", 260, tie_break="largest")
