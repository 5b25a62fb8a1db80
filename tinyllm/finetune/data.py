"""Fine-tuning data: chat conversations (supervised fine-tuning, SFT) and plain text (continued pretraining).

Chat SFT. A JSONL file holds one conversation per line::

    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}

Each conversation is rendered with the model's own chat template (``tokenizer.apply_chat_template``,
ChatML for SmolLM2), so the model sees exactly the format it was trained on, and the loss is taken
only on what the assistant says: the model should learn to answer, not to predict the user's
questions or the system prompt. To know which tokens those are, the conversation is rendered one
prefix at a time; every rendering must begin with the previous one (true of the usual templates),
so each message adds a segment of text:

    render(m[:1])                      "<|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n"
    render(m[:1], generation prompt)   + "<|im_start|>assistant\\n"          (the header: not learned)
    render(m[:2])                      + "Hello!<|im_end|>\\n"               (assistant: learned)

Each segment is tokenized by itself (segment boundaries fall on control tokens, so this is how
the whole text tokenizes too) and its tokens are marked as learned or not. The end-of-turn
``<|im_end|>`` of an assistant turn is learned: it is how the model learns to stop.

Batches. A sequence of n tokens gives inputs x = ids[:-1] and targets y = ids[1:]; y[t] is
``IGNORE_INDEX`` (-100, skipped by the cross-entropy) where ids[t + 1] is not an assistant token.
Rows of a batch have different lengths, so they are right-padded to the longest: x with a pad id,
y with -100. No attention mask is needed for right padding: with the causal mask a real token
only attends to earlier positions, and every pad comes after all the real tokens of its row; the
pads' own outputs are computed and ignored.

A conversation longer than the context (``block_size + 1`` tokens) is cut at the end, and the
loader says how many were cut and how many tokens were dropped. One whose assistant tokens are
all cut away is dropped, as it has nothing to learn from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..autograd.ops.cross_entropy import IGNORE_INDEX
from ..backends import get_backend
from ..data import TokenDataset

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")


def validate_messages(messages: Any, where: str = "conversation") -> list[dict[str, str]]:
    """Check a conversation's form: a list of {"role", "content"} with known roles and an assistant turn."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of {{'role': ..., 'content': ...}} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise ValueError(f"{where}: message {i} must be an object with string 'role' and 'content', got {message!r}")
        if message["role"] not in ROLES:
            raise ValueError(f"{where}: message {i} has role {message['role']!r}; valid roles: {', '.join(ROLES)}")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError(f"{where}: no assistant turn, so nothing to learn (the loss is on assistant tokens only)")
    return messages


def encode_chat(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[bool]]:
    """Token ids of a rendered conversation and, for each, whether it is an assistant token (learned).

    >>> from tinyllm.tokenizer import BPETokenizer                                    # doctest: +SKIP
    >>> ids, learned = encode_chat(tokenizer, [{"role": "user", "content": "Hi"},
    ...                                        {"role": "assistant", "content": "Hello!"}])  # doctest: +SKIP
    >>> tokenizer.decode([t for t, keep in zip(ids, learned) if keep])                # doctest: +SKIP
    'Hello!<|im_end|>\\n'
    """
    validate_messages(messages)
    ids: list[int] = []
    learned: list[bool] = []
    done = ""  # the text rendered so far

    def add(text: str, learn: bool, what: str) -> None:
        nonlocal done
        if not text.startswith(done):
            raise ValueError(f"the chat template renders {what} so that it does not begin with the earlier messages' "
                             f"text; loss masks need a template that only appends")
        segment = text[len(done):]
        tokens = tokenizer.encode(segment, allowed_special="all") if segment else []
        ids.extend(tokens)
        learned.extend([learn] * len(tokens))
        done = text

    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            add(tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True), False, f"message {i}'s header")
        add(tokenizer.apply_chat_template(messages[: i + 1], add_generation_prompt=False), message["role"] == "assistant",
            f"message {i}")
    return ids, learned


@dataclass
class TruncationReport:
    """What fitting conversations into the context cost."""

    truncated: int = 0  # conversations cut at the end
    tokens_dropped: int = 0
    dropped: int = 0  # conversations with no assistant token left after cutting


def fit_to_context(examples: list[tuple[list[int], list[bool]]], block_size: int) -> tuple[list, TruncationReport]:
    """Cut each example to ``block_size + 1`` tokens (T inputs, T targets); drop those left with nothing to learn."""
    report = TruncationReport()
    kept = []
    for ids, learned in examples:
        if len(ids) > block_size + 1:
            report.truncated += 1
            report.tokens_dropped += len(ids) - (block_size + 1)
            ids, learned = ids[: block_size + 1], learned[: block_size + 1]
        if not any(learned[1:]):  # position 0 is never a target
            report.dropped += 1
            continue
        kept.append((ids, learned))
    return kept, report


