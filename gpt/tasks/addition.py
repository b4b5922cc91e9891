"""n-digit addition: the classic "emergent ability" (Wei et al., 2022) and its mirage (Schaeffer et al., 2023).

A problem a + b, with 0 <= a, b < 10^n, is written as text, one character per token:

    a "+" b "=" c      a and b zero-padded to n digits, the sum c to n + 1 digits
    reverse_answer=False:  "123+456=0579"     (n = 3; 3n + 3 characters)
    reverse_answer=True:   "123+456=9750"     c least significant digit first (the default)

Reversed sums are Lee et al.'s (2023) finding: written units first, each digit of c depends
only on the operands' digits and the carry out of the digit just written, so the model can
produce the sum in the order it computes it. The tokenizer is a CharTokenizer over
"0123456789+=", so a digit's token id is the digit itself.

The model reads the 3n + 2 tokens before the last and is trained only on the n + 1 answer
digits (y = -1 elsewhere): predicting a random operand is not part of the task.

    x = "123+456=975"    (3n + 2 tokens)
    y = -1 ... -1 "9750" (the target after "=" is the first answer digit)

A held-out set of `val_problems` distinct problems is drawn from all 10^(2n) by the seed;
training batches are drawn uniformly from the rest (a problem in the held-out set is
redrawn), so no held-out problem is ever trained on. At each evaluation the whole held-out
set is scored: exact match (every answer digit right), per-digit accuracy (the fraction of
answer digits right) and the answer loss (mean cross-entropy per answer digit). Argmax under
teacher forcing is exact: if every digit's argmax is right given the right digits before it,
greedy decoding writes exactly those digits.

Left out: operands of different lengths, other operations, scratchpads, sampling decoders.
"""
import os

import numpy as np

from ..data import DataError
from ..safetensors import write_json
from ..tokenizer import CharTokenizer
from . import Task, answer_correct, predict_logits

VOCAB = "0123456789+="  # digit d is token id d
PLUS, EQUALS = VOCAB.index("+"), VOCAB.index("=")
MAX_DIGITS = 9  # 10^(2n) problems are numbered in int64


def make(cfg):
    return Addition(cfg.n_digits, cfg.val_problems, cfg.seed, cfg.reverse_answer, block_size=cfg.block_size)


def sequence_length(n_digits):
    """Tokens a model reads per problem: a, "+", b, "=" and all answer digits but the last (3n + 2)."""
    return 3 * n_digits + 2


def digits(v, width):
    """(N, width) int64: the decimal digits of v (N,), most significant first, zero-padded."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)  # (width,): 10^(width-1) .. 1
    return np.asarray(v, dtype=np.int64)[:, None] // powers % 10


def encode_problems(problems, n_digits, reverse_answer):
    """Problems numbered a * 10^n + b (N,) -> the full token rows (N, 3n + 3): a + b = c."""
    a, b = np.divmod(np.asarray(problems, dtype=np.int64), 10 ** n_digits)
    c = digits(a + b, n_digits + 1)  # (N, n + 1)
    n = len(a)
    return np.concatenate([digits(a, n_digits), np.full((n, 1), PLUS), digits(b, n_digits),
                           np.full((n, 1), EQUALS), c[:, ::-1] if reverse_answer else c], axis=1)


def examples(problems, n_digits, reverse_answer):
    """(x, y) int64 (N, 3n + 2): inputs and next-token targets, y = -1 except on the n + 1 answer digits."""
    tokens = encode_problems(problems, n_digits, reverse_answer)
    x, y = tokens[:, :-1], tokens[:, 1:].copy()
    y[:, :2 * n_digits + 1] = -1  # y[:, 2n + 1] is the first answer digit, predicted at "="
    return x, y


def answer_metrics(logits, y):
    """{exact_match, per_digit_accuracy, answer_loss} of logits (N, T, V) against targets y (N, T).

    Every row has the same trained positions (the answer digits). exact_match: fraction of rows
    whose every answer digit is the argmax; per_digit_accuracy: fraction of answer digits;
    answer_loss: mean cross-entropy (nats) per answer digit.
    """
    correct, trained = answer_correct(logits, y)
    z = logits[trained].astype(np.float64)  # (N * digits, V)
    z -= z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    target_log_probs = log_probs[np.arange(len(z)), y[trained]]
    return {"exact_match": float((correct | ~trained).all(axis=1).mean()),
            "per_digit_accuracy": float(correct[trained].mean()),
            "answer_loss": float(-target_log_probs.mean())}


def digit_accuracies(logits, y):
    """Accuracy of each answer position (n + 1,), in the order the answer is written."""
    correct, trained = answer_correct(logits, y)
    return correct[:, trained[0]].mean(axis=0)


class Addition(Task):
    """a + b = c over n-digit operands; `val_problems` held out by the seed, training draws the rest."""

    name = "addition"

    def __init__(self, n_digits, val_problems, seed, reverse_answer=True, block_size=None):
        if not 1 <= n_digits <= MAX_DIGITS:
            raise DataError(f"n_digits={n_digits}: operands must have between 1 and {MAX_DIGITS} digits")
        self.n_digits, self.reverse_answer = n_digits, reverse_answer
        self.n_problems = 10 ** (2 * n_digits)  # every (a, b)
        if not 1 <= val_problems < self.n_problems:
            raise DataError(f"val_problems={val_problems}: {n_digits}-digit addition has {self.n_problems} "
                            f"distinct problems; hold out between 1 and {self.n_problems - 1}")
        super().__init__(CharTokenizer(VOCAB), sequence_length(n_digits))
        if block_size is not None:
            self.check_length("train", block_size)
        self.val_ids = np.sort(np.random.default_rng(seed).choice(self.n_problems, val_problems, replace=False))
        self.val = examples(self.val_ids, n_digits, reverse_answer)

    def check_length(self, split, block_size):
        if block_size < self.seq_len:
            raise DataError(f"n_digits={self.n_digits} makes {self.seq_len}-token examples (3 n_digits + 2): "
                            f"block_size={block_size} fits n_digits <= {(block_size - 2) // 3}")
        super().check_length(split, block_size)

    def draw_training_problems(self, batch_size, rng):
        """(batch_size,) problem numbers, uniform over those not held out."""
        problems = rng.integers(0, self.n_problems, size=batch_size)
        while (held_out := np.isin(problems, self.val_ids)).any():
            problems[held_out] = rng.integers(0, self.n_problems, size=int(held_out.sum()))
        return problems

    def get_batch(self, split, batch_size, block_size, rng):
        self.check_length(split, block_size)
        if split == "train":
            return examples(self.draw_training_problems(batch_size, rng), self.n_digits, self.reverse_answer)
        rows = rng.integers(0, len(self.val_ids), size=batch_size)
        return self.val[0][rows], self.val[1][rows]

    def metrics(self, model):
        """Exact match, per-digit accuracy and answer loss over the whole held-out set."""
        return answer_metrics(predict_logits(model, self.val[0]), self.val[1])

    def finish(self, model, out_dir):
        """out_dir/addition.json: the held-out metrics and the accuracy of each answer position."""
        logits = predict_logits(model, self.val[0])
        summary = {"n_digits": self.n_digits, "reverse_answer": self.reverse_answer,
                   "val_problems": len(self.val_ids), **answer_metrics(logits, self.val[1]),
                   "digit_accuracy": digit_accuracies(logits, self.val[1]).tolist()}
        write_json(os.path.join(out_dir, "addition.json"), summary, indent=2)

