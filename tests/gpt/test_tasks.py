"""Synthetic tasks (gpt/tasks/): the symbol tokenizer, the modular-arithmetic split and answers,
accuracy on hand-made logits, and a short full-batch run through train.py with an exact resume."""
import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpt.data import DataError
from gpt.tasks import answer_correct, make_task
from gpt.tasks.modular import ModularArithmetic, split_pairs
from gpt.tokenizer import SymbolTokenizer, TokenizerError, load_tokenizer_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
import train  # noqa: E402


# ---- the symbol tokenizer ---------------------------------------------------------------
WORDS = st.lists(st.text(min_size=1).filter(lambda w: w.split() == [w]), min_size=1, unique=True)


@given(WORDS, st.data())
def test_symbols_round_trip_and_save(symbols, data):
    tok = SymbolTokenizer(symbols)
    ids = data.draw(st.lists(st.integers(0, len(symbols) - 1)))
    text = tok.decode(ids)
    assert tok.encode(text) == ids and text == "".join(" " + symbols[i] for i in ids)
    assert load_tokenizer_json(tok.to_json()).symbols == symbols


def test_symbols_bad_input():
    with pytest.raises(TokenizerError, match="distinct words"):
        SymbolTokenizer(["a", "a"])
    with pytest.raises(TokenizerError, match="distinct words"):
        SymbolTokenizer(["a b"])
    with pytest.raises(TokenizerError, match="'x' is not a symbol"):
        SymbolTokenizer(["1", "="]).encode("1 x =")


# ---- modular arithmetic -----------------------------------------------------------------
def test_split_is_deterministic_disjoint_and_complete():
    first, again, other = (split_pairs(11, "+", 0.3, seed) for seed in (0, 0, 1))
    pairs = {s: set(zip(*map(np.ndarray.tolist, first[s]))) for s in ("train", "val")}
    assert all(np.array_equal(first[s][i], again[s][i]) for s in ("train", "val") for i in (0, 1))
    assert not np.array_equal(first["train"][0], other["train"][0])
    assert not pairs["train"] & pairs["val"] and len(pairs["train"] | pairs["val"]) == 121
    assert len(pairs["train"]) == round(0.3 * 121)


@pytest.mark.parametrize("name, check", [("modular_addition", lambda a, b, c: (a + b) % 7 == c),
                                         ("modular_subtraction", lambda a, b, c: (a - b) % 7 == c),
                                         ("modular_division", lambda a, b, c: (b * c) % 7 == a)])
def test_examples_hold_the_right_answers(name, check):
    task = ModularArithmetic(name, 7, 0.5, seed=3)
    x, y = (np.concatenate([task.splits[s][i] for s in ("train", "val")]) for i in (0, 1))
    assert len(x) == (42 if name == "modular_division" else 49)
    assert (x[:, 2] == 7).all() and (y[:, :2] == -1).all()
    assert all(check(a, b, c) for (a, b, _), c in zip(x.tolist(), y[:, 2].tolist()))
    assert task.tokenizer.decode(x[0]) == f" {x[0, 0]} {x[0, 1]} ="


def test_full_batch_is_the_whole_split_and_sampling_is_seeded():
    task = ModularArithmetic("modular_addition", 5, 0.4, seed=0, full_batch=True)
    x, y = task.get_batch("val", 3, 3, np.random.default_rng(0))
    assert np.array_equal(x, task.splits["val"][0]) and len(x) == 15
    task.full_batch = False
    draws = [task.get_batch("train", 4, 3, np.random.default_rng(1))[0] for _ in range(2)]
    assert draws[0].shape == (4, 3) and np.array_equal(*draws)


@pytest.mark.parametrize("kwargs, message", [(dict(p=1), "between 2 and"), (dict(train_fraction=1.0), "strictly"),
                                             (dict(name="modular_division", p=12), "prime")])
def test_bad_task_options_are_one_line_errors(kwargs, message):
    args = dict(name="modular_addition", p=7, train_fraction=0.5, seed=0) | kwargs
    with pytest.raises(DataError, match=message):
        ModularArithmetic(**args)
    with pytest.raises(DataError, match="block_size=2 must be at least 3"):
        ModularArithmetic("modular_addition", 7, 0.5, 0).check_length("train", 2)


def test_make_task_names_the_tasks():
    with pytest.raises(DataError, match="unknown task 'nope'"):
        make_task(SimpleNamespace(dataset="nope"))


def test_answer_correct_on_hand_made_logits():
    logits = np.zeros((2, 3, 4))
    logits[0, 2, 1] = logits[1, 1, 3] = logits[1, 2, 0] = 1  # argmaxes: row 0 -> [0, 0, 1], row 1 -> [0, 3, 0]
    y = np.array([[-1, -1, 1], [-1, 3, 2]])
    correct, trained = answer_correct(logits, y)
    assert trained.tolist() == [[False, False, True], [False, True, True]]
    assert correct.tolist() == [[False, False, True], [False, True, False]]
    assert correct[trained].mean() == 2 / 3 and (correct | ~trained).all(axis=1).tolist() == [True, False]


# ---- through train.py -------------------------------------------------------------------
TINY = ["--dataset=modular_addition", "--p=7", "--train_fraction=0.5", "--full_batch=true", "--block_size=3",
        "--n_layer=1", "--n_head=2", "--n_embd=16", "--eval_iters=1", "--eval_interval=3", "--log_interval=1",
        "--warmup_iters=1", "--lr_decay_iters=6", "--always_save_checkpoint=true", "--learning_rate=3e-3"]


def rows(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def test_full_batch_run_logs_accuracy_and_resumes_exactly(tmp_path):
    full, half = str(tmp_path / "full"), str(tmp_path / "half")
    train.main(TINY + [f"--out_dir={full}", "--max_iters=6"])
    train.main(TINY + [f"--out_dir={half}", "--max_iters=3"])
    train.main(TINY + [f"--out_dir={half}", "--max_iters=6", "--init_from=resume"])
    evals = [r for r in rows(full) if "val_loss" in r]
    assert [r["iter"] for r in evals] == [0, 3, 6]
    assert all(0 <= r[k] <= 1 for r in evals for k in ("train_acc", "val_acc")) and evals[0]["weight_norm"] > 0
    losses = lambda d: {r["iter"]: r["loss"] for r in rows(d) if "loss" in r}
    assert losses(full)[6] == losses(half)[6]


def test_full_batch_needs_a_listed_task(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abc " * 200)
    with pytest.raises(ValueError, match="full_batch"):
        train.main([f"--data_file={text}", "--full_batch=true", f"--out_dir={tmp_path / 'o'}", "--max_iters=1"])
