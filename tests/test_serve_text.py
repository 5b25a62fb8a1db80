"""Token ids -> streamed text: UTF-8 characters and stop strings split across tokens (no server needed)."""

from __future__ import annotations

from tinyllm.tokenizer.text_stream import TextStream, held_back


class BytesTokenizer:
    """Token i is the i-th of a fixed list of byte strings."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self.pieces[i] for i in ids)


def feed(pieces: list[bytes], stops: list[str]) -> tuple[list[str], bool, str]:
    stream = TextStream(BytesTokenizer(pieces), stops)
    sent, stopped = [], False
    for i in range(len(pieces)):
        text, stopped = stream.push(i)
        sent.append(text)
        if stopped:
            break
    return sent, stopped, "" if stopped else stream.flush()


def test_held_back_is_the_longest_prefix_of_a_stop_at_the_end() -> None:
    assert held_back("abc END", ["ENDING", "x"]) == 3  # "END" could begin "ENDING"
    assert held_back("abc END", [" ENDING"]) == 4
    assert held_back("ab", ["abc", "b"]) == 2
    assert held_back("zzz", ["abc"]) == 0
    assert held_back("", ["abc"]) == 0


def test_a_stop_string_split_over_tokens_ends_the_text_before_it() -> None:
    sent, stopped, _ = feed([b"Hello wor", b"ld\n\nUs", b"er: hi"], ["\n\nUser:"])
    assert stopped and "".join(sent) == "Hello world"
    assert sent[1] == "ld"  # "\n\nUs" was held back until the next token decided it


def test_a_held_back_prefix_that_is_not_a_stop_is_sent_later() -> None:
    sent, stopped, rest = feed([b"one EN", b"D? no, ENV", b"!"], ["END!"])
    assert not stopped and "".join(sent) + rest == "one END? no, ENV!"


def test_a_utf8_character_split_over_tokens_arrives_whole() -> None:
    e_acute = "é".encode()
    sent, _, rest = feed([b"caf", e_acute[:1], e_acute[1:] + b"!"], [])
    assert sent == ["caf", "", "é!"] and rest == ""


def test_the_earliest_of_several_stops_wins() -> None:
    sent, stopped, _ = feed([b"a b c d"], ["c", "b"])
    assert stopped and "".join(sent) == "a "
