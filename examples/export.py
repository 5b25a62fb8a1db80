"""Export a tinyllm model as a GGUF file (llama.cpp, Ollama, LM Studio) or a Hugging Face directory (transformers).

    python examples/export.py --checkpoint out/shakespeare/best --format gguf --dtype q8_0 --out shakespeare-q8_0.gguf
    python examples/export.py --checkpoint out/shakespeare/best --format hf --out shakespeare-hf
    python examples/export.py --model SmolLM2-135M-Instruct.Q4_1.gguf --format hf --dtype bf16 --out smollm2-hf
    python examples/export.py --model smollm2.gguf --keep-quantized --format gguf --dtype q8_0 --out smol-q8_0.gguf

--checkpoint takes a training checkpoint (examples/train_shakespeare.py writes out/shakespeare/best);
--model takes anything ``tl.load_pretrained`` reads: a GGUF file, a Hugging Face directory, a
quantized checkpoint. The output is written under a temporary name and renamed when complete; an
existing output is refused unless --force. At the end it prints the sizes, the time, and how to
run the result with llama.cpp, transformers and tinyllm.

dtypes: gguf f32 (default, bit-exact), f16, q8_0, q4_0; hf f32 (default), f16, bf16.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import tinyllm as tl
from tinyllm.export import ExportError, save_gguf, save_pretrained

GGUF_DTYPES = ("f32", "f16", "q8_0", "q4_0")
HF_DTYPES = ("f32", "f16", "bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Export a tinyllm model as a GGUF file or a Hugging Face directory.",
        epilog="Example: python examples/export.py --checkpoint out/shakespeare/best --format gguf --dtype q8_0 "
               "--out shakespeare-q8_0.gguf",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, metavar="DIR", help="a tinyllm training checkpoint directory")
    source.add_argument("--model", type=Path, metavar="PATH",
                        help="a GGUF file, a Hugging Face directory or a quantized checkpoint directory")
    parser.add_argument("--format", choices=["gguf", "hf"], default=None,
                        help="gguf (one file for llama.cpp) or hf (a directory for transformers); "
                             "default: gguf if --out ends in .gguf, else hf")
    parser.add_argument("--dtype", default="f32",
                        help=f"gguf: {', '.join(GGUF_DTYPES)}; hf: {', '.join(HF_DTYPES)} (default f32)")
    parser.add_argument("--out", type=Path, required=True, metavar="PATH", help="the file (gguf) or directory (hf) to write")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--keep-quantized", action="store_true",
                        help="--model GGUF: keep its Q8_0/Q4_0 blocks, so that a q8_0/q4_0 export writes them unchanged")
    parser.add_argument("--name", default=None, help="general.name of a GGUF file (default: the file name)")
    args = parser.parse_args(argv)
    if args.format is None:
        args.format = "gguf" if args.out.suffix == ".gguf" else "hf"
    allowed = GGUF_DTYPES if args.format == "gguf" else HF_DTYPES
    if args.dtype not in allowed:
        parser.error(f"--dtype {args.dtype} is not available for --format {args.format}: choose one of {', '.join(allowed)}")
    if args.out.exists() and not args.force:
        parser.error(f"{args.out} already exists; choose another --out, or pass --force to replace it")
    return args


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file in a directory."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def how_to_run(path: Path, kind: str) -> str:
    """The commands that run the exported model in llama.cpp, transformers and tinyllm."""
    if kind == "gguf":
        return "\n".join([
            "Run it with llama.cpp:",
            f"  llama-cli -m {path} -p 'ROMEO:' -n 64 --temp 0",
            f"  llama-server -m {path}          # an OpenAI-compatible server on :8080",
            f"  python -c \"from llama_cpp import Llama; print(Llama('{path}')('ROMEO:', max_tokens=64))\"",
            "with Ollama:",
            f"  echo 'FROM {path.resolve()}' > Modelfile && ollama create my-model -f Modelfile && ollama run my-model",
            "with transformers:",
            f"  AutoModelForCausalLM.from_pretrained('{path.parent}', gguf_file='{path.name}')",
            f"  AutoTokenizer.from_pretrained('{path.parent}', gguf_file='{path.name}')",
            "with tinyllm:",
            f"  python examples/generate.py --model {path}",
        ])
    return "\n".join([
        "Run it with transformers:",
        "  from transformers import AutoModelForCausalLM, AutoTokenizer",
        f"  model = AutoModelForCausalLM.from_pretrained('{path}'); tokenizer = AutoTokenizer.from_pretrained('{path}')",
        "convert it for llama.cpp with llama.cpp's own converter:",
        f"  python convert_hf_to_gguf.py {path}   (or: python examples/export.py --model {path} --format gguf --out ...)",
        "with tinyllm:",
        f"  python examples/generate.py --model {path}",
    ])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(message)s]")
    source = args.checkpoint if args.checkpoint is not None else args.model
    if args.checkpoint is not None and not (source / "checkpoint.json").exists():
        sys.exit(f"{source} is not a tinyllm training checkpoint (no checkpoint.json); for other models use --model")
    start = time.perf_counter()
    try:
        model, tokenizer = tl.load_pretrained(source, keep_quantized=args.keep_quantized)
    except (OSError, ValueError, NotImplementedError) as error:
        sys.exit(f"cannot load {source}: {error}")
    loaded = time.perf_counter()
    if tokenizer is None:
        print(f"[warning: {source} holds no tokenizer; the export holds the weights only]", file=sys.stderr)
    try:
        if args.format == "gguf":
            save_gguf(model, tokenizer, args.out, dtype=args.dtype, force=args.force, name=args.name)
        else:
            dtype = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[args.dtype]
            save_pretrained(model, tokenizer, args.out, dtype=dtype, force=args.force)
    except ExportError as error:
        sys.exit(f"cannot export: {error}")
    done = time.perf_counter()
    print(f"[loaded {source} in {loaded - start:.1f} s; wrote {args.out} ({args.format}, {args.dtype}, "
          f"{size_of(args.out) / 2**20:,.1f} MiB) in {done - loaded:.1f} s]", file=sys.stderr)
    print(how_to_run(args.out, args.format))


if __name__ == "__main__":
    main()
