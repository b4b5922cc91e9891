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

Loading trusts nothing in the file: every metadata field is checked for its shape and types,
and every tensor for its name, dtype and shape against the model config (`check_state`),
before anything is built from them, so a corrupt or hostile file ends in one CheckpointError
naming what is wrong, and no model is built larger than the weights the file holds.

Left out: sharded checkpoints, keeping several checkpoints per run.
"""
import dataclasses
import json
import os
from typing import NamedTuple

import numpy as np

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


def load_checkpoint(path, resume=False):
    """Read a checkpoint written by save_checkpoint; raises CheckpointError naming what is wrong.

    With `resume`, the optimizer state and train.py's train_state must be there too.
    """
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
        raise CheckpointError(f"{path} is not a nanograd-gpt checkpoint (format {meta.get('format')!r:.80}, "
                              f"expected {FORMAT!r})")
    try:
        config = _model_config(_json_field(meta, "model_config"))
        model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        check_state(model_state, config)
        tokenizer = load_tokenizer_json(_field(meta, "tokenizer"), "tokenizer")
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model {config.vocab_size}")
        optimizer_state = _optimizer_state(tensors, _json_field(meta, "optimizer"), config)
        train_state = _train_state(_json_field(meta, "train_state"))
        if resume and (optimizer_state is None or not train_state):
            raise ValueError("it holds no optimizer or training state to resume from (saved for inference only?)")
    except ValueError as e:  # TokenizerError included
        raise CheckpointError(f"corrupt checkpoint {path}: {e}") from None
    return Checkpoint(config, model_state, tokenizer, optimizer_state, train_state)


def _field(meta, key):
    if key not in meta:
        raise ValueError(f"the metadata has no {key!r}")
    return meta[key]


def _json_field(meta, key):
    """The metadata string `key` parsed as JSON."""
    try:
        return json.loads(_field(meta, key))
    except (ValueError, RecursionError) as e:  # bad JSON, an integer of 4300+ digits, deep nesting
        raise ValueError(f"{key} is not valid JSON ({type(e).__name__}: {e})") from None


# GPTConfig fields that older checkpoints lack, with their value then
ADDED_CONFIG_FIELDS = {"attn_only": False, "tie_embeddings": True, "embedding_init_std": 0.02}


def _model_config(d):
    """GPTConfig from its JSON object, each field of its declared type."""
    fields = {f.name: f.type for f in dataclasses.fields(GPTConfig)}
    if isinstance(d, dict):
        d = {**ADDED_CONFIG_FIELDS, **d}
    if not isinstance(d, dict) or set(d) != set(fields):
        raise ValueError(f"model_config must be an object with exactly {', '.join(fields)}")
    for name, kind in fields.items():
        if not _is(d[name], {"int": int, "float": float, "bool": bool}.get(kind, kind)):
            raise ValueError(f"model_config.{name} is {d[name]!r:.80}, expected {getattr(kind, '__name__', kind)}")
    return GPTConfig(**d)  # its own checks: sizes >= 1, n_embd divisible by n_head, dropout in [0, 1)


def _is(value, kind):
    """isinstance for JSON values: a bool is not an int, an int is a float."""
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    return isinstance(value, (int, float) if kind is float else kind)


def parameter_shapes(config):
    """{name: shape} of GPT(config)'s parameters, in named_parameters() order, without building it.

    Mirrors gpt/model.py (tests check that they agree); loaders compare a file's tensors
    against it before allocating a model.
    """
    e, shapes = config.n_embd, {}

    def linear(name, n_in, n_out):
        shapes[f"{name}.weight"] = (n_out, n_in)
        if config.bias:
            shapes[f"{name}.bias"] = (n_out,)

    def layer_norm(name):
        shapes[f"{name}.weight"] = (e,)
        if config.bias:
            shapes[f"{name}.bias"] = (e,)

    shapes["transformer.wte.weight"] = (config.vocab_size, e)
    shapes["transformer.wpe.weight"] = (config.block_size, e)
    for i in range(config.n_layer):
        block = f"transformer.h.{i}"
        layer_norm(f"{block}.ln_1")
        linear(f"{block}.attn.c_attn", e, 3 * e)
        linear(f"{block}.attn.c_proj", e, e)
        if config.attn_only:
            continue
        layer_norm(f"{block}.ln_2")
        linear(f"{block}.mlp.c_fc", e, 4 * e)
        linear(f"{block}.mlp.c_proj", 4 * e, e)
    layer_norm("transformer.ln_f")
    if not config.tie_embeddings:
        shapes["unembed.weight"] = (config.vocab_size, e)
    return shapes


def check_state(state, config):
    """ValueError unless `state` {name: array} holds exactly GPT(config)'s parameters: names, shapes, floats."""
    if config.n_layer > len(state):  # each layer has several tensors: a cheap bound before listing them
        raise ValueError(f"the model config has n_layer={config.n_layer} but there are {len(state)} tensors")
    shapes = parameter_shapes(config)
    missing, unexpected = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
    if missing or unexpected:
        raise ValueError(f"the weights do not match the model config: missing {missing[:3] or 'none'}, "
                         f"unexpected {unexpected[:3] or 'none'}")
    for name, shape in shapes.items():
        array = state[name]
        if array.dtype.kind != "f" or tuple(array.shape) != shape:
            raise ValueError(f"tensor {name!r} is {array.dtype} {tuple(array.shape)}, the model config needs "
                             f"floating point {shape}")


