"""The Fourier view of a model trained on modular arithmetic (Nanda et al., 2023).

A model that has grokked (a + b) mod p adds by rotation: it embeds each residue a as
cos(2 pi k a / p) and sin(2 pi k a / p) for a few "key" frequencies k, and composes the
rotations with trigonometric identities. The signature is in the token embedding: write its
p residue rows (p, C) in the Fourier basis over the residues and almost all of the norm sits
in a handful of frequencies, where at initialization it is spread evenly over all p // 2.

    E = residue_embedding(model, p)           # (p, C): rows 0..p-1 of wte ("=" left out)
    power = frequency_power(E)                # (p // 2 + 1,): squared norm per frequency 0..p // 2
    keys = key_frequencies(power)             # e.g. [4, 17, 31, 40]
    concentration(power, keys)                # e.g. 0.93: their share of the squared norm
    ablated_accuracies(model, task, keys)     # (restricted, excluded) validation accuracy

The restricted and excluded accuracies are Nanda et al.'s restricted and excluded losses,
measured as accuracy and taken on the embedding: validation accuracy with the embedding
projected onto the key frequencies only (the circuit alone still adds), and with them removed
(without them nothing is left that generalizes). GPT-2 ties the unembedding to the embedding,
so the projection acts on both the reading of a and b and the writing of the answer.

Left out: Nanda et al.'s projections of the logits and of the MLP neurons, and the 2-D
Fourier basis over (a, b); the embedding alone shows the circuit's frequencies.
"""
import contextlib

import numpy as np

import nanograd as ng
from nanograd import backend

from .model import GPT

KEY_SHARE = 2.0  # a frequency is key when its power exceeds KEY_SHARE x the mean over frequencies 1..p // 2


def fourier_basis(p):
    """(p, p) orthonormal basis of functions on the residues 0..p-1, one per row.

    Row 0 is the constant 1/sqrt(p); then cos(2 pi k a / p) and sin(2 pi k a / p) for
    k = 1, 2, ..., each scaled to unit norm; for even p the last row is cos(pi a),
    whose sine is zero. basis_frequencies(p) gives each row's k.
    """
    a = np.arange(p)
    rows = [np.full(p, 1.0)]
    for k in range(1, p // 2 + 1):
        rows.append(np.cos(2 * np.pi * k * a / p))
        if 2 * k != p:
            rows.append(np.sin(2 * np.pi * k * a / p))
    basis = np.stack(rows)                                  # (p, p)
    return basis / np.linalg.norm(basis, axis=1, keepdims=True)


def basis_frequencies(p):
    """(p,) int: the frequency k of each row of fourier_basis(p): 0, 1, 1, 2, 2, ..."""
    return np.array([0] + [k for k in range(1, p // 2 + 1) for _ in range(1 if 2 * k == p else 2)])


def frequency_power(embedding):
    """(p // 2 + 1,) float64: the squared norm of `embedding` (p, C) at each frequency 0..p // 2.

    The embedding's columns are functions of the residue; their Fourier coefficients are
    fourier_basis(p) @ embedding (p, C), and a frequency's power sums its cos and sin rows
    over all C columns. The basis is orthonormal, so the powers add up to the squared
    Frobenius norm of the embedding (Parseval).
    """
    embedding = np.asarray(embedding, dtype=np.float64)
    p = embedding.shape[0]
    coefficients = fourier_basis(p) @ embedding              # (p, p) @ (p, C) -> (p, C)
    return np.bincount(basis_frequencies(p), weights=(coefficients ** 2).sum(axis=1), minlength=p // 2 + 1)


def key_frequencies(power, share=KEY_SHARE):
    """The key frequencies, ascending: those k >= 1 whose power exceeds `share` x the mean power
    over k = 1..p // 2 (twice its fair share by default).

    A random embedding spreads its power about evenly (each frequency within a few tens of
    percent of the mean for C = 128 columns), so none passes; a grokked one puts nearly all
    of it into a few frequencies, which pass by far. Frequency 0, the mean row, carries no
    information about the residue and is never key.
    """
    power = np.asarray(power, dtype=np.float64)
    waves = power[1:]
    return [int(k) + 1 for k in np.flatnonzero(waves > share * waves.mean())]


def concentration(power, keys):
    """The share of the total power (all frequencies, 0 included) held by the frequencies `keys`."""
    power = np.asarray(power, dtype=np.float64)
    return float(power[list(keys)].sum() / power.sum()) if power.sum() > 0 else 0.0


def project(embedding, keys, keep=True):
    """(p, C): `embedding` (p, C) with only the frequencies `keys` (keep=True) or all but them.

    The constant (frequency 0) is kept either way: it is the same vector for every residue,
    so it says nothing about which residue a row stands for.
    """
    embedding = np.asarray(embedding, dtype=np.float64)
    p = embedding.shape[0]
    basis = fourier_basis(p)
    chosen = np.isin(basis_frequencies(p), list(keys))
    rows = (chosen if keep else ~chosen) | (basis_frequencies(p) == 0)
    return basis[rows].T @ (basis[rows] @ embedding)        # (p, r) @ (r, p) @ (p, C) -> (p, C)


def residue_embedding(model, p):
    """(p, C) float64: the token embedding's rows for the residues 0..p-1 (the "=" row p left out)."""
    return backend.to_device(model.transformer.wte.weight.data[:p], "cpu").astype(np.float64)


@contextlib.contextmanager
def replaced_residue_rows(model, rows):
    """Within the block, rows 0..p-1 of the model's token embedding are `rows` (p, C); restored after."""
    weight = model.transformer.wte.weight
    saved = weight.data
    data = backend.to_device(saved, "cpu").copy()
    data[:len(rows)] = rows
    weight.data = backend.to_device(data.astype(saved.dtype), backend.device_of(saved))
    try:
        yield model
    finally:
        weight.data = saved


def ablated_accuracies(model, task, keys):
    """(restricted, excluded): validation accuracy with the residue embedding projected onto
    the frequencies `keys` only, and with them removed (project)."""
    embedding = residue_embedding(model, task.p)
    accuracy = []
    for keep in (True, False):
        with replaced_residue_rows(model, project(embedding, keys, keep)):
            accuracy.append(task.accuracy(model, "val"))
    return tuple(accuracy)


def initial_model(model_config, seed):
    """The model a run with this config and seed starts from, before any step (train.py seeds
    nanograd's generator with the run's seed just before building it). The generator's state
    is restored afterwards, so calling this disturbs nothing."""
    state = ng.get_rng_state()
    try:
        ng.manual_seed(seed)
        return GPT(model_config)
    finally:
        ng.set_rng_state(state)


def analyse(model, task, seed):
    """Everything the Fourier view reports on `model` trained on `task` (a ModularArithmetic)
    from `seed`, as a dict:
    power per frequency at init and now, key frequencies (from now), their share at init and now,
    and the restricted and excluded validation accuracies."""
    power = frequency_power(residue_embedding(model, task.p))
    power_init = frequency_power(residue_embedding(initial_model(model.config, seed), task.p))
    keys = key_frequencies(power)
    restricted, excluded = ablated_accuracies(model, task, keys)
    return {"power_init": power_init.tolist(), "power": power.tolist(), "key_frequencies": keys,
            "fourier_concentration_init": concentration(power_init, keys),
            "fourier_concentration": concentration(power, keys),
            "val_acc_restricted": restricted, "val_acc_excluded": excluded}
