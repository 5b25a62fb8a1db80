"""Checkpoints: a directory with the tensors in safetensors files and everything else in JSON.

    out/shakespeare/last/
      checkpoint.json                       the manifest: configs, training state, and the files below
      model-3f9c0a1b2d4e5f60.safetensors    parameters by name, as ``model.state_dict()``
      optimizer-9a0b1c2d3e4f5a6b.safetensors  AdamW moments, "state.{i}.exp_avg" and "state.{i}.exp_avg_sq"
      tokenizer-1b2c3d4e5f6a7b8c.json       the tokenizer file the model was trained with

Why safetensors: a safetensors file is a JSON header (names, dtypes, shapes) followed by the
raw bytes of each array, so loading it only ever reads numbers. A pickle file (``torch.save``'s
old format, ``np.load(allow_pickle=True)``) can run any code when it is loaded.

Why the manifest, and the hash in each file name: a checkpoint is several files, and a save
can be interrupted at any moment (Ctrl-C, a full disk). ``save_checkpoint`` therefore

    1. writes each new file under a name made from its content's SHA-256, crash-safely
       (``fileio.atomic_write``): the files of the previous checkpoint are never touched;
    2. writes ``checkpoint.json`` last, with the same crash-safe rename: this one rename is the
       moment the whole checkpoint switches from the old files to the new;
    3. deletes the old files that the new manifest no longer names.

So the directory always holds one complete checkpoint: the old one until step 2, the new one after.
The manifest also records each file's size and SHA-256, which ``load_checkpoint`` checks, so a
truncated or damaged file is reported by name instead of loading as garbage.

    save_checkpoint("out/last", model, optimizer, train_state={"step": 100}, tokenizer_path="tok.json")
    checkpoint = load_checkpoint("out/last")
    model = checkpoint.build_model()            # a Transformer of the saved config, weights loaded
    tokenizer = checkpoint.load_tokenizer()
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from .backends import get_backend
from .fileio import atomic_write, read_versioned_json, sha256_bytes
from .models import ModelConfig, Transformer
from .optim import Optimizer

FORMAT_NAME = "tinyllm-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "checkpoint.json"
_CONTENT_FILE = re.compile(r"^(model|optimizer|tokenizer)-[0-9a-f]{16}\.(safetensors|json)$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, or does not fit the model it is loaded into."""


