"""Loaders against corrupt and hostile files: seeded mutations of real checkpoints, tokenizer
files and GPT-2 directories.

Each mutation rewrites the 8-byte header length, the safetensors header JSON, a metadata
JSON field (model config, tokenizer, optimizer, train state), or the raw bytes of a real
file; loading the result must either succeed or raise the project's own error with a
one-line message, never another exception, and must never allocate much more than the
file holds (tracemalloc's peak, which counts NumPy's buffers, against the file's size).
"""
import json
import os
import random
import shutil
import struct
import tracemalloc

import numpy as np
import pytest

import nanograd as ng
from gpt import hf
from gpt.checkpoint import (CheckpointError, load_checkpoint, load_model, optimizer_shapes, parameter_shapes,
                            save_checkpoint)
from gpt.safetensors import SafetensorsError
from gpt.tokenizer import BPETokenizer, CharTokenizer, SymbolTokenizer, TokenizerError, load_tokenizer
from tiny import tiny_model  # noqa: E402

OURS = (CheckpointError, SafetensorsError, TokenizerError, hf.HFError)
CASES = 80  # mutations per kind of file; a few seconds in all
TEXT = "".join(f"Line {i}: to be, or not to be, that is the question.\n" for i in range(20))
EVIL = [None, True, False, 0, -1, 1, 3, 2**31, 10**12, 2**64, 1.5, -0.0, float("nan"), float("inf"), "", "x",
        "F32", "1x2", [], [0], [1, 2], [-1, 5], [[]], {}, {"a": 1}, "a" * 300, list(range(70))]
DEEP = "[" * 100_000 + "]" * 100_000


# ---- the real files ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{kind: path} of a checkpoint with optimizer and train state, tokenizer files, a GPT-2 dir."""
    root = tmp_path_factory.mktemp("real")
    char, bpe = CharTokenizer.train(TEXT), BPETokenizer.train(TEXT, 280)
    model = tiny_model(vocab_size=bpe.vocab_size)
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99))
    ids = np.array([bpe.encode(TEXT)[:9]])
    _, loss = model(ng.Tensor(ids[:, :-1]), ng.Tensor(ids[:, 1:]))
    loss.backward()
    optimizer.step()
    rng = np.random.default_rng(0)
    train_state = {"iter_num": 1, "best_val_loss": 5.5, "last_eval": 0, "data_rng": rng.bit_generator.state,
                   "nanograd_rng": ng.get_rng_state(), "config": {"batch_size": 1},
                   "rank_rngs": [ng.get_rng_state()] * 2}
    save_checkpoint(str(root / "ckpt.safetensors"), model, bpe, optimizer, train_state)
    char.save(root / "char.json")
    bpe.save(root / "bpe.json")
    SymbolTokenizer([str(i) for i in range(13)] + ["="]).save(root / "symbols.json")
    hf.save(model, bpe, str(root / "gpt2"))
    return root


def load_within_memory(load, path, size):
    """Run load(path): it must succeed or raise one of OURS in one line, peaking under ~4x the file."""
    tracemalloc.start()
    try:
        load(path)
    except OURS as e:
        message = str(e)
        assert message and "\n" not in message, repr(message)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 4 * size + 2_000_000, f"{peak} bytes allocated to load a {size}-byte file"


# ---- mutations -----------------------------------------------------------------------------
def mutate_json(value, rng):
    """A copy of a JSON value with one node replaced by an evil value, removed, or added to."""
    if isinstance(value, (dict, list)) and value and rng.random() < 0.7:
        keys = list(value) if isinstance(value, dict) else list(range(len(value)))
        key = rng.choice(keys)
        copy = dict(value) if isinstance(value, dict) else list(value)
        roll = rng.random()
        if roll < 0.15:
            del copy[key]
        elif roll < 0.25 and isinstance(copy, dict):
            copy[rng.choice(["params", "x", "step", "0", "99"])] = rng.choice(EVIL)
        else:
            copy[key] = mutate_json(copy[key], rng)
        return copy
    return rng.choice(EVIL)


def split_safetensors(data):
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def join_safetensors(header, body, rng):
    raw = DEEP.encode() if rng.random() < 0.02 else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def mutate_bytes(data, rng):
    """Flips, a truncation, appended bytes, or a rewritten 8-byte header length."""
    data = bytearray(data)
    roll = rng.random()
    if roll < 0.2:
        return bytes(data[:rng.randrange(len(data))])
    if roll < 0.3:
        return bytes(data) + rng.randbytes(rng.randrange(1, 64))
    if roll < 0.45:
        n = rng.choice([0, 1, 7, 2**20, 2**40, 2**64 - 1, struct.unpack("<Q", data[:8])[0] + rng.randrange(-9, 9)])
        return struct.pack("<Q", max(0, min(n, 2**64 - 1))) + bytes(data[8:])
    for _ in range(rng.randrange(1, 5)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def mutate_header(data, rng):
    """One tensor entry's dtype, shape or offsets made evil, or an entry dropped, renamed or added."""
    header, body = split_safetensors(data)
    names = [k for k in header if k != "__metadata__"]
    name, roll = rng.choice(names), rng.random()
    if roll < 0.1:
        del header[name]
    elif roll < 0.2:
        header[name.replace("weight", "w") if "weight" in name else name + "x"] = header.pop(name)
    elif roll < 0.3:
        header["extra"] = {"dtype": "F32", "shape": [rng.choice([0, 1, 2**40])], "data_offsets": [0, 4]}
    else:
        header[name] = mutate_json(header[name], rng)
    return join_safetensors(header, body, rng)


def mutate_metadata(data, rng):
    """One metadata field's JSON mutated inside, or replaced by garbage."""
    header, body = split_safetensors(data)
    meta = header["__metadata__"]
    key = rng.choice(sorted(meta))
    if key == "format" or rng.random() < 0.1:
        meta[key] = rng.choice(["", "{", "null", "[]", "1" * 5000, DEEP, json.dumps(rng.choice(EVIL))])
    else:
        meta[key] = json.dumps(mutate_json(json.loads(meta[key]), rng))
    return join_safetensors(header, body, rng)


MUTATIONS = [mutate_bytes, mutate_header, mutate_metadata]


# ---- the tests -----------------------------------------------------------------------------
@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.__name__)
def test_corrupt_checkpoints_raise_checkpoint_errors(files, tmp_path, mutation):
    rng, original = random.Random(mutation.__name__), (files / "ckpt.safetensors").read_bytes()
    path = tmp_path / "ckpt.safetensors"
    for _ in range(CASES):
        path.write_bytes(mutation(original, rng))
        load_within_memory(load_model, str(path), len(original))


