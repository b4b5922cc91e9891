"""Supervised fine-tuning data: JSONL prompt/completion pairs, with the loss on completions only.

    data = SFTDataset("tldr.jsonl", tokenizer)                # lines {"prompt": ..., "completion": ...}
    x, y = data.get_batch("train", batch_size, block_size, rng)  # as gpt.data.TokenDataset's

Each example is tokenized as prompt ids + completion ids + the end token (the tokenizer's
<|endoftext|>; a tokenizer without one, such as the character-level one, ends with its
newline instead, so a completion should be one line). Prompt and completion are encoded
separately, so no BPE token spans the boundary (write a GPT-2 completion with its leading
space, " like this"). Inputs are the sequence without its last token, targets the sequence
shifted by one, with the targets that are prompt tokens set to -1 (the ignore index): the
model learns to produce the completion and its end, never to predict the prompt.

Padded, not packed: each batch row holds one example, right-padded to the batch's longest
with the end token (targets -1). Causal attention means padding after an example never
affects it, and no example attends to another. An example longer than block_size + 1
tokens loses the start of its prompt; check_length refuses a block_size that cannot fit
every completion with at least one prompt token.

Split: the last val_fraction of the lines (at least one) are the validation set, so a file
written in random order gives a random split. Every bad line is a one-line DataError naming
the file and line.

Left out: packing several examples per row, chat templates and multi-turn conversations
(gpt/chat/ has all three, for conversations), weighting examples.
"""
import json

import numpy as np

from .data import DataError
from .tokenizer import TokenizerError


def end_token(tokenizer):
    """The id appended to every completion: <|endoftext|>, else the newline's id."""
    if tokenizer.eot_token is not None:
        return tokenizer.eot_token
    ids = tokenizer.encode("\n")
    if len(ids) != 1:
        raise DataError(f"{tokenizer!r} has neither <|endoftext|> nor a newline token to end completions with")
    return ids[0]


class SFTDataset:
    """Tokenized prompt/completion examples from a JSONL file, split into train and val."""

    def __init__(self, path, tokenizer, val_fraction=0.1):
        self.path = path
        self.eos = end_token(tokenizer)
        self.splits = split_train_val([self._encode(tokenizer, n, line) for n, line in jsonl_lines(path)],
                                      val_fraction, path)

    def _encode(self, tokenizer, n, line):
        """(ids, prompt length, line number) of one JSONL line."""
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{self.path}, line {n}: not JSON ({e.msg})") from None
        if not (isinstance(d, dict) and isinstance(d.get("prompt"), str) and isinstance(d.get("completion"), str)):
            raise DataError(f"{self.path}, line {n}: expected an object with string fields "
                            "'prompt' and 'completion'")
        try:
            prompt, completion = tokenizer.encode(d["prompt"]), tokenizer.encode(d["completion"])
        except TokenizerError as e:
            raise DataError(f"{self.path}, line {n}: {e}") from None
        if not prompt:
            raise DataError(f"{self.path}, line {n}: the prompt is empty")
        return prompt + completion + [self.eos], len(prompt), n

    def _split(self, split):
        if split not in self.splits:
            raise DataError(f"unknown split {split!r}: use 'train' or 'val'")
        return self.splits[split]

    def check_length(self, split, block_size):
        """DataError unless every completion plus its end, and one prompt token, fit in block_size + 1."""
        for ids, prompt_length, n in self._split(split):
            if len(ids) - prompt_length + 1 > block_size + 1:
                raise DataError(f"{self.path}, line {n}: the completion and end token take "
                                f"{len(ids) - prompt_length} tokens, more than block_size={block_size} allows "
                                "after one prompt token; shorten it or use a larger block_size")

    def get_batch(self, split, batch_size, block_size, rng):
        """(x, y) int64 (batch_size, T), T <= block_size: random examples drawn with `rng`, right-padded."""
        examples = self._split(split)
        rows = [self._row(*examples[i][:2], block_size) for i in rng.integers(0, len(examples), size=batch_size)]
        T = max(len(x) for x, _ in rows)
        x = np.full((batch_size, T), self.eos, dtype=np.int64)
        y = np.full((batch_size, T), -1, dtype=np.int64)
        for r, (xs, ys) in enumerate(rows):
            x[r, :len(xs)], y[r, :len(ys)] = xs, ys
        return x, y

    @staticmethod
    def _row(ids, prompt_length, block_size):
        """Inputs and targets of one example, its last block_size + 1 tokens; prompt targets are -1."""
        start = max(0, len(ids) - block_size - 1)
        seq = np.array(ids[start:])
        targets = seq[1:].copy()
        targets[:prompt_length - start - 1] = -1  # targets before the first completion token
        return seq[:-1], targets


def split_train_val(examples, val_fraction, path):
    """{"train": all but the last val_fraction of `examples` (at least one), "val": those last ones}."""
    n_val = max(1, int(len(examples) * val_fraction))
    if len(examples) < n_val + 1:
        raise DataError(f"{path} has {len(examples)} example(s); need at least 2 (train and val)")
    return {"train": examples[:-n_val], "val": examples[-n_val:]}


def jsonl_lines(path):
    """(line number, text) of each non-blank line of a UTF-8 file."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (bad byte at offset {e.start})") from None
    if not lines:
        raise DataError(f"{path} has no examples (one JSON object per line)")
    return lines