def optimizer_shapes(config):
    """The shape of each parameter in the order GPT.configure_optimizers hands them to AdamW:
    the 2-D ones (decayed) first, then the rest."""
    shapes = list(parameter_shapes(config).values())
    return [s for s in shapes if len(s) >= 2] + [s for s in shapes if len(s) < 2]


def _optimizer_state(tensors, optim_meta, config):
    """Optimizer.state_dict() form from the optim.* tensors and the JSON metadata, each part checked."""
    moments = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    if optim_meta is None:
        if moments:
            raise ValueError(f"optimizer is null but there are {len(moments)} optim.* tensors")
        return None
    if not isinstance(optim_meta, dict) or set(optim_meta) != {"param_groups", "steps"}:
        raise ValueError("optimizer must be null or an object with exactly param_groups and steps")
    groups, steps = optim_meta["param_groups"], optim_meta["steps"]
    if not (isinstance(groups, list) and all(isinstance(g, dict) and "params" not in g for g in groups)):
        raise ValueError("optimizer.param_groups must be a list of objects of hyperparameters")
    for group in groups:
        for key, value in group.items():
            numbers = value if isinstance(value, list) else [value]
            if not all(_is(v, float) for v in numbers):
                raise ValueError(f"optimizer hyperparameter {key!r:.40} is {value!r:.80}, expected numbers")
    shapes = optimizer_shapes(config)
    if not isinstance(steps, dict) or not all(k.isdigit() and int(k) < len(shapes) and _is(v, int) and v >= 0
                                              for k, v in steps.items()):
        raise ValueError(f"optimizer.steps must map parameter indices 0..{len(shapes) - 1} to step counts >= 0")
    state = {int(i): {"step": step} for i, step in steps.items()}
    for key, value in moments.items():
        index, _, name = key[len("optim."):].partition(".")
        if not (index.isdigit() and int(index) in state and name and name != "step"):
            raise ValueError(f"tensor {key!r:.80} belongs to no parameter in optimizer.steps")
        if value.dtype.kind != "f" or tuple(value.shape) != shapes[int(index)]:
            raise ValueError(f"tensor {key!r} is {value.dtype} {value.shape}, its parameter is {shapes[int(index)]}")
        state[int(index)][name] = value
    if len({frozenset(s) for s in state.values()}) > 1:
        raise ValueError("optimizer state: the parameters do not all have the same moments")
    return {"param_groups": groups, "state": state}


def _is_rng_state(state):
    """True if a fresh generator of `state`'s kind accepts it (as train.py will on resume)."""
    try:
        np.random.default_rng().bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError):
        return False
    return True


# train.py's train_state: key -> (check, what it must be); a checkpoint holds all of them or none,
# and may hold the optional ones.
TRAIN_STATE = {
    "iter_num": (lambda v: _is(v, int) and v >= 0, "an integer >= 0"),
    "best_val_loss": (lambda v: _is(v, float), "a number"),
    "last_eval": (lambda v: _is(v, int) and v >= -1, "an integer >= -1"),
    "data_rng": (_is_rng_state, "a NumPy bit generator state"),
    "nanograd_rng": (_is_rng_state, "a NumPy bit generator state"),
    "config": (lambda v: isinstance(v, dict), "an object"),
}
TRAIN_STATE_OPTIONAL = {
    "rank_rngs": (lambda v: isinstance(v, list) and all(map(_is_rng_state, v)),
                  "a list of NumPy bit generator states, one per rank"),
}


def _train_state(state):
    """train_state checked: an object, {} or holding every TRAIN_STATE key with a value of its kind."""
    if not isinstance(state, dict):
        raise ValueError("train_state must be an object")
    if state and not set(TRAIN_STATE) <= set(state):
        raise ValueError(f"train_state lacks {sorted(set(TRAIN_STATE) - set(state))}")
    for key, (check, kind) in {**TRAIN_STATE, **TRAIN_STATE_OPTIONAL}.items():
        if key in state and not check(state[key]):
            raise ValueError(f"train_state.{key} is {state[key]!r:.80}, expected {kind}")
    return state


def load_model(path, device="cpu"):
    """(model in eval mode on `device`, tokenizer, Checkpoint) from a checkpoint file or run dir."""
    ckpt = load_checkpoint(path)  # checks the state against the config
    model = GPT(ckpt.model_config)
    model.load_state_dict(ckpt.model_state)
    return model.to(device).eval(), ckpt.tokenizer, ckpt