@pytest.mark.parametrize("name", ["char.json", "bpe.json", "symbols.json"])
def test_corrupt_tokenizer_files_raise_tokenizer_errors(files, tmp_path, name):
    rng, original = random.Random(name), (files / name).read_bytes()
    path = tmp_path / name
    for _ in range(CASES):
        if rng.random() < 0.5:
            path.write_bytes(mutate_bytes(original, rng))
        else:
            path.write_text(json.dumps(mutate_json(json.loads(original), rng)))
        load_within_memory(load_tokenizer, path, len(original))


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "vocab.json", "merges.txt"])
def test_corrupt_gpt2_directories_raise_hf_errors(files, tmp_path, name):
    rng, directory = random.Random(name), tmp_path / "gpt2"
    shutil.copytree(files / "gpt2", directory)
    original = (files / "gpt2" / name).read_bytes()
    size = sum(os.path.getsize(p) for p in directory.iterdir())
    for _ in range(CASES // 2):
        if name == "model.safetensors":
            data = rng.choice([mutate_bytes, mutate_header])(original, rng)
        elif name.endswith(".json") and rng.random() < 0.7:
            data = json.dumps(mutate_json(json.loads(original), rng)).encode()
        else:
            data = mutate_bytes(original, rng)
        (directory / name).write_bytes(data)
        load_within_memory(hf.load, str(directory), size)


# ---- targeted cases ------------------------------------------------------------------------
def rewrite_metadata(src, dst, **fields):
    header, body = split_safetensors(src.read_bytes())
    header["__metadata__"].update(fields)
    dst.write_bytes(join_safetensors(header, body, random.Random(0)))


@pytest.mark.parametrize("fields, message", [
    (dict(optimizer='{"steps": 3}'), "optimizer must be null or an object with exactly param_groups and steps"),
    (dict(model_config='{"block_size": 8, "vocab_size": 11, "n_layer": 2, "n_head": 2, "n_embd": 8, '
                       '"dropout": 0.0, "bias": "yes"}'), "model_config.bias is 'yes', expected bool"),
    (dict(model_config='{"block_size": 8, "vocab_size": 280, "n_layer": 2, "n_head": 2, "n_embd": 800000, '
                       '"dropout": 0.0, "bias": true}'), "the model config needs floating point (280, 800000)"),
    (dict(train_state='{"iter_num": -1}'), "train_state lacks"),
])
def test_wrong_shaped_metadata_is_a_one_line_checkpoint_error(files, tmp_path, fields, message):
    path = tmp_path / "ckpt.safetensors"
    rewrite_metadata(files / "ckpt.safetensors", path, **fields)
    with pytest.raises(CheckpointError, match="corrupt checkpoint") as e:
        load_model(str(path))
    assert message in str(e.value)


def test_resume_needs_the_training_state(tmp_path):
    path = str(tmp_path / "ckpt.safetensors")
    save_checkpoint(path, tiny_model(vocab_size=70), CharTokenizer.train(TEXT))  # for inference only
    assert load_checkpoint(path).optimizer_state is None
    with pytest.raises(CheckpointError, match="no optimizer or training state to resume from"):
        load_checkpoint(path, resume=True)


@pytest.mark.parametrize("options", [dict(bias=True), dict(bias=False), dict(attn_only=True),
                                     dict(tie_embeddings=False)])
def test_parameter_shapes_are_the_models(options):
    model = tiny_model(**options)
    assert parameter_shapes(model.config) == {name: p.shape for name, p in model.named_parameters()}
    assert list(parameter_shapes(model.config)) == [name for name, _ in model.named_parameters()]
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99))
    assert optimizer_shapes(model.config) == [p.shape for p in optimizer.params()]


@pytest.mark.parametrize("claims", [dict(n_embd=2**20, n_head=1), dict(n_layer=10**9)])
def test_a_config_claiming_a_huge_model_allocates_nothing(files, tmp_path, claims):
    directory = tmp_path / "gpt2"
    shutil.copytree(files / "gpt2", directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **claims}))
    tracemalloc.start()
    with pytest.raises(hf.HFError, match="the model config"):
        hf.load(str(directory))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2_000_000
