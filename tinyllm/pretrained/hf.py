"""Hugging Face model directories: ``config.json`` + safetensors weights + ``tokenizer.json``.

What ``save_pretrained`` writes (LlamaForCausalLM, Qwen3ForCausalLM)::

    config.json                      the architecture and its sizes (see hf_config.py)
    model.safetensors                every weight, Hugging Face names (see mapping.py)
      or model.safetensors.index.json  {"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors", ...}}
         + model-0000N-of-0000M.safetensors   the weights split into shards
    tokenizer.json, tokenizer_config.json   the tokenizer, its special tokens and chat template
    generation_config.json           default sampling settings (not read here)
"""

from __future__ import annotations

import json
from pathlib import Path

from ..models.config import ModelConfig
from .hf_config import config_from_hf
from .tensors import LazyTensor, safetensors_lazy_tensors

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def read_hf_config(directory: str | Path) -> ModelConfig:
    """The ``ModelConfig`` of a Hugging Face directory's ``config.json`` (unsupported architectures raise)."""
    path = Path(directory) / "config.json"
    if not path.exists():
        if any(Path(directory).glob("model-*.safetensors")):  # tinyllm.checkpoint's content files, but no manifest
            raise FileNotFoundError(
                f"{directory} looks like a tinyllm checkpoint without its checkpoint.json (a save that never "
                f"finished, or a file deleted by hand): it cannot be loaded. Use the other checkpoint (best/ or last/)"
            )
        raise FileNotFoundError(
            f"{directory} is not a model directory tinyllm reads: it has no checkpoint.json (a tinyllm checkpoint, "
            f"as examples/train_shakespeare.py writes), no quantized.json (tinyllm.quant) and no config.json "
            f"(a Hugging Face model)"
        )
    try:
        hf = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    return config_from_hf(hf)


def hf_lazy_tensors(directory: str | Path) -> dict[str, LazyTensor]:
    """Hugging Face name -> ``LazyTensor`` for every weight of a directory, single-file or sharded."""
    directory = Path(directory)
    index = directory / INDEX_FILE
    if index.exists():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no 'weight_map' object (tensor name -> shard file)")
        tensors: dict[str, LazyTensor] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = directory / shard
            if not shard_path.exists():
                raise FileNotFoundError(f"{index} names the shard {shard}, which is not in {directory}")
            for name, tensor in safetensors_lazy_tensors(shard_path).items():
                if weight_map.get(name) != shard:
                    raise ValueError(f"{shard_path} holds {name!r}, which {INDEX_FILE} places in {weight_map.get(name)}")
                tensors[name] = tensor
        not_found = sorted(set(weight_map) - set(tensors))
        if not_found:
            raise ValueError(f"{INDEX_FILE} lists tensors that no shard holds: {', '.join(not_found)}")
        return tensors
    if (directory / SINGLE_FILE).exists():
        return safetensors_lazy_tensors(directory / SINGLE_FILE)
    others = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".safetensors"))
    raise FileNotFoundError(
        f"{directory} has neither {SINGLE_FILE} nor {INDEX_FILE}"
        + (f" (found {', '.join(others)}; tinyllm reads safetensors only, never pickled PyTorch files)" if others else "")
    )
