"""The induction dataset (gpt/tasks/induction.py): its copies, determinism, no fixed offset,
bad sizes, emergence.json's rule, and configs/induction.toml run a few iterations with an exact resume."""
import json
import os
import sys

import numpy as np
import pytest

from gpt.data import DataError
from gpt.tasks.induction import Induction, emergence_summary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
import train  # noqa: E402

CONFIG = os.path.join(ROOT, "configs", "induction.toml")


def batch(seed, task=None, B=64):
    task = task or Induction(32, 64, 4, 16, prefix=8, gap=4)
    return task.get_batch("train", B, 64, np.random.default_rng(seed))


def test_every_target_is_the_successor_of_an_earlier_occurrence():
    x, y = batch(0)
    assert x.shape == y.shape == (64, 64) and x.dtype == y.dtype == np.int64
    trained = np.argwhere(y != -1)
    assert 0.2 < len(trained) / y.size < 0.6
    for b, j in trained:  # y[b, j] = x[b, j + 1], and some i < j has x[i] = x[j] followed by it
        earlier = np.nonzero(x[b, :j] == x[b, j])[0]
        assert (x[b, earlier + 1] == y[b, j]).any()


def test_batches_are_deterministic_in_the_generator():
    a, b, c = batch(5), batch(5), batch(6)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_no_fixed_offset_predicts_the_targets():
    x, y = batch(1, B=256)
    rows, cols = np.nonzero(y != -1)
    full = np.concatenate([x, y[:, -1:]], axis=1)  # (B, T + 1) with the last target
    for d in range(1, 64):  # copying the token d before the target
        ok = cols + 1 - d >= 0
        hits = full[rows[ok], cols[ok] + 1 - d] == y[rows[ok], cols[ok]]
        assert hits.sum() / len(rows) < 0.2, f"offset {d} predicts {hits.mean():.2f} of the targets"


def test_positions_of_the_copies_vary():
    _, y = batch(2, B=256)
    first = np.argmax(y != -1, axis=1)  # where each row's first trained target is
    assert len(np.unique(first)) > 10


@pytest.mark.parametrize("args, message", [((4, 64, 4, 16), "at least 8 symbols"),
                                           ((32, 20, 4, 16), "block_size=20 cannot hold the longest recurrence"),
                                           ((32, 64, 1, 16), "min_len"),
                                           ((32, 64, 8, 4), "min_len")])
def test_bad_sizes_are_one_line_errors(args, message):
    with pytest.raises(DataError, match=message):
        Induction(*args)


def test_emergence_summary_marks_the_steepest_rise():
    rows = [{"iter": i, "val_loss": v, "induction_score": s, "icl_loss_drop": d, "first_repeat_loss": 4.0}
            for i, v, s, d in [(0, 4.0, 0.02, 0.0), (100, 3.9, 0.05, 0.3), (200, 3.0, 0.45, 2.5),
                               (300, 2.0, 0.6, 3.5), (400, 1.9, 0.62, 3.6)]]
    s = emergence_summary(rows)
    assert s["phase_change_iter"] == 200
    assert (s["induction_score_before"], s["induction_score_after"]) == (0.02, 0.62)
    assert (s["icl_loss_drop_before"], s["icl_loss_drop_after"]) == (0.0, 3.6)
    assert (s["val_loss_before"], s["val_loss_after"]) == (4.0, 1.9)
    assert (s["rise_start_iter"], s["rise_end_iter"], s["rise_fraction"]) == (200, 200, 0.0)
    assert s["val_loss_slope_at"] == pytest.approx(-0.009) and s["val_loss_slope_before"] == pytest.approx(-0.001)


SHORT = ["--eval_interval=2", "--eval_iters=1", "--log_interval=1", "--batch_size=4", "--n_embd=16",
         "--always_save_checkpoint=true"]


def test_config_trains_a_few_iterations_and_resumes_exactly(tmp_path):
    full, half = str(tmp_path / "full"), str(tmp_path / "half")
    train.main([CONFIG, f"--out_dir={full}", "--max_iters=4"] + SHORT)
    train.main([CONFIG, f"--out_dir={half}", "--max_iters=2"] + SHORT)
    train.main([CONFIG, f"--out_dir={half}", "--max_iters=4", "--init_from=resume"] + SHORT)
    rows = lambda d: [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
    losses = lambda d: {r["iter"]: r["loss"] for r in rows(d) if "loss" in r}
    assert losses(full)[4] == losses(half)[4]
    evals = [r for r in rows(full) if "val_loss" in r]
    assert [r["iter"] for r in evals] == [0, 2, 4]
    assert all(0 <= r["induction_score"] <= 1 and 0 <= r["previous_token_score"] <= 1 for r in evals)
    summary = json.load(open(os.path.join(full, "emergence.json")))
    assert {"phase_change_iter", "induction_score_before", "induction_score_after", "icl_loss_drop_before",
            "icl_loss_drop_after", "val_loss_before", "val_loss_after"} <= set(summary)
    assert summary["phase_change_iter"] in (2, 4)


def test_too_small_a_context_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="block_size=16 cannot hold the longest recurrence"):
        train.main([CONFIG, f"--out_dir={tmp_path}", "--block_size=16", "--max_iters=1"])
