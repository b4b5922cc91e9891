"""In-context copying, the induction-head dataset: random segments that recur at random offsets.

Each sequence is block_size + 1 uniformly random symbols into which segments are written
twice. A segment S (length L, drawn between min_len and max_len) is written, then `g`
random symbols (0 <= g <= gap), then S again; the next segment starts after it. The first
segment starts after a random prefix of 0..prefix symbols; the last one is cut where the
sequence ends. Only the second copy of each segment is trained (y = -1 elsewhere), from
its second token on:

    x  =  r r r [a b c d] r [a b c d] [e f g] [e f g] r ...     r: random, [..]: a segment
    y  =  - - - -  - - -  - -  b c d   - - -   - f g  - ...     -: not trained (-1)

Predicting `c` after `... a b` needs the earlier `b` found by its content and the symbol
after it copied: an induction head (Olsson et al., 2022). L, g and the prefix change in
every segment, so no fixed offset or position predicts a target.

Batches come only from the generator train.py passes in (its seed and state are saved in
checkpoints), so a run is reproducible and resumes exactly; no file is read or written.
At the end of a run, finish() writes out_dir/emergence.json from the evaluations that
train.py --track_emergence logged (see `emergence_summary` for the rule).

Left out: Bietti et al.'s trigger tokens on a bigram background, in-context Markov chains.
"""
import os

import numpy as np

from ..data import DataError
from ..interp import previous_token_run
from ..safetensors import write_json
from ..tokenizer import SymbolTokenizer
from . import Task, read_evaluations

MIN_VOCAB = 8  # with fewer symbols most tokens recur by chance and the copy is ambiguous
RISE_FROM, RISE_TO = 0.1, 0.4  # the rise of the best head's induction score that emergence.json times


def make(cfg):
    return Induction(cfg.induction_vocab, cfg.block_size, cfg.induction_min_len, cfg.induction_max_len,
                     cfg.induction_prefix, cfg.induction_gap)


class Induction(Task):
    """Random symbols with segments written twice; the second copies are the targets."""

    name = "induction"

    def __init__(self, vocab, seq_len, min_len, max_len, prefix=0, gap=0):
        if vocab < MIN_VOCAB:
            raise DataError(f"induction_vocab={vocab}: the induction task needs at least {MIN_VOCAB} symbols")
        if not 2 <= min_len <= max_len:
            raise DataError(f"induction_min_len={min_len}, induction_max_len={max_len}: "
                            "need 2 <= min_len <= max_len (a segment of one symbol has nothing to copy)")
        if seq_len + 1 < 2 * max_len + gap:
            raise DataError(f"block_size={seq_len} cannot hold the longest recurrence: it needs at least "
                            f"2 * induction_max_len + induction_gap - 1 = {2 * max_len + gap - 1}")
        super().__init__(SymbolTokenizer([str(i) for i in range(vocab)]), seq_len)
        self.min_len, self.max_len, self.prefix, self.gap = min_len, max_len, prefix, gap

    def sequence(self, rng):
        """(tokens (seq_len + 1,), trained (seq_len,) bool): one sequence and which targets are copies."""
        n = self.seq_len + 1
        tokens = rng.integers(0, self.vocab_size, n)
        trained = np.zeros(n, dtype=bool)  # trained[j]: the target of position j, token j + 1, is a copy
        pos = int(rng.integers(0, self.prefix + 1))
        while pos < n:
            L = int(rng.integers(self.min_len, self.max_len + 1))
            g = int(rng.integers(0, self.gap + 1))
            copy = pos + L + g  # where the second copy starts
            segment = rng.integers(0, self.vocab_size, L)
            tokens[pos:pos + L] = segment[:n - pos]
            tokens[copy:copy + L] = segment[:max(0, n - copy)]
            trained[copy:copy + L - 1] = True  # targets tokens[copy + 1 .. copy + L - 1]
            pos = copy + L
        return tokens, trained[:n - 1]

    def get_batch(self, split, batch_size, block_size, rng):
        """(x, y) int64 (B, seq_len); y is the next token on second copies and -1 elsewhere."""
        self.check_length(split, block_size)
        rows = [self.sequence(rng) for _ in range(batch_size)]
        tokens = np.stack([r[0] for r in rows])  # (B, T + 1)
        trained = np.stack([r[1] for r in rows])  # (B, T)
        x = tokens[:, :-1].astype(np.int64)
        y = np.where(trained, tokens[:, 1:], -1).astype(np.int64)
        return x, y

    def metrics(self, model):
        """The best head's previous-token score (attention from t to t - 1), beside the induction score."""
        return {"previous_token_score": float(previous_token_run(model).max())}

    def finish(self, model, out_dir):
        """Write out_dir/emergence.json (emergence_summary of the logged evaluations) and print it."""
        rows = [r for r in read_evaluations(out_dir) if "induction_score" in r]
        if not rows:
            print("no induction scores logged (train with --track_emergence=true): emergence.json not written")
            return
        summary = emergence_summary(rows)
        path = os.path.join(out_dir, "emergence.json")
        write_json(path, summary)
        print(f"phase change at iteration {summary['phase_change_iter']}: best head's induction score "
              f"{summary['induction_score_before']:.3f} -> {summary['induction_score_after']:.3f}, "
              f"in-context loss drop {summary['icl_loss_drop_before']:.3f} -> {summary['icl_loss_drop_after']:.3f}; "
              f"wrote {path}")


def emergence_summary(rows):
    """The emergence.json fields from evaluation rows (iter, val_loss, induction_score, icl_loss_drop, ...).

    before = the first evaluation, after = the last. phase_change_iter is the iteration of the
    evaluation whose induction score rose the most per iteration since the one before it
    (the steepest step of the curve). rise_start_iter / rise_end_iter are the first evaluations
    at which the score reached RISE_FROM (0.1) and RISE_TO (0.4), None if never; rise_fraction
    is the part of the run's iterations between them. val_loss_slope_before/at are the val loss's
    change per iteration over the evaluations before the steepest step and over that step.
    """
    iters = np.array([r["iter"] for r in rows], dtype=float)
    score = np.array([r["induction_score"] for r in rows])
    val = np.array([r["val_loss"] for r in rows])
    first, last = rows[0], rows[-1]
    summary = {"phase_change_iter": None, "induction_score_before": first["induction_score"],
               "induction_score_after": last["induction_score"],
               "icl_loss_drop_before": first["icl_loss_drop"], "icl_loss_drop_after": last["icl_loss_drop"],
               "val_loss_before": first["val_loss"], "val_loss_after": last["val_loss"]}
    if len(rows) >= 2:
        rate = np.diff(score) / np.maximum(np.diff(iters), 1)  # score gained per iteration, step by step
        k = int(np.argmax(rate)) + 1  # the evaluation that ends the steepest step
        summary["phase_change_iter"] = int(iters[k])
        summary["val_loss_slope_at"] = float((val[k] - val[k - 1]) / max(iters[k] - iters[k - 1], 1))
        summary["val_loss_slope_before"] = (float((val[k - 1] - val[0]) / (iters[k - 1] - iters[0]))
                                            if k >= 2 else None)
    start, end = (next((int(i) for i, s in zip(iters, score) if s >= level), None) for level in (RISE_FROM, RISE_TO))
    summary.update(rise_start_iter=start, rise_end_iter=end,
                   rise_fraction=(end - start) / max(iters[-1] - iters[0], 1) if None not in (start, end) else None,
                   first_repeat_loss_after=last.get("first_repeat_loss"))
    return summary