def pad_batch(examples: list[tuple[list[int], list[bool]]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs x and targets y (B, T) for a list of (ids, learned), right-padded to the longest (T = its length - 1).

    >>> x, y = pad_batch([([5, 6, 7], [False, True, True]), ([8, 9], [False, True])], pad_id=0)
    >>> x.tolist(), y.tolist()
    ([[5, 6], [8, 0]], [[6, 7], [9, -100]])
    """
    T = max(len(ids) for ids, _ in examples) - 1
    x = np.full((len(examples), T), pad_id, dtype=np.int64)  # (B, T)
    y = np.full((len(examples), T), IGNORE_INDEX, dtype=np.int64)  # (B, T)
    for row, (ids, learned) in enumerate(examples):
        n = len(ids) - 1
        x[row, :n] = ids[:-1]
        y[row, :n] = np.where(learned[1:], ids[1:], IGNORE_INDEX)
    return x, y


class ChatDataset:
    """Encoded conversations split into train and val; ``get_batch`` gives right-padded (x, y) like ``TokenDataset``.

    ``chars_per_token`` is 1 so that a "bits per character" from ``evaluate`` reads as bits per token.
    """

    def __init__(self, train: list, val: list, vocab_size: int, pad_id: int, text_sha256: str = "") -> None:
        if not train or not val:
            raise ValueError(f"a chat dataset needs conversations in both splits (train {len(train)}, val {len(val)}); "
                             f"give more conversations or a different val_fraction")
        self.train, self.val = train, val
        self.vocab_size, self.pad_id, self.text_sha256 = vocab_size, pad_id, text_sha256
        self.chars_per_token = 1.0
        self.tokenizer_path = None

    def split(self, name: str) -> list:
        if name not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {name!r}")
        return self.train if name == "train" else self.val

    def get_batch(self, split: str, batch_size: int, block_size: int | None = None, rng: Any = None) -> tuple[Any, Any]:
        """``batch_size`` random conversations of ``split``, right-padded: x, y (B, T), T <= the longest - 1."""
        examples = self.split(split)
        rng = get_backend().rng if rng is None else rng
        picks = get_backend().to_host(rng.integers(0, len(examples), size=batch_size))
        x, y = pad_batch([examples[int(i)] for i in picks], self.pad_id)
        backend = get_backend()
        return backend.asarray(x), backend.asarray(y)

    def check_block_size(self, block_size: int) -> None:
        """Conversations were already cut to fit; nothing to check."""


def load_chat_jsonl(path: str | os.PathLike, tokenizer: Any, block_size: int, val_fraction: float = 0.1,
                    pad_id: int | None = None) -> ChatDataset:
    """Read a JSONL file of {"messages": [...]}, encode with the chat template, fit to the context, split.

    Errors name the line. The last ``val_fraction`` of the conversations (at least one) are the val split.
    """
    path = Path(path)
    examples = []
    raw = path.read_bytes()
    for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error})") from None
        if not isinstance(record, dict) or "messages" not in record:
            raise ValueError(f"{path}:{number}: each line must be an object with a 'messages' list")
        messages = validate_messages(record["messages"], f"{path}:{number}")
        examples.append(encode_chat(tokenizer, messages))
    if len(examples) < 2:
        raise ValueError(f"{path} holds {len(examples)} conversation(s); at least 2 are needed (train and val)")
    examples, report = fit_to_context(examples, block_size)
    if report.truncated:
        logger.warning("%s: %d conversation(s) longer than the context of %d tokens were cut at the end, dropping %d "
                       "tokens%s", path, report.truncated, block_size + 1, report.tokens_dropped,
                       f"; {report.dropped} had no assistant token left and were left out" if report.dropped else "")
    n_val = max(1, int(round(len(examples) * val_fraction)))
    pad = pad_id if pad_id is not None else (tokenizer.eos_id if tokenizer.eos_id is not None else 0)
    return ChatDataset(examples[:-n_val], examples[-n_val:], tokenizer.vocab_size, pad,
                       hashlib.sha256(raw).hexdigest())


def load_text(path: str | os.PathLike, tokenizer: Any, val_fraction: float = 0.1) -> TokenDataset:
    """Plain text for continued pretraining: tokenized in memory (no cache files), the last ``val_fraction`` for val.

    Every token is learned, as in pretraining; batches are random windows (``TokenDataset.get_batch``).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    path = Path(path)
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    cut = int(len(text) * (1.0 - val_fraction))
    train = np.array(tokenizer.encode_ordinary(text[:cut]), dtype=np.int64)
    val = np.array(tokenizer.encode_ordinary(text[cut:]), dtype=np.int64)
    return TokenDataset(train=train, val=val, vocab_size=tokenizer.vocab_size,
                        chars_per_token=(len(text) - cut) / max(len(val), 1), tokenizer_path=None,
                        text_sha256=hashlib.sha256(raw).hexdigest())
