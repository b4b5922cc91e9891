"""Chat fine-tuning data: JSONL conversations, packed several to a row, loss on the assistant only.

    data = ChatDataset("chats.jsonl", tokenizer)       # lines {"messages": [{"role", "content"}, ...]}
    x, y, segments = data.get_batch("train", batch_size, block_size, rng)
    logits, loss = model(x, y, segments=segments)

Each line is one conversation, rendered by gpt/chat/template.py: <|role|> content <|end|> per
message. Its targets are the content and closing <|end|> of every assistant message, in every
turn of a multi-turn conversation; everything else (roles, system and user text) is context
with target -1, the ignore index.

Packing. A batch is `batch_size` rows of block_size + 1 tokens. Conversations are drawn at
random with `rng` and placed first-fit: each into the first row with room left for all of it
(a conversation is never split across rows). The drawing stops at the first conversation that
fits in no row, which is set aside. Inputs are a row without its last token, targets the row
shifted by one, so the targets stay inside each conversation (the first token of a
conversation, a role token, is never a target). The tail of a row after its last
conversation is padding: <|end|> inputs, targets -1. `segments` (B, T) numbers the
conversations of each row 0, 1, 2, ... and the padding after them gets the next number;
the model lets a token attend only within its own segment and restarts positions at each
one (GPT.forward's `segments`), so a packed row computes exactly what one row per
conversation would, without the compute spent on padding. T is the longest row of the batch
minus one, at most block_size.

The set-aside rule favours short conversations slightly: a long one is more often the one
that fits nowhere once rows are nearly full. One conversation per batch is set aside.

Measured (`nice -n 10 python benchmarks/chat_packing.py`, 2026-12-07, AMD EPYC, AVX-512,
2 cores): packed is 1.37 times the useful (target) tokens/s of one conversation per padded
row (1.38 in a second run), training a 4x128 char model on Shakespeare speeches made into 1-
to 3-exchange conversations (median 247 tokens, 10% 78, 90% 443) in rows of 513 tokens. 89% of
the packed positions hold conversation tokens, 59% of the padded ones; a forward and backward
pass over the same 14.2 conversations took 1411 ms packed into 8 rows, 1932 ms padded. Packing
drew conversations of mean length 249 tokens where the data's mean is 257 (the set-aside
rule's bias), and filled rows to 84%.

Split: the last val_fraction of the lines (at least one) are the validation set, as in
gpt/sft.py. Every bad line (not JSON, no "messages" list, a bad message, no assistant message,
or, from check_length, longer than block_size + 1 tokens) is a one-line DataError naming the
file and line. The dataset holds no state between batches: a batch depends only on `rng`, so
a resumed run that restores the generator draws the same batches.

Left out: loss weights per turn or per conversation, streaming files too large for memory,
sorting conversations by length to pack tighter.
"""
import json

import numpy as np

from ..data import DataError
from ..sft import jsonl_lines, split_train_val
from .template import ChatFormatError, ChatTemplate


class ChatDataset:
    """Tokenized conversations from a JSONL file, split into train and val, batched packed."""

    def __init__(self, path, tokenizer, val_fraction=0.1):
        self.path = path
        try:
            self.template = ChatTemplate(tokenizer)
        except ChatFormatError as e:
            raise DataError(f"{path}: {e}") from None
        self.splits = split_train_val([self._encode(where, messages) for where, messages in read_conversations(path)],
                                      val_fraction, path)
        self.lengths = {split: np.array([len(ids) for ids, _, _ in c]) for split, c in self.splits.items()}

    def _encode(self, where, messages):
        """(ids, targets, where) of one conversation: int64 arrays of the same length, targets
        the id where the token is one the model learns to produce, else -1."""
        try:
            ids, mask = self.template.render(messages, where)
        except ChatFormatError as e:
            raise DataError(str(e)) from None
        if not any(mask):
            raise DataError(f"{where}: no assistant message, so nothing to train on")
        ids = np.array(ids, dtype=np.int64)
        return ids, np.where(mask, ids, -1), where

    def _split(self, split):
        if split not in self.splits:
            raise DataError(f"unknown split {split!r}: use 'train' or 'val'")
        return self.splits[split]

    def check_length(self, split, block_size):
        """DataError naming the first conversation longer than block_size + 1 tokens (a row)."""
        for ids, _, where in self._split(split):
            if len(ids) > block_size + 1:
                raise DataError(f"{where}: the conversation takes {len(ids)} tokens, more than "
                                f"block_size + 1 = {block_size + 1}; shorten it or use a larger block_size")

    def get_batch(self, split, batch_size, block_size, rng):
        """(x, y, segments) int64 (batch_size, T), T <= block_size: conversations drawn with `rng`
        and packed first-fit into rows of block_size + 1 tokens (see the module docstring)."""
        self._split(split)
        if self.lengths[split].max() > block_size + 1:
            self.check_length(split, block_size)
        return self.rows(split, pack(self.lengths[split], batch_size, block_size + 1, rng))

    def rows(self, split, rows):
        """(x, y, segments) int64 (len(rows), T) of the given rows, each a list of conversation
        indices into `split` laid out in order; T is the longest row's token count minus one."""
        conversations = self._split(split)
        T = max(sum(len(conversations[i][0]) for i in row) for row in rows) - 1
        x = np.full((len(rows), T), self.template.end_id, dtype=np.int64)
        y = np.full((len(rows), T), -1, dtype=np.int64)
        segments = np.empty((len(rows), T), dtype=np.int64)
        for r, row in enumerate(rows):
            ids = np.concatenate([conversations[i][0] for i in row])          # (n,) the row's tokens
            targets = np.concatenate([conversations[i][1] for i in row])      # (n,)
            seg = np.repeat(np.arange(len(row)), [len(conversations[i][0]) for i in row])  # (n,)
            n = len(ids)
            x[r, :n - 1], y[r, :n - 1], segments[r, :n - 1] = ids[:-1], targets[1:], seg[:-1]
            segments[r, n - 1:] = len(row)  # the padding: a segment of its own
        return x, y, segments


def read_conversations(path):
    """[(where, messages)]: "path, line n" and the "messages" value (not yet checked) of each
    non-blank line of the JSONL file `path`; DataError naming the line if one is not such an object."""
    conversations = []
    for n, line in jsonl_lines(path):
        where = f"{path}, line {n}"
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not JSON ({e.msg})") from None
        if not (isinstance(d, dict) and "messages" in d):
            raise DataError(f"{where}: expected an object {{\"messages\": [{{\"role\": ..., \"content\": ...}}, ...]}}")
        conversations.append((where, d["messages"]))
    return conversations


def pack(lengths, n_rows, row_size, rng):
    """Greedy first-fit: draw indices into `lengths` with `rng` and put each into the first of
    `n_rows` rows with room for it (rows hold `row_size` tokens), until one fits in no row.
    Returns the rows as lists of indices, each row non-empty. Every length must be <= row_size."""
    rows, room = [[] for _ in range(n_rows)], [row_size] * n_rows
    while True:
        i = int(rng.integers(len(lengths)))
        r = next((r for r in range(n_rows) if room[r] >= lengths[i]), None)
        if r is None:
            return rows
        rows[r].append(i)
        room[r] -= lengths[i]
