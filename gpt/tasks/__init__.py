"""Synthetic tasks: datasets a run generates from its seed, each with a right answer to measure.

A task stands where gpt.data.TokenDataset stands in train.py (get_batch, check_length) and
brings what a task with right answers needs: its own tokenizer, metrics logged at every
evaluation, and a summary written when the run ends.

    task = make_task(cfg)                                  # cfg.dataset is one of TASKS
    x, y = task.get_batch("train", 64, block_size, rng)    # (B, T) int64; y = -1 where nothing is trained
    task.metrics(model)                                    # e.g. {"train_acc": 1.0, "val_acc": 0.2}
    task.finish(model, out_dir)                            # e.g. writes out_dir/grokking.json

One file per task: modular.py (a op b mod p, the grokking dataset), addition.py (n-digit
addition, abilities with scale), induction.py (in-context copying, induction heads).

Left out: tasks read from files (train on your own text with --data_file), mixtures of tasks.
"""
import importlib
import json
import os

import numpy as np

from ..data import DataError
from ..generate import inference_mode

# dataset name -> the module that builds it (imported on first use, so each task stays one file)
TASKS = {"modular_addition": "modular", "modular_subtraction": "modular", "modular_division": "modular",
         "addition": "addition", "induction": "induction"}
SPLITS = ("train", "val")


def make_task(cfg):
    """The task named by cfg.dataset, built from the run's config (its seed and task options)."""
    if cfg.dataset not in TASKS:
        raise DataError(f"unknown task {cfg.dataset!r}: the tasks are {', '.join(TASKS)}")
    return importlib.import_module(f"{__name__}.{TASKS[cfg.dataset]}").make(cfg)


class Task:
    """What train.py asks of a task; subclasses draw the batches and may add metrics and a summary.

    tokenizer: names the ids (checkpoints, sample.py and inspect show tokens through it).
    seq_len:   the T of the batches, inputs only; the model's block_size must be at least this.
    """

    name = ""

    def __init__(self, tokenizer, seq_len):
        self.tokenizer, self.seq_len = tokenizer, seq_len
        self.vocab_size = tokenizer.vocab_size

    def check_length(self, split, block_size):
        """DataError unless the split exists and an example (seq_len tokens) fits in block_size."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}: use 'train' or 'val'")
        if block_size < self.seq_len:
            raise DataError(f"{self.name} examples are {self.seq_len} tokens long: "
                            f"block_size={block_size} must be at least {self.seq_len}")

    def get_batch(self, split, batch_size, block_size, rng):
        """(x, y) int64 (B, seq_len): inputs and next-token targets, -1 where nothing is trained."""
        raise NotImplementedError

    def metrics(self, model):
        """{name: float} logged to metrics.jsonl at every evaluation, beside the losses."""
        return {}

    def finish(self, model, out_dir):
        """Called once when the run reaches max_iters: write the task's summary to out_dir."""


class FiniteTask(Task):
    """A task whose every example is listed: per split, inputs x (N, T) and targets y (N, T).

    With full_batch, every batch is the whole split in a fixed order (grokking's full-batch
    gradient descent); otherwise batch_size rows are drawn with replacement from `rng`.
    """

    def __init__(self, tokenizer, splits, full_batch=False):
        super().__init__(tokenizer, splits["train"][0].shape[1])
        self.splits, self.full_batch = splits, full_batch
        for split in SPLITS:
            if len(splits[split][0]) == 0:
                raise DataError(f"the {split} split of {self.name} is empty: change the training fraction")

    def get_batch(self, split, batch_size, block_size, rng):
        self.check_length(split, block_size)
        x, y = self.splits[split]
        if self.full_batch:
            return x, y
        rows = rng.integers(0, len(x), size=batch_size)
        return x[rows], y[rows]

    def accuracy(self, model, split):
        """Fraction of the split's trained targets that the model's argmax predicts."""
        x, y = self.splits[split]
        correct, trained = answer_correct(predict_logits(model, x), y)
        return float(correct[trained].mean())


def predict_logits(model, x, chunk=2048):
    """The model's logits (N, T, V) for inputs x (N, T), in inference mode, `chunk` rows at a time."""
    with inference_mode(model):
        return np.concatenate([model(x[i:i + chunk])[0].numpy() for i in range(0, len(x), chunk)])


def answer_correct(logits, y):
    """(correct (N, T) bool, trained (N, T) bool): argmax of logits (N, T, V) equals target y (N, T).

    trained marks the targets that count (y != -1); correct is False wherever trained is.
    Token accuracy is correct[trained].mean(); an answer is exactly right when every
    trained position of its row is correct: (correct | ~trained).all(axis=1).
    """
    trained = np.asarray(y) != -1
    return (np.argmax(logits, axis=-1) == y) & trained, trained


def read_evaluations(out_dir):
    """The evaluation rows of out_dir/metrics.jsonl (those with a val_loss), in order."""
    with open(os.path.join(out_dir, "metrics.jsonl")) as fh:
        return [row for row in map(json.loads, fh) if "val_loss" in row]
