"""Packed chat batches against one conversation per row: useful tokens per second of training.

    nice -n 10 python benchmarks/chat_packing.py          # 4x128 char model, block 512, 8 rows

The conversations come from the built-in Shakespeare text: consecutive speeches of a play
alternate as user and assistant turns, 1 to 3 exchanges each, so short and long conversations
mix as in real chat data (those longer than a row are dropped). Both sides train the same
model on the same conversations:
  packed   ChatDataset.get_batch: `--rows` rows of block_size + 1 tokens, several conversations
           in each, segments passed to the model (block-diagonal causal attention)
  padded   the same conversations one per row, in micro-batches of `--rows` rows right-padded to
           their longest (as gpt/sft.py batches), gradients accumulated over them
A step is forward + backward over all of them. Useful tokens are the targets (the assistant's
tokens), the same on both sides, and useful tokens/s is their count over a step's time. The
batches are drawn once; each round times every packed batch and then the padded micro-batches
of its conversations, and each of these keeps its best time over the rounds (other work on
the machine only ever slows a run down). It also packs 500 batches without a model, to show
how full rows get and how far the set-aside rule (gpt/chat/dataset.py) shifts the mean length
of the conversations trained on.

Left out: the optimizer step (the same on both sides), GPU timings, BPE tokens.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import nanograd as ng  # noqa: E402
from gpt.chat import ChatDataset, add_chat_tokens  # noqa: E402
from gpt.chat.dataset import pack  # noqa: E402
from gpt.data import shakespeare_text  # noqa: E402
from gpt.model import GPT, GPTConfig  # noqa: E402
from gpt.tokenizer import CharTokenizer  # noqa: E402


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n_layer", type=int, default=4)
    ap.add_argument("--n_embd", type=int, default=128)
    ap.add_argument("--n_head", type=int, default=4)
    ap.add_argument("--block_size", type=int, default=512)
    ap.add_argument("--rows", type=int, default=8, help="rows per (micro-)batch")
    ap.add_argument("--batches", type=int, default=4, help="packed batches drawn (and their conversations padded)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chars", type=int, default=400_000, help="characters of the text to make conversations of")
    return ap.parse_args(argv)


def speeches(text):
    """The text of each speech ("NAME.\\nlines") of the plays, in order, without the speaker line."""
    blocks = (b.split("\n", 1) for b in text.split("\n\n"))
    return [b[1] for b in blocks if len(b) == 2 and b[0].endswith(".") and b[0][:-1].replace(" ", "").isupper()]


def conversations(text, seed=0):
    """Consecutive speeches as alternating user/assistant messages, 1 to 3 exchanges each."""
    rng, said, out, k = np.random.default_rng(seed), speeches(text), [], 0
    while k + 6 <= len(said):
        n = 2 * int(rng.integers(1, 4))
        out.append([{"role": ("user", "assistant")[j % 2], "content": said[k + j]} for j in range(n)])
        k += n
    return out


def packing_bias(lengths, n_rows, row_size, draws=500):
    """(mean length of the conversations `draws` packed batches hold, mean share of a row they fill):
    how far the set-aside rule shifts training towards short conversations, and how full rows are."""
    rng = np.random.default_rng(1)
    rows = [lengths[row] for _ in range(draws) for row in pack(lengths, n_rows, row_size, rng)]
    return np.concatenate(rows).mean(), np.mean([row.sum() / row_size for row in rows])


def draw_units(data, lengths, n_batches, n_rows, row_size):
    """[([packed batch], [padded micro-batches], conversation indices)]: `n_batches` packed batches
    of the train split, each with its conversations one per row in micro-batches of `n_rows`."""
    rng, units = np.random.default_rng(0), []
    for _ in range(n_batches):
        rows = pack(lengths, n_rows, row_size, rng)
        alone = [[i] for row in rows for i in row]
        units.append(([data.rows("train", rows)],
                      [(*data.rows("train", alone[k:k + n_rows])[:2], None) for k in range(0, len(alone), n_rows)],
                      [i for (i,) in alone]))
    return units


def best_times(model, units, rounds):
    """(packed, padded) seconds: the sum over units of each side's best time in `rounds` rounds."""
    step_time(model, units[0][0])  # warm-up
    best = np.full((len(units), 2), np.inf)
    for _ in range(rounds):
        for i, unit in enumerate(units):
            for j, batches in enumerate(unit[:2]):
                best[i, j] = min(best[i, j], step_time(model, batches))
    return best.sum(axis=0)


def step_time(model, batches):
    """Seconds for forward + backward over `batches` [(x, y, segments or None)], gradients accumulated."""
    model.zero_grad()
    start = time.perf_counter()
    for x, y, segments in batches:
        _, loss = model(x, y, segments=segments)
        loss.backward()
    return time.perf_counter() - start


def main(argv):
    args = parse_args(argv)
    text = shakespeare_text()[: args.chars]
    tok = add_chat_tokens(CharTokenizer.train(text))
    rows_len = args.block_size + 1
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "chats.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for messages in conversations(text):
                f.write(json.dumps({"messages": messages}) + "\n")
        data = ChatDataset(path, tok, val_fraction=0.01)
    train = data.splits["train"]
    kept = [i for i, (ids, _, _) in enumerate(train) if len(ids) <= rows_len]
    data.splits["train"] = [train[i] for i in kept]
    lengths = data.lengths["train"] = data.lengths["train"][kept]
    print(f"{len(kept)} conversations of {len(train)} fit a row of {rows_len} tokens; lengths: median "
          f"{np.median(lengths):.0f}, 10% {np.percentile(lengths, 10):.0f}, 90% {np.percentile(lengths, 90):.0f}")
    mean, fill = packing_bias(lengths, args.rows, rows_len)
    print(f"packing draws conversations of mean length {mean:.1f} (all of them: {lengths.mean():.1f}) "
          f"and fills rows to {fill:.1%}")

    ng.manual_seed(0)
    model = GPT(GPTConfig(block_size=args.block_size, vocab_size=tok.vocab_size, n_layer=args.n_layer,
                          n_head=args.n_head, n_embd=args.n_embd))
    units = draw_units(data, lengths, args.batches, args.rows, rows_len)
    sides = {"packed": [b for u in units for b in u[0]], "padded": [b for u in units for b in u[1]]}
    best = dict(zip(sides, best_times(model, units, args.rounds)))
    drawn = [i for u in units for i in u[2]]
    tokens, n_conv = int(lengths[drawn].sum()), len(drawn)
    useful = sum(int((y >= 0).sum()) for _, y, _ in sides["packed"])
    print(f"{args.n_layer}x{args.n_embd}, block {args.block_size}, {args.rows} rows per batch; "
          f"{args.batches} packed batches hold {n_conv} conversations, {useful} useful tokens")
    for side, batches in sides.items():
        positions = sum(x.size for x, _, _ in batches)
        rows = sum(len(x) for x, _, _ in batches)  # each row's last token is only a target
        print(f"{side:7s} {len(batches):3d} batches, {positions:6d} positions ({(tokens - rows) / positions:5.1%} "
              f"conversation, {useful / positions:5.1%} useful): "
              f"{best[side] * 1000 / args.batches:7.0f} ms per {n_conv / args.batches:.1f} conversations, "
              f"{useful / best[side]:7.0f} useful tokens/s")
    print(f"packed / padded useful tokens/s: {best['padded'] / best['packed']:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
