"""Checkpoints: everything a run needs to continue exactly, in one safetensors file.

Layout of `ckpt.safetensors` (read and written by gpt/safetensors.py, never pickle):
  tensors   model.<parameter name>            the weights (float32)
            optim.<index>.<exp_avg|exp_avg_sq> AdamW's moments, by parameter order
  metadata  format        "nanograd-gpt-checkpoint/1"
            model_config  GPTConfig as JSON
            tokenizer     the tokenizer's own JSON (gpt.tokenizer)
            optimizer     hyperparameters and step counts as JSON
            train_state   iteration, best val loss, RNG states, the training config, as JSON
The file is written atomically (temporary file, fsync, rename), so an interrupted write
leaves the previous checkpoint intact.

Left out: sharded checkpoints, keeping several checkpoints per run.
"""
import dataclasses
import json
import os
from typing import NamedTuple

from nanograd import backend

from .model import GPT, GPTConfig
from .safetensors import SafetensorsError, load_file, load_metadata, save_file
from .tokenizer import load_tokenizer_json

FORMAT = "nanograd-gpt-checkpoint/1"
FILENAME = "ckpt.safetensors"


class CheckpointError(ValueError):
    """A missing, corrupt or mismatched checkpoint; the message names the file."""


class Checkpoint(NamedTuple):
    model_config: GPTConfig
    model_state: dict        # name -> array
    tokenizer: object
    optimizer_state: dict    # as Optimizer.state_dict(), or None
    train_state: dict        # whatever train.py saved


def save_checkpoint(path, model, tokenizer, optimizer=None, train_state=None):
    """Write model, tokenizer, optimizer state and `train_state` (JSON-able) to `path` atomically."""
    tensors = {f"model.{k}": backend.to_device(v, "cpu") for k, v in model.state_dict().items()}
    optim_meta = None
    if optimizer is not None:
        state = optimizer.state_dict()
        steps = {}
        for i, s in state["state"].items():
            steps[i] = s["step"]
            tensors.update({f"optim.{i}.{k}": backend.to_device(v, "cpu") for k, v in s.items() if k != "step"})
        optim_meta = {"param_groups": state["param_groups"], "steps": steps}
    metadata = {
        "format": FORMAT,
        "model_config": json.dumps(dataclasses.asdict(model.config)),
        "tokenizer": tokenizer.to_json(),
        "optimizer": json.dumps(optim_meta),
        "train_state": json.dumps(train_state or {}),
    }
    save_file(tensors, path, metadata=metadata)


def load_checkpoint(path):
    """Read a checkpoint written by save_checkpoint; raises CheckpointError naming what is wrong."""
    if os.path.isdir(path):
        path = os.path.join(path, FILENAME)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}: train one with `python train.py` "
                              "or point --out_dir at a run directory")
    try:
        tensors, meta = load_file(path), load_metadata(path)
    except SafetensorsError as e:
        raise CheckpointError(f"corrupt checkpoint: {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a nanograd-gpt checkpoint (format {meta.get('format')!r}, "
                              f"expected {FORMAT!r})")
    try:
        config = GPTConfig(**json.loads(meta["model_config"]))
        optim_meta = json.loads(meta["optimizer"])
        train_state = json.loads(meta["train_state"])
        tokenizer = load_tokenizer_json(meta["tokenizer"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable metadata ({e})") from None
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    return Checkpoint(config, model_state, tokenizer, _optimizer_state(tensors, optim_meta), train_state)


def _optimizer_state(tensors, optim_meta):
    """Rebuild Optimizer.state_dict() form from the optim.* tensors and the JSON metadata."""
    if optim_meta is None:
        return None
    state = {int(i): {"step": step} for i, step in optim_meta["steps"].items()}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            state[int(i)][name] = value
    return {"param_groups": optim_meta["param_groups"], "state": state}


def load_model(path, device="cpu"):
    """(model in eval mode on `device`, tokenizer, Checkpoint) from a checkpoint file or run dir."""
    ckpt = load_checkpoint(path)
    model = GPT(ckpt.model_config)
    try:
        model.load_state_dict(ckpt.model_state)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: {e.args[0]}") from None
    return model.to(device).eval(), ckpt.tokenizer, ckpt
