"""Wrong input types to the tokenizer give errors that name the problem and the fix (issue 18 item 8):
``decode`` with float / str / None ids, ``encode`` of something that is not a str."""

from __future__ import annotations

import numpy as np
import pytest

from tinyllm.tokenizer import BPETokenizer


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train("hello world, hello tokens", vocab_size=270)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([104, 1.5], r"token ids must be integers, but the id at position 1 is float 1\.5; convert them with"),
        ([3.0], r"the id at position 0 is float 3\.0"),
        (np.array([104.0, 105.0]), r"the id at position 0 is float64 .*ids\.astype\(int\)"),
        (["h"], r"the id at position 0 is str 'h'"),
        ([104, None], r"the id at position 1 is None"),
        (None, r"decode takes a sequence of integer token ids, got None"),
        ("hi", r"got str 'hi'; to turn text into ids use encode\(text\)"),
        (104, r"got int 104; wrap a single id in a list: decode\(\[id\]\)"),
        ([[104, 105]], r"the item at position 0 is itself a sequence; decode a batch row by row"),
        (np.array([[104, 105]]), r"got an array of shape \(1, 2\); decode a batch row by row"),
    ],
)
def test_decode_names_the_bad_id_and_the_fix(tok, ids, message) -> None:
    with pytest.raises(TypeError, match=message):
        tok.decode(ids)


def test_decode_still_takes_every_kind_of_integer(tok) -> None:
    ids = tok.encode("hello")
    assert tok.decode(ids) == "hello"
    assert tok.decode(np.array(ids, dtype=np.uint16)) == "hello"
    assert tok.decode(iter(ids)) == "hello"
    assert tok.decode(tuple(np.int64(i) for i in ids)) == "hello"
    with pytest.raises(ValueError, match="token id 270 is out of range: the vocabulary has ids 0 to 269"):
        tok.decode([270])


def test_id_to_token_names_a_float_id(tok) -> None:
    with pytest.raises(TypeError, match=r"token ids must be integers, but the id is float 1\.5"):
        tok.id_to_token(1.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (123, r"encode takes a str, got int 123; convert it with str\(\)"),
        (None, r'encode takes a str, got None; pass the text to encode \(an empty text is ""\)'),
        (b"hi", r"encode takes a str, got bytes b'hi'; decode the bytes first: encode\(data\.decode\('utf-8'\)\)"),
        (["a", "b"], r"encode takes a str, got list \['a', 'b'\]; for several texts use encode_batch\(texts\)"),
    ],
)
def test_encode_of_a_non_string_says_what_to_pass(tok, text, message) -> None:
    with pytest.raises(TypeError, match=message):
        tok.encode(text)
    with pytest.raises(TypeError, match=message.replace("encode takes", "encode_ordinary takes")):
        tok.encode_ordinary(text)


def test_encode_batch_names_the_bad_item(tok) -> None:
    with pytest.raises(TypeError, match=r"encode_batch \(item 1\) takes a str, got int 3"):
        tok.encode_batch(["fine", 3])
    with pytest.raises(TypeError, match="use encode"):
        tok.encode_batch("one text")


def test_a_lone_surrogate_is_named_instead_of_a_codec_error(tok) -> None:
    with pytest.raises(ValueError, match=r"'\\ud800' \(U\+D800\), a lone surrogate"):
        tok.encode("ok \ud800")
