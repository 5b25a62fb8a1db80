"""Tests of the byte-level BPE tokenizer trained here: training, encode/decode, special tokens, files."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyllm.tokenizer import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, BPETokenizer, load_tokenizer
from tinyllm.tokenizer.patterns import SMOLLM_PRE_TOKENIZER, split_text
from tinyllm.tokenizer.train import count_chunks, merge_word

EOT = "<|endoftext|>"
CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n"
    "It's 2024 and we've 12345 reasons; don't we?   Spaces   and\ttabs.\n"
    "Ünïcödé: naïve café, Привет мир, 你好世界, 🦙🦙 emoji!\n"
) * 3


def reference_train(
    text: str, vocab_size: int, pattern: str, special_tokens: list[str], tie_break: str = "smallest"
) -> list[tuple[int, int]]:
    """The slow, obviously correct trainer: every chunk occurrence kept, all pairs recounted per merge.

    Chooses the most frequent pair; on ties the smallest (bytes of left, bytes of right), or with
    ``tie_break="greatest"`` the greatest (the rule of GPT-2-style reference trainers).
    """
    parts = regex.split("|".join(regex.escape(s) for s in special_tokens), text) if special_tokens else [text]
    words = [list(chunk.encode("utf-8")) for part in parts for chunk in regex.findall(pattern, part)]
    vocab = [bytes([i]) for i in range(256)]
    merges = []
    while len(vocab) < vocab_size - len(special_tokens):
        counts = Counter(pair for word in words for pair in zip(word, word[1:]))
        if not counts:
            break
        if tie_break == "greatest":
            best = max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]))
        else:
            best = min(counts, key=lambda p: (-counts[p], vocab[p[0]], vocab[p[1]]))
        merges.append(best)
        vocab.append(vocab[best[0]] + vocab[best[1]])
        words = [merge_word(word, best, len(vocab) - 1) for word in words]
    return merges


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=400, special_tokens=(EOT, "<|pad|>"))


# ---------------------------------------------------------------- training


def test_wikipedia_example():
    # https://en.wikipedia.org/wiki/Byte_pair_encoding: aa -> Z, ab -> Y, ZY -> X
    t = BPETokenizer.train("aaabdaaabac", vocab_size=259, special_tokens=())
    assert t.merges == [(97, 97), (97, 98), (256, 257)]
    assert [t.id_to_token(i) for i in (256, 257, 258)] == [b"aa", b"ab", b"aaab"]
    assert t.encode("aaabdaaabac") == [258, 100, 258, 97, 99]  # X d X a c
    assert t.decode([258, 100, 258, 97, 99]) == "aaabdaaabac"


def test_merge_word_examples():
    assert merge_word([1, 2, 3, 1, 2], (1, 2), 4) == [4, 3, 4]
    assert merge_word([7, 7, 7], (7, 7), 8) == [8, 7]


def test_count_chunks_cuts_out_special_tokens():
    assert count_chunks(["hi hi<|eot|>hi"], (GPT2_SPLIT_PATTERN,), ["<|eot|>"]) == Counter(
        {b"hi": 2, b" hi": 1}
    )


def test_vocab_size_counts_special_tokens_and_specials_take_last_ids(tok):
    assert tok.vocab_size == 400
    assert tok.special_tokens == {EOT: 398, "<|pad|>": 399}
    assert len(tok.merges) == 400 - 256 - 2
    assert all(len(tok.id_to_token(i)) == 1 for i in range(256))


def test_training_stops_early_when_pairs_run_out():
    t = BPETokenizer.train("ab ab", vocab_size=1000)
    # chunks "ab" and " ab": merges (a, b) and (" ", "ab"), then nothing is left to merge
    assert [t.id_to_token(i) for i in range(256, t.vocab_size)] == [b"ab", b" ab", EOT.encode()]


def test_special_tokens_never_merged_in_training():
    t = BPETokenizer.train(f"ab{EOT}ab{EOT}ab{EOT}", vocab_size=300)
    assert all(
        EOT.encode() not in t.id_to_token(i) or i == t.special_tokens[EOT] for i in range(t.vocab_size)
    )
    assert b"|>" not in [t.id_to_token(i) for i in range(256, t.special_tokens[EOT])]


def test_training_is_deterministic_and_accepts_iterables():
    a = BPETokenizer.train(CORPUS, vocab_size=350)
    assert a.merges == BPETokenizer.train(CORPUS, vocab_size=350).merges
    # Documents are trained as separate texts: the same as one text with a special token between.
    docs = CORPUS.split("\n\n")
    by_docs = BPETokenizer.train(iter(docs), vocab_size=350)
    assert by_docs.merges == BPETokenizer.train(EOT.join(docs), vocab_size=350).merges
    assert by_docs.merges != a.merges  # (the "\n\n" chunks are gone)


def test_verbose_training_shows_progress(capsys):
    BPETokenizer.train(CORPUS, vocab_size=270, verbose=True)
    assert "BPE training" in capsys.readouterr().err


def test_fast_trainer_matches_reference_on_text():
    for pattern in (GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN):
        fast = BPETokenizer.train(CORPUS, 450, pattern=pattern, special_tokens=[EOT])
        assert fast.merges == reference_train(CORPUS, 450, pattern, [EOT])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(alphabet="ab c\n'1é!", max_size=120),
    n_merges=st.integers(0, 40),
    pattern=st.sampled_from([GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN]),
    with_special=st.booleans(),
)
def test_fast_trainer_matches_reference(text, n_merges, pattern, with_special):
    specials = ["<|x|>"] if with_special else []
    if with_special:
        text = text.replace("1", "<|x|>")
    vocab_size = 256 + len(specials) + n_merges
    fast = BPETokenizer.train(text, vocab_size, pattern=pattern, special_tokens=specials)
    assert fast.merges == reference_train(text, vocab_size, pattern, specials)


# ---------------------------------------------------------------- encode / decode


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_roundtrip_arbitrary_unicode(tok, s):
    assert tok.decode(tok.encode(s, allowed_special="none")) == s
    assert tok.decode_bytes(tok.encode_ordinary(s)) == s.encode("utf-8")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(["the", " the", "First", " Citizen", "\n\n", "  ", "123", "é", "🦙", "'s", "x"]))
)
def test_encoding_is_consistent_at_chunk_boundaries(tok, pieces):
    text = "".join(pieces)
    chunks = split_text(text, (GPT4_SPLIT_PATTERN,))
    assert "".join(chunks) == text
    assert tok.encode(text) == [i for c in chunks for i in tok.encode(c)]


def test_encode_uses_learned_merges(tok):
    ids = tok.encode("First Citizen:\nSpeak, speak.")
    assert len(ids) < len("First Citizen:\nSpeak, speak.")
    assert tok.decode(ids) == "First Citizen:\nSpeak, speak."


def test_encode_batch(tok):
    assert tok.encode_batch(["All:", "", "speak"]) == [tok.encode("All:"), [], tok.encode("speak")]


def test_decode_replaces_invalid_utf8(tok):
    euro = tok.encode("€")
    assert tok.decode_bytes(euro) == "€".encode()
    assert tok.decode([0xE2]) == "\ufffd"
    assert tok.decode([0xE2, 0x82]) == "\ufffd"  # a cut "€": replaced, no exception
    assert tok.decode([0xFF, ord("a")]) == "\ufffda"


def test_chunk_cache_is_bounded():
    t = BPETokenizer.train(CORPUS, vocab_size=300, special_tokens=())
    small = BPETokenizer([t.id_to_token(i) for i in range(t.vocab_size)], t.merges, t.patterns, cache_size=4)
    text = " ".join(f"w{i}" for i in range(100))
    assert small.encode(text) == t.encode(text)
    assert small._encode_chunk.cache_info().currsize == 4


def test_pretokenizer_examples():
    assert split_text("Hello world's 2024!!", (GPT2_SPLIT_PATTERN,)) == [
        "Hello",
        " world",
        "'s",
        " 2024",
        "!!",
    ]
    assert split_text(" 12 apples", SMOLLM_PRE_TOKENIZER) == [" ", "1", "2", " apples"]
    assert split_text("abc123", [r"\d"]) == ["abc", "1", "2", "3"]  # unmatched text is kept


# ---------------------------------------------------------------- special tokens


def test_special_tokens_encoding_modes(tok):
    text = f"Speak{EOT}speak<|pad|>"
    eot, pad = tok.special_tokens[EOT], tok.special_tokens["<|pad|>"]
    assert tok.encode(text, allowed_special="all") == tok.encode("Speak") + [eot] + tok.encode("speak") + [
        pad
    ]
    plain = tok.encode(text, allowed_special="none")
    assert eot not in plain and pad not in plain
    assert plain == tok.encode_ordinary(text)
    assert tok.decode(plain) == text
    assert tok.decode(tok.encode(text, allowed_special="all")) == text
    with pytest.raises(ValueError, match=r"<\|pad\|>"):
        tok.encode(text, allowed_special={EOT})  # a set: others still raise, as in tiktoken
    only_eot = tok.encode(f"a{EOT}b", allowed_special={EOT})
    assert only_eot == tok.encode("a") + [eot] + tok.encode("b")


def test_disallowed_special_raises_by_default(tok):
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>' at character 3.*allowed_special"):
        tok.encode(f"abc{EOT}")
    assert tok.encode("abc <|endoftext") == tok.encode_ordinary("abc <|endoftext")  # not a special token


def test_longest_special_token_wins():
    t = BPETokenizer.train("abc", vocab_size=260, special_tokens=("<|a|>", "<|a|><|b|>"))
    assert t.encode("<|a|><|b|><|a|>", allowed_special="all") == [
        t.special_tokens["<|a|><|b|>"],
        t.special_tokens["<|a|>"],
    ]


def test_bad_allowed_special(tok):
    with pytest.raises(ValueError, match="unknown special tokens"):
        tok.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="allowed_special must be"):
        tok.encode("x", allowed_special="some")


# ---------------------------------------------------------------- vocabulary API and errors


def test_token_lookups(tok):
    assert tok.token_to_id(b"a") == 97 and tok.token_to_id("a") == 97
    assert tok.token_to_id(EOT) == tok.special_tokens[EOT]
    assert tok.id_to_token(tok.special_tokens[EOT]) == EOT.encode()
    assert all(tok.token_to_id(tok.id_to_token(i)) == i for i in range(tok.vocab_size))
    with pytest.raises(KeyError, match="not a token"):
        tok.token_to_id("definitely not a token")


@pytest.mark.parametrize("bad", [-1, 400, 10**9])
def test_out_of_range_ids_raise(tok, bad):
    with pytest.raises(ValueError, match=f"token id {bad} is out of range"):
        tok.decode([1, 2, bad])
    with pytest.raises(ValueError, match=f"token id {bad} is out of range"):
        tok.decode_bytes([bad])
    with pytest.raises(ValueError, match=f"token id {bad} is out of range"):
        tok.id_to_token(bad)


def test_train_argument_errors():
    with pytest.raises(ValueError, match="too small"):
        BPETokenizer.train("abc", vocab_size=256)  # no room for <|endoftext|>
    with pytest.raises(ValueError, match="distinct non-empty"):
        BPETokenizer.train("abc", vocab_size=300, special_tokens=("<a>", "<a>"))
    with pytest.raises(ValueError, match="distinct non-empty"):
        BPETokenizer.train("abc", vocab_size=300, special_tokens=("",))
    with pytest.raises(ValueError, match="invalid pre-tokenizer pattern"):
        BPETokenizer.train("abc", vocab_size=300, pattern="(unclosed")


def test_constructor_validation():
    base = [bytes([i]) for i in range(256)]
    with pytest.raises(ValueError, match="not an ordinary token"):
        BPETokenizer(base, [(97, 256)])  # no id 256
    with pytest.raises(ValueError, match="not in the vocabulary"):
        BPETokenizer(base, [(97, 98)])  # merge gives b"ab", which has no id
    with pytest.raises(ValueError, match="appears twice"):
        BPETokenizer(base + [b"a"], [])
    with pytest.raises(ValueError, match="special token"):
        BPETokenizer(base + [b"<s>"], [], special_tokens={"<t>": 256})
    with pytest.raises(ValueError, match="not an ordinary token"):
        BPETokenizer(base + [b"<s>"], [(256, 97)], special_tokens={"<s>": 256})
    with pytest.raises(ValueError, match="eos_id 999"):
        BPETokenizer(base, [], eos_id=999)


def test_missing_byte_tokens_use_unk_or_raise():
    vocab = [bytes([i]) for i in range(256)]
    vocab[0xBF] = b"<unk>"  # no token for byte 0xbf, the second byte of "ÿ" (c3 bf in UTF-8)
    with_unk = BPETokenizer(vocab, [], special_tokens={"<unk>": 0xBF}, unk_id=0xBF)
    assert with_unk.encode("aÿ") == [97, 0xC3, 0xBF]  # the unknown token stands in for the byte
    without = BPETokenizer(vocab, [], special_tokens={"<unk>": 0xBF})
    with pytest.raises(ValueError, match="byte 0xbf"):
        without.encode("aÿ")


# ---------------------------------------------------------------- save / load


def test_save_load_roundtrip(tok, tmp_path):
    path = tmp_path / "tok.json"
    tok.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.merges == tok.merges
    assert loaded.special_tokens == tok.special_tokens
    assert loaded.patterns == tok.patterns
    assert [loaded.id_to_token(i) for i in range(loaded.vocab_size)] == [
        tok.id_to_token(i) for i in range(tok.vocab_size)
    ]
    assert loaded.encode(CORPUS + EOT, allowed_special="all") == tok.encode(
        CORPUS + EOT, allowed_special="all"
    )
    assert load_tokenizer(path).merges == tok.merges  # load_tokenizer recognises the format
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == 1 and data["format"] == "tinyllm-bpe-tokenizer"
    assert data["merges"][0] == [
        tok.id_to_token(tok.merges[0][0]).decode(),
        tok.id_to_token(tok.merges[0][1]).decode(),
    ]
    assert data["vocab"][0xE2] == [0xE2]  # not valid UTF-8 alone: written as byte values


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300), n_merges=st.integers(0, 30))
def test_save_load_roundtrip_property(tmp_path, text, n_merges):
    t = BPETokenizer.train(text, 257 + n_merges, pattern=GPT2_SPLIT_PATTERN)
    t.save(tmp_path / "t.json")
    loaded = BPETokenizer.load(tmp_path / "t.json")
    assert loaded.merges == t.merges and loaded.encode_ordinary(text) == t.encode_ordinary(text)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON"),
        ('{"format": "something-else", "version": 1}', "not a tinyllm tokenizer file"),
        ("[1, 2, 3]", "not a tinyllm tokenizer file"),
        ('{"format": "tinyllm-bpe-tokenizer", "version": 99}', "version 99 is not supported"),
        ('{"format": "tinyllm-bpe-tokenizer", "version": 1}', "damaged tokenizer file: missing"),
    ],
)
def test_load_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        BPETokenizer.load(path)


def test_load_rejects_damaged_entries(tok, tmp_path):
    path = tmp_path / "tok.json"
    tok.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["merges"][3] = ["zzz-not-a-token", "a"]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="damaged tokenizer file"):
        BPETokenizer.load(path)
    data["merges"][3] = [[300], "a"]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="list of byte values"):
        BPETokenizer.load(path)
