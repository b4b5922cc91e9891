"""Modular arithmetic, the grokking dataset (Power et al., 2022; Nanda et al., 2023).

Every pair (a, b) of residues mod p is one example, written as the three tokens `a b =`;
the only trained target is the answer c = (a op b) mod p, predicted at "=":

    x = [a, b, p]        token ids 0..p-1 are the residues themselves, p is "="
    y = [-1, -1, c]      -1: no loss on predicting b or "="

op is +, - or / (division multiplies by b's inverse mod p, so p must be prime and b != 0).
The pairs are shuffled by np.random.default_rng(seed) and the first train_fraction of them
are the training set, the rest validation: the same seed always gives the same split.

When the run ends, finish() writes out_dir/grokking.json: when train and val accuracy first
reached 0.99 (from metrics.jsonl), the final accuracies, and the Fourier view of the token
embedding (gpt/fourier.py: key frequencies, their share of the norm at init and at the end,
and the restricted and excluded validation accuracies).

Left out: sequences with an explicit operator token, several operations in one run.
"""
import os

import numpy as np

from .. import fourier
from ..data import DataError
from ..safetensors import write_json
from ..tokenizer import SymbolTokenizer
from . import FiniteTask, read_evaluations

MAX_P = 4096  # p^2 pairs are listed in memory
OPS = {"modular_addition": "+", "modular_subtraction": "-", "modular_division": "/"}
SOLVED = 0.99  # the accuracy that counts as learned in grokking.json


def make(cfg):
    return ModularArithmetic(cfg.dataset, cfg.p, cfg.train_fraction, cfg.seed, cfg.full_batch)


def of_run(train_config):
    """The task a run trained on, from its training config as checkpointed (a dict);
    ValueError naming what it trained on when that was not a modular_* dataset."""
    name = train_config.get("dataset")
    if name not in OPS or train_config.get("data_file"):
        raise ValueError(f"this run trained on {train_config.get('data_file') or name!r}, not on a modular_* "
                         "dataset: the Fourier view needs one (train it with configs/grokking.toml)")
    return ModularArithmetic(name, train_config["p"], train_config["train_fraction"], train_config["seed"])


def is_prime(n):
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def answers(a, b, p, op):
    """(a op b) mod p for integer arrays a, b; op '/' multiplies by b^(p-2) = b^-1 (Fermat, p prime)."""
    if op == "+":
        return (a + b) % p
    if op == "-":
        return (a - b) % p
    inverse = np.array([pow(int(v), p - 2, p) for v in range(p)])  # (p,): v^-1 mod p for v != 0
    return a * inverse[b] % p


def split_pairs(p, op, train_fraction, seed):
    """{"train": (a, b), "val": (a, b)}: every pair (b != 0 for '/'), shuffled by `seed`, then cut."""
    a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(1 if op == "/" else 0, p), indexing="ij"))
    order = np.random.default_rng(seed).permutation(len(a))
    cut = int(round(train_fraction * len(a)))
    return {"train": (a[order[:cut]], b[order[:cut]]), "val": (a[order[cut:]], b[order[cut:]])}


class ModularArithmetic(FiniteTask):
    """`a b =` -> (a op b) mod p, over every pair, split into train and val by the seed."""

    def __init__(self, name, p, train_fraction, seed, full_batch=False):
        self.name, self.p, self.op, self.seed = name, p, OPS[name], seed
        if not 2 <= p <= MAX_P:
            raise DataError(f"p={p}: the modulus must be between 2 and {MAX_P}")
        if self.op == "/" and not is_prime(p):
            raise DataError(f"p={p}: modular_division needs a prime modulus (every b != 0 invertible)")
        if not 0 < train_fraction < 1:
            raise DataError(f"train_fraction={train_fraction} must be strictly between 0 and 1")
        tokenizer = SymbolTokenizer([str(v) for v in range(p)] + ["="])
        self.pairs = split_pairs(p, self.op, train_fraction, seed)
        super().__init__(tokenizer, {s: self._examples(*pair) for s, pair in self.pairs.items()}, full_batch)

    def _examples(self, a, b):
        """x (N, 3) = [a, b, =], y (N, 3) = [-1, -1, a op b]."""
        n = len(a)
        x = np.stack([a, b, np.full(n, self.p)], axis=1).astype(np.int64)
        y = np.full((n, 3), -1, dtype=np.int64)
        y[:, 2] = answers(a, b, self.p, self.op)
        return x, y

    def metrics(self, model):
        """Accuracy of the answer on each split, and the total weight norm (weight decay shrinks it)."""
        return {"train_acc": self.accuracy(model, "train"), "val_acc": self.accuracy(model, "val"),
                "weight_norm": weight_norm(model)}

    def finish(self, model, out_dir):
        """Write out_dir/grokking.json: when accuracy first reached SOLVED on each split (from
        metrics.jsonl's evaluations), the final accuracies, and the Fourier view (gpt/fourier.py)."""
        summary = {"p": self.p, **solved_iterations(read_evaluations(out_dir)),
                   "final_train_acc": self.accuracy(model, "train"), "final_val_acc": self.accuracy(model, "val")}
        view = fourier.analyse(model, self, self.seed)
        summary.update({k: view[k] for k in ("key_frequencies", "fourier_concentration_init", "fourier_concentration",
                                             "val_acc_restricted", "val_acc_excluded")})
        path = os.path.join(out_dir, "grokking.json")
        write_json(path, summary)
        print(f"wrote {path}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))


def solved_iterations(evaluations):
    """From evaluation rows (iter, train_acc, val_acc), in order: the first iteration at which
    train accuracy reached SOLVED, val accuracy then, and the first at which val accuracy did
    (None where never)."""
    first = lambda key: next((r for r in evaluations if r[key] >= SOLVED), None)
    train, val = first("train_acc"), first("val_acc")
    return {"train_acc_99_iter": train and train["iter"], "val_acc_at_train_99": train and train["val_acc"],
            "val_acc_99_iter": val and val["iter"]}


def weight_norm(model):
    """sqrt(sum of every parameter squared): the L2 norm of all weights together."""
    return float(np.sqrt(sum(float((p.numpy().astype(np.float64) ** 2).sum()) for p in model.parameters())))