class CheckpointSaveError(OSError):
    """Saving failed (disk full, ...); the directory still holds the previous complete checkpoint, if there was one."""

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` read, with every file's size and hash verified.

    ``optimizer_state`` has the form of ``Optimizer.state_dict()`` (None when not loaded or not saved).
    ``train_state`` is whatever the training loop saved (step, RNG state, best val loss, ...).
    """

    directory: Path
    model_config: ModelConfig
    model_state: dict[str, np.ndarray]
    optimizer_state: dict[str, Any] | None = None
    train_state: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    tokenizer_path: Path | None = None

    def training_state(self) -> dict[str, Any]:
        """``train_state`` after checking it holds what resuming needs (``step``); else ``CheckpointError``."""
        step = self.train_state.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise CheckpointError(
                f"{self.directory / MANIFEST} has no training step (train_state.step is {step!r}): it holds a model "
                f"but not a training run, so training cannot resume from it. Use the other checkpoint (best/ or last/), "
                f"or start a new run"
            )
        return self.train_state

    def build_model(self) -> Transformer:
        """A ``Transformer`` of the saved config with the saved weights, in eval mode."""
        model = Transformer(self.model_config)
        restore(self, model)
        return model.eval()

    def load_tokenizer(self):  # noqa: ANN201 - a BPETokenizer (imported lazily)
        """The tokenizer saved with the checkpoint (``CheckpointError`` if none was)."""
        from .tokenizer import load_tokenizer

        if self.tokenizer_path is None:
            raise CheckpointError(f"{self.directory} was saved without a tokenizer; pass the tokenizer file yourself")
        return load_tokenizer(self.tokenizer_path)


# ---------------------------------------------------------------- saving


def save_checkpoint(
    directory: str | os.PathLike,
    model: Transformer,
    optimizer: Optimizer | None = None,
    *,
    train_state: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    tokenizer_path: str | os.PathLike | None = None,
) -> Path:
    """Save model, optimizer and state into ``directory`` (created if needed), replacing what it held atomically.

    ``train_state`` and ``train_config`` must be JSON-serialisable. Returns the manifest's path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    existed = {path.name for path in directory.iterdir()}
    try:
        return _save(directory, model, optimizer, train_state, train_config, tokenizer_path)
    except OSError as error:  # a full disk, a lost mount, no permission: the manifest still names the old files
        named = _names_in_manifest(directory)
        for path in directory.iterdir():  # remove the new files this save wrote; the manifest's files stay
            if _CONTENT_FILE.match(path.name) and path.name not in existed and path.name not in named:
                path.unlink(missing_ok=True)
        kept = (f"The previous checkpoint in {directory} is intact and still loads"
                if MANIFEST in existed else f"No earlier checkpoint was in {directory}")
        raise CheckpointSaveError(
            error.errno, f"could not save the checkpoint to {directory} ({error.strerror or error}). {kept}; "
            f"free some space (or fix the problem) and run again (--resume continues from the last complete checkpoint)"
        ) from error


def _names_in_manifest(directory: Path) -> set[str]:
    """The file names the manifest on disk refers to (empty if it cannot be read)."""
    try:
        files = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))["files"]
        return {entry["name"] for entry in files.values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def _save(
    directory: Path,
    model: Transformer,
    optimizer: Optimizer | None,
    train_state: dict[str, Any] | None,
    train_config: dict[str, Any] | None,
    tokenizer_path: str | os.PathLike | None,
) -> Path:
    """The three steps of ``save_checkpoint`` (content files, manifest, clean-up), which may raise ``OSError``."""
    backend = get_backend()
    files: dict[str, dict[str, Any]] = {}

    model_arrays = {name: np.ascontiguousarray(backend.to_host(a)) for name, a in model.state_dict().items()}
    files["model"] = _write_content_file(directory, "model", ".safetensors", safetensors.numpy.save(model_arrays))

    optimizer_json = None
    if optimizer is not None:
        state = optimizer.state_dict()
        optimizer_arrays = {
            f"state.{i}.{name}": np.ascontiguousarray(backend.to_host(array))
            for i, values in state["state"].items()
            for name, array in values.items()
        }
        optimizer_json = {"step": state["step"], "param_groups": state["param_groups"]}
        files["optimizer"] = _write_content_file(
            directory, "optimizer", ".safetensors", safetensors.numpy.save(optimizer_arrays)
        )
    if tokenizer_path is not None:
        files["tokenizer"] = _write_content_file(directory, "tokenizer", ".json", Path(tokenizer_path).read_bytes())

    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "optimizer": optimizer_json,
        "train_state": train_state or {},
        "train_config": train_config or {},
        "files": files,
    }
    manifest_path = directory / MANIFEST
    atomic_write(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())  # the switch

    keep = {entry["name"] for entry in files.values()}
    for path in directory.iterdir():
        if _CONTENT_FILE.match(path.name) and path.name not in keep:
            path.unlink()
    return manifest_path


def _write_content_file(directory: Path, role: str, suffix: str, data: bytes) -> dict[str, Any]:
    """Write ``data`` as ``{role}-{hash}{suffix}`` and return its manifest entry (name, bytes, sha256)."""
    digest = sha256_bytes(data)
    name = f"{role}-{digest[:16]}{suffix}"
    atomic_write(directory / name, data)
    return {"name": name, "bytes": len(data), "sha256": digest}


# ---------------------------------------------------------------- loading


def load_checkpoint(directory: str | os.PathLike, load_optimizer: bool = True) -> Checkpoint:
    """Read and verify the checkpoint in ``directory``; raise ``CheckpointError`` saying what is wrong and what to do."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        what = "does not exist" if not directory.exists() else f"has no {MANIFEST}"
        raise CheckpointError(
            f"no checkpoint at {directory}: the directory {what}. Check the path (the training example writes "
            f"out/shakespeare/last and out/shakespeare/best), or train first."
        )
    manifest = read_versioned_json(
        manifest_path, FORMAT_NAME, FORMAT_VERSION, "checkpoint manifest", CheckpointError,
        fix="Use the other checkpoint (best/ or last/) or train again.",
    )
    _check_manifest(manifest, manifest_path)
    files = manifest["files"]
    model_state = _read_safetensors(directory, files["model"])
    optimizer_state = None
    if load_optimizer and manifest.get("optimizer") is not None:
        arrays = _read_safetensors(directory, files["optimizer"])
        per_param: dict[int, dict[str, np.ndarray]] = {}
        for key, array in arrays.items():
            _, index, name = key.split(".", 2)  # "state.{i}.{name}"
            per_param.setdefault(int(index), {})[name] = array
        groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in manifest["optimizer"]["param_groups"]]
        optimizer_state = {"step": manifest["optimizer"]["step"], "param_groups": groups, "state": per_param}
    tokenizer_path = None
    if "tokenizer" in files:
        tokenizer_path = directory / files["tokenizer"]["name"]
        _read_verified(directory, files["tokenizer"])
    return Checkpoint(
        directory=directory,
        model_config=ModelConfig.from_dict(manifest["model_config"]),
        model_state=model_state,
        optimizer_state=optimizer_state,
        train_state=manifest.get("train_state", {}),
        train_config=manifest.get("train_config", {}),
        tokenizer_path=tokenizer_path,
    )


def _check_manifest(manifest: dict[str, Any], path: Path) -> None:
    """A ``CheckpointError`` naming what is missing, instead of a ``KeyError`` deep in the loader."""
    problems = []
    files = manifest.get("files")
    if not isinstance(files, dict):
        problems.append('no "files" object')
    else:
        wanted = ["model"] + (["optimizer"] if manifest.get("optimizer") is not None else [])
        for role in wanted:
            entry = files.get(role)
            if not isinstance(entry, dict) or not {"name", "bytes", "sha256"} <= entry.keys():
                problems.append(f'no complete "files.{role}" entry (name, bytes, sha256)')
    if not isinstance(manifest.get("model_config"), dict):
        problems.append('no "model_config" object')
    if problems:
        raise CheckpointError(
            f"{path} is incomplete: {'; '.join(problems)} (edited by hand, or written by another program). "
            f"Use the other checkpoint (best/ or last/) or train again."
        )


def restore(checkpoint: Checkpoint, model: Transformer, optimizer: Optimizer | None = None) -> None:
    """Copy the checkpoint's weights (and optimizer state) into ``model`` (and ``optimizer``).

    The model must have been built with the same config; otherwise the error lists the
    differences and how to build the right model.
    """
    saved, current = checkpoint.model_config.to_dict(), model.config.to_dict()
    differences = [
        f"{key}: checkpoint {saved[key]!r}, model {current[key]!r}"
        for key in saved
        if key != "extra" and saved[key] != current[key]  # "extra" holds free-form notes only
    ]
    if differences:
        raise CheckpointError(
            f"the checkpoint in {checkpoint.directory} was saved from a model with a different config "
            f"({'; '.join(differences)}). Build the model from the checkpoint's own config, "
            f"Transformer(load_checkpoint(path).model_config) or load_checkpoint(path).build_model(), or "
            f"start a new run in another output directory."
        )
    model.load_state_dict(checkpoint.model_state)
    if optimizer is not None:
        if checkpoint.optimizer_state is None:
            raise CheckpointError(
                f"{checkpoint.directory} holds no optimizer state (saved without one, or loaded with "
                f"load_optimizer=False), so training cannot resume from it"
            )
        optimizer.load_state_dict(checkpoint.optimizer_state)


def load_model(directory: str | os.PathLike) -> Transformer:
    """Shorthand: the model of the checkpoint in ``directory``, ready for inference (eval mode)."""
    return load_checkpoint(directory, load_optimizer=False).build_model()


def _read_verified(directory: Path, entry: dict[str, Any]) -> bytes:
    """The bytes of a file named in the manifest, after checking its size and SHA-256."""
    path = directory / entry["name"]
    if not path.exists():
        raise CheckpointError(
            f"{path} is missing, though {directory / MANIFEST} names it. The checkpoint is incomplete: "
            f"use the other checkpoint (best/ or last/) or train again."
        )
    data = path.read_bytes()
    if len(data) != entry["bytes"] or sha256_bytes(data) != entry["sha256"]:
        problem = f"has {len(data)} bytes, expected {entry['bytes']}" if len(data) != entry["bytes"] else (
            f"has the right size but SHA-256 {sha256_bytes(data)[:16]}..., expected {entry['sha256'][:16]}..."
        )
        raise CheckpointError(
            f"{path} is damaged: it {problem} (truncated or changed after it was saved). Use the other "
            f"checkpoint (best/ or last/), or train again (--resume continues from last/ if that one is intact)."
        )
    return data


def _read_safetensors(directory: Path, entry: dict[str, Any]) -> dict[str, np.ndarray]:
    data = _read_verified(directory, entry)
    try:
        return safetensors.numpy.load(data)
    except Exception as error:  # the hash matched, so the file was written like this
        raise CheckpointError(f"{directory / entry['name']} is not a readable safetensors file ({error})") from None
