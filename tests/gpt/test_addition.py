"""n-digit addition (gpt/tasks/addition.py): the text format, the held-out split, the answer-only
loss mask, the metrics on hand-made predictions, bad input, and a short run through train.py."""
import json
import math
import os
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpt.data import DataError
from gpt.tasks import read_evaluations
from gpt.tasks.addition import Addition, answer_metrics, digit_accuracies, encode_problems, examples

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
import train  # noqa: E402


def text(task, problems):
    """The full problems (a + b = c) as strings, through the task's tokenizer."""
    return [task.tokenizer.decode(row) for row in encode_problems(problems, task.n_digits, task.reverse_answer)]


def test_the_documented_format():
    forward, reverse = Addition(3, 10, 0, reverse_answer=False), Addition(3, 10, 0)
    assert text(forward, [123456, 999999, 5]) == ["123+456=0579", "999+999=1998", "000+005=0005"]
    assert text(reverse, [123456, 999999, 5]) == ["123+456=9750", "999+999=8991", "000+005=5000"]
    assert forward.seq_len == 11 and forward.vocab_size == 12


@given(st.integers(1, 6), st.booleans(), st.data())
def test_every_problem_reads_back_as_a_true_sum(n, reverse, data):
    a, b = (data.draw(st.integers(0, 10 ** n - 1)) for _ in range(2))
    task = Addition(n, 1, 0, reverse_answer=reverse)
    line = text(task, [a * 10 ** n + b])[0]
    left, answer = line.split("=")
    assert left == f"{a:0{n}d}+{b:0{n}d}" and len(answer) == n + 1
    assert int(answer[::-1] if reverse else answer) == a + b


def test_only_the_answer_digits_are_trained():
    task = Addition(2, 5, 0)
    x, y = examples(np.array([1234, 9999]), 2, True)  # 12+34=046 and 99+99=198, written units first
    full = encode_problems(np.array([1234, 9999]), 2, True)
    assert np.array_equal(x, full[:, :-1]) and x.shape == (2, task.seq_len)
    assert (y[:, :5] == -1).all()  # a, "+", b: nothing to learn
    assert np.array_equal(y[:, 5:], full[:, 6:])  # at "=" and after: the n + 1 answer digits
    assert y[0, 5:].tolist() == [6, 4, 0] and y[1, 5:].tolist() == [8, 9, 1]  # 46 and 198, units first


def test_held_out_problems_are_never_trained_on_and_the_rest_all_are():
    task = Addition(1, 60, seed=3)  # 100 problems: 60 held out, 40 to train on
    again, other = Addition(1, 60, seed=3), Addition(1, 60, seed=4)
    assert np.array_equal(task.val_ids, again.val_ids) and not np.array_equal(task.val_ids, other.val_ids)
    assert len(set(task.val_ids.tolist())) == 60
    rng = np.random.default_rng(0)
    drawn = np.concatenate([task.draw_training_problems(64, rng) for _ in range(50)])
    assert not np.isin(drawn, task.val_ids).any()
    assert len(np.unique(drawn)) == 40
    x, _ = task.get_batch("train", 8, task.seq_len, rng)
    trained_problems = x[:, 0] * 10 + x[:, 2]  # a "+" b, one digit each
    assert not np.isin(trained_problems, task.val_ids).any()
    vx, _ = task.get_batch("val", 8, task.seq_len, rng)
    assert np.isin(vx[:, 0] * 10 + vx[:, 2], task.val_ids).all()


def one_hot_logits(predicted, vocab=12, scale=30.0):
    """(N, T, V) logits whose argmax is `predicted` (N, T), confidently."""
    return scale * np.eye(vocab)[predicted]


def test_metrics_on_hand_made_predictions():
    _, y = examples(np.array([123456, 111111, 999999]), 3, True)  # answers 9750, 2220, 8991
    predicted = np.where(y >= 0, y, 0)
    predicted[1, 8] = 5  # one wrong digit
    predicted[2, 7] = predicted[2, 9] = 0  # two wrong digits
    metrics = answer_metrics(one_hot_logits(predicted), y)
    assert metrics["exact_match"] == pytest.approx(1 / 3)
    assert metrics["per_digit_accuracy"] == pytest.approx(9 / 12)
    assert metrics["answer_loss"] == pytest.approx(3 / 12 * 30, rel=1e-6)  # 30 nats per wrong digit
    assert digit_accuracies(one_hot_logits(predicted), y).tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 1])
    uniform = answer_metrics(np.zeros((3, 11, 12)), y)
    assert uniform["answer_loss"] == pytest.approx(math.log(12))


@pytest.mark.parametrize("args, message", [((0, 10), "between 1 and 9"), ((10, 10), "between 1 and 9"),
                                           ((1, 100), "has 100 distinct problems"),
                                           ((2, 0), "between 1 and 9999")])
def test_bad_options_are_one_line_errors_naming_the_limit(args, message):
    with pytest.raises(DataError, match=message):
        Addition(*args, seed=0)


def test_n_digits_too_large_for_the_block_size():
    with pytest.raises(DataError, match="block_size=16 fits n_digits <= 4"):
        Addition(5, 10, 0, block_size=16)


@pytest.mark.parametrize("argv, message", [(["--n_digits=4", "--block_size=11"], "fits n_digits <= 3"),
                                           (["--n_digits=1", "--val_problems=100"], "100 distinct problems"),
                                           (["--n_digits=0"], "n_digits=0 is out of range")])
def test_train_py_refuses_bad_input_with_one_line(argv, message, tmp_path, capsys):
    from gpt.cli import run_main
    with pytest.raises(SystemExit) as exit_info:
        run_main(train.main, ["--dataset=addition", f"--out_dir={tmp_path}"] + argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err, err


def test_a_short_run_logs_the_metrics_and_writes_the_summary(tmp_path):
    train.main(["--dataset=addition", "--n_digits=2", "--val_problems=200", f"--out_dir={tmp_path}",
                "--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=8", "--batch_size=16",
                "--max_iters=6", "--eval_interval=3", "--eval_iters=2", "--warmup_iters=1", "--lr_decay_iters=6"])
    rows = read_evaluations(tmp_path)
    assert [r["iter"] for r in rows] == [0, 3, 6]
    assert all(0 <= r["exact_match"] <= r["per_digit_accuracy"] <= 1 and r["answer_loss"] > 0 for r in rows)
    with open(tmp_path / "addition.json") as fh:
        summary = json.load(fh)
    assert summary["exact_match"] == rows[-1]["exact_match"] and len(summary["digit_accuracy"]) == 3
