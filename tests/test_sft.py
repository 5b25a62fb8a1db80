"""Chat SFT data: loss masks on assistant tokens only, right padding, truncation, bad input; plain text."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import tinyllm as tl
from tinyllm.autograd.ops import cross_entropy
from tinyllm.finetune.data import (
    IGNORE_INDEX,
    encode_chat,
    fit_to_context,
    load_chat_jsonl,
    load_text,
    pad_batch,
)
from tinyllm.models import ModelConfig, Transformer
from tinyllm.tokenizer import BPETokenizer

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
START, END = 256, 257


def byte_tokenizer() -> BPETokenizer:
    """One token per byte plus <|im_start|> (256) and <|im_end|> (257): token counts are byte counts."""
    vocab = [bytes([b]) for b in range(256)] + [b"<|im_start|>", b"<|im_end|>"]
    return BPETokenizer(vocab, [], special_tokens={"<|im_start|>": START, "<|im_end|>": END}, eos_id=END,
                        chat_template=CHATML)


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "How are you?"},
    {"role": "assistant", "content": "Fine."},
]


def test_two_turn_conversation_known_answer():
    tokenizer = byte_tokenizer()
    ids, learned = encode_chat(tokenizer, CONVERSATION)
    text = tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=False)
    assert tokenizer.decode(ids) == text
    # Each assistant turn learns its content, its <|im_end|> and the newline after it:
    # "Hello!" 6 + 1 + 1 = 8, "Fine." 5 + 1 + 1 = 7.
    assert sum(learned) == 15
    assert tokenizer.decode([t for t, keep in zip(ids, learned) if keep]) == "Hello!<|im_end|>\nFine.<|im_end|>\n"
    header = tokenizer.encode("<|im_start|>assistant\n", allowed_special="all")
    first = ids.index(ord("H"), ids.index(ord("H")) + 1)  # the "H" of "Hello!" (the first is "Hi")
    assert ids[first - len(header):first] == header and not any(learned[first - len(header):first])

    x, y = pad_batch([(ids, learned)], pad_id=END)
    assert x.shape == y.shape == (1, len(ids) - 1)
    assert int((y != IGNORE_INDEX).sum()) == 15  # the loss counts exactly the assistant tokens
    logits = np.random.default_rng(0).standard_normal((1, len(ids) - 1, 258))
    loss = cross_entropy(tl.tensor(logits), y).item()
    rows = np.flatnonzero(y[0] != IGNORE_INDEX)
    log_probs = logits[0] - np.log(np.exp(logits[0]).sum(-1, keepdims=True))
    assert loss == pytest.approx(-log_probs[rows, y[0, rows]].mean(), rel=1e-6)


def test_right_padding_leaves_each_row_as_alone():
    tokenizer = byte_tokenizer()
    long = encode_chat(tokenizer, CONVERSATION)
    short = encode_chat(tokenizer, CONVERSATION[1:3])
    x, y = pad_batch([long, short], pad_id=END)
    n = len(short[0]) - 1
    assert (x[1, n:] == END).all() and (y[1, n:] == IGNORE_INDEX).all()
    tl.set_backend("numpy", seed=0)
    model = Transformer(ModelConfig(vocab_size=258, dim=32, n_layers=2, n_heads=2, max_seq_len=128))
    with tl.no_grad():
        batch, _ = model(x)
        alone, _ = model(x[1:, :n])
    np.testing.assert_allclose(batch.data[1, :n], alone.data[0], atol=1e-5)  # causal: pads come after, never seen
    _, loss = model(x, y)
    _, loss_alone = model(x[:1], y[:1])
    assert np.isfinite(loss.item()) and loss.item() != loss_alone.item()


def test_bad_conversations_are_named(tmp_path):
    tokenizer = byte_tokenizer()
    with pytest.raises(ValueError, match="role 'bot'; valid roles: system, user, assistant"):
        encode_chat(tokenizer, [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}])
    with pytest.raises(ValueError, match="no assistant turn"):
        encode_chat(tokenizer, [{"role": "user", "content": "a"}])
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": CONVERSATION}) + "\n" + json.dumps({"messages": [
        {"role": "user", "content": "x"}]}) + "\n")
    with pytest.raises(ValueError, match=r"chat.jsonl:2: no assistant turn"):
        load_chat_jsonl(path, tokenizer, block_size=64)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"chat.jsonl:1: not valid JSON"):
        load_chat_jsonl(path, tokenizer, block_size=64)


def test_long_conversations_are_truncated_and_reported(tmp_path, caplog):
    tokenizer = byte_tokenizer()
    ids, learned = encode_chat(tokenizer, CONVERSATION)
    kept, report = fit_to_context([(ids, learned)], block_size=len(ids) - 4)
    assert report.truncated == 1 and report.tokens_dropped == 3 and len(kept[0][0]) == len(ids) - 3
    _, report = fit_to_context([(ids, learned)], block_size=10)  # only the system prompt fits: dropped
    assert report.dropped == 1
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps({"messages": CONVERSATION}) for _ in range(4)) + "\n")
    with caplog.at_level(logging.WARNING):
        data = load_chat_jsonl(path, tokenizer, block_size=len(ids) - 4, val_fraction=0.25)
    assert "4 conversation(s) longer than the context" in caplog.text and "dropping 12 tokens" in caplog.text
    assert len(data.train) == 3 and len(data.val) == 1
    x, y = data.get_batch("train", 2, rng=np.random.default_rng(0))
    assert x.shape == (2, len(ids) - 4)


def test_plain_text_for_continued_pretraining(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("To be, or not to be: that is the question. " * 20)
    data = load_text(path, byte_tokenizer(), val_fraction=0.25)
    assert len(data.train) + len(data.val) == 43 * 20 and data.chars_per_token == 1.0
    x, y = data.get_batch("train", 3, 16)
    assert x.shape == (3, 16) and (x[:, 1:] == y[:, :-1]).all()


def test_evaluate_scores_accuracy_only_on_learned_targets():
    from conftest import to_numpy

    from tinyllm.train import evaluate

    model = Transformer(ModelConfig(vocab_size=20, dim=16, n_layers=1, n_heads=2, max_seq_len=8))
    x = np.array([[3, 4, 5, 6, 0, 0], [7, 8, 9, 1, 2, 3]])
    with tl.no_grad():
        predicted = to_numpy(model(tl.get_backend().asarray(x))[0].data).argmax(axis=-1)  # (2, 6)
    y = predicted.copy()
    y[0, :2] = IGNORE_INDEX  # the prompt: not learned
    y[0, 4:] = IGNORE_INDEX  # padding
    y[1, 0] = IGNORE_INDEX
    y[1, 5] = (predicted[1, 5] + 1) % 20  # one learned target the model gets wrong
    learned = (y != IGNORE_INDEX).sum()  # 2 + 5 = 7, of which 6 right

    class Fixed:
        chars_per_token = 1.0

        def get_batch(self, split, batch_size, block_size=None, rng=None):
            backend = tl.get_backend()
            return backend.asarray(x), backend.asarray(y)

    scores = evaluate(model, Fixed(), batch_size=2, block_size=6, iters=2)
    assert learned == 7 and scores["accuracy"] == pytest.approx(6 / 7)  # padding counted as wrong would give 6 / 12
