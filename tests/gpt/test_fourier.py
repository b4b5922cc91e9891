"""The Fourier view (gpt/fourier.py) on embeddings built by hand from known frequencies, the
restricted/excluded accuracies at their limits, the rebuilt init, grokking.json, and the
`fourier` command (gpt/inspect.py)."""
import json
import os
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import nanograd as ng
from gpt import fourier, inspect
from gpt.tasks.modular import ModularArithmetic, of_run, solved_iterations

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402
from test_tasks import TINY  # noqa: E402


@pytest.mark.parametrize("p", [2, 7, 8, 11])
def test_basis_is_orthonormal_and_labelled(p):
    basis = fourier.fourier_basis(p)
    assert np.allclose(basis @ basis.T, np.eye(p))
    assert fourier.basis_frequencies(p).tolist() == sorted([0] + [k for k in range(1, p) if k <= p - k]
                                                           + [k for k in range(1, p) if k < p - k])


def hand_built(p=11):
    """(p, 4): columns 2 cos(3 w a), 2 sin(3 w a), cos(5 w a) and the constant 1, w = 2 pi / p."""
    a = np.arange(p)
    w = 2 * np.pi / p
    return np.stack([2 * np.cos(3 * w * a), 2 * np.sin(3 * w * a), np.cos(5 * w * a), np.ones(p)], axis=1)


def test_power_of_a_hand_built_embedding_is_exact():
    power = fourier.frequency_power(hand_built())
    # |2 cos|^2 = 4 * 11 / 2 = 22, and as much for the sine; |cos|^2 = 5.5; the constant column 11
    assert np.allclose(power, [11, 0, 0, 44, 0, 5.5])
    assert fourier.key_frequencies(power) == [3]                # 44 > 2 x mean (9.9); 5.5 is not
    assert fourier.key_frequencies(power, share=0.5) == [3, 5]
    assert fourier.concentration(power, [3]) == pytest.approx(44 / 60.5)
    assert fourier.concentration(power, [3, 5]) == pytest.approx(49.5 / 60.5)


def test_projection_keeps_or_removes_exactly_the_chosen_frequencies():
    E = hand_built()
    kept, removed = fourier.project(E, [3]), fourier.project(E, [3], keep=False)
    assert np.allclose(kept, E * [1, 1, 0, 1]) and np.allclose(removed, E * [0, 0, 1, 1])
    assert np.allclose(fourier.project(E, range(1, 6)), E)


@given(arrays(np.float64, st.tuples(st.integers(2, 13), st.integers(1, 5)), elements=st.floats(-10, 10)),
       st.data())
def test_power_adds_up_to_the_norm_and_projections_split_it(E, data):
    keys = data.draw(st.sets(st.integers(1, len(E) // 2)))
    power = fourier.frequency_power(E)
    assert power.sum() == pytest.approx((E ** 2).sum(), rel=1e-9, abs=1e-9)
    constant = np.broadcast_to(E.mean(axis=0), E.shape)
    assert np.allclose(fourier.project(E, keys) + fourier.project(E, keys, keep=False), E + constant)
    assert 0 <= fourier.concentration(power, keys) <= 1 + 1e-12


def test_a_random_embedding_has_no_key_frequency():
    E = np.random.default_rng(0).standard_normal((97, 128))
    power = fourier.frequency_power(E)
    assert fourier.key_frequencies(power) == [] and fourier.concentration(power, range(1, 9)) < 0.3


# ---- on a model -------------------------------------------------------------------------
def test_restricted_and_excluded_accuracy_at_their_limits():
    task = ModularArithmetic("modular_addition", 7, 0.5, seed=0)
    ng.manual_seed(0)
    model = train.GPT(train.GPTConfig(block_size=3, vocab_size=8, n_layer=1, n_head=2, n_embd=16))
    before = model.transformer.wte.weight.data.copy()
    plain = task.accuracy(model, "val")
    every = fourier.ablated_accuracies(model, task, [1, 2, 3])  # keep all; remove all
    none = fourier.ablated_accuracies(model, task, [])           # keep none; remove none
    assert every[0] == plain and none[1] == plain
    assert np.array_equal(model.transformer.wte.weight.data, before)  # restored


def test_initial_model_is_the_one_train_py_starts_from(tmp_path):
    args = TINY + ["--p=7", f"--out_dir={tmp_path}", "--seed=5"]
    trainer = train.Trainer(train.parse(train.TrainConfig, args, "train.py"))
    state = ng.get_rng_state()
    rebuilt = fourier.initial_model(trainer.model.config, 5)
    assert ng.get_rng_state() == state
    assert all(np.array_equal(v, rebuilt.state_dict()[k]) for k, v in trainer.model.state_dict().items())


def test_solved_iterations():
    rows = [{"iter": 0, "train_acc": 0.0, "val_acc": 0.0}, {"iter": 50, "train_acc": 0.995, "val_acc": 0.2},
            {"iter": 100, "train_acc": 1.0, "val_acc": 0.99}]
    assert solved_iterations(rows) == {"train_acc_99_iter": 50, "val_acc_at_train_99": 0.2, "val_acc_99_iter": 100}
    assert solved_iterations(rows[:1])["val_acc_99_iter"] is None


GROKKING_FIELDS = {"p", "train_acc_99_iter", "val_acc_at_train_99", "val_acc_99_iter", "final_train_acc",
                   "final_val_acc", "key_frequencies", "fourier_concentration_init", "fourier_concentration",
                   "val_acc_restricted", "val_acc_excluded"}


def test_a_modular_run_writes_grokking_json_and_fourier_reads_it(tmp_path, capsys):
    out = str(tmp_path / "run")
    train.main(TINY + [f"--out_dir={out}", "--max_iters=3"])
    summary = json.loads((tmp_path / "run" / "grokking.json").read_text())
    assert set(summary) == GROKKING_FIELDS and summary["p"] == 7
    assert all(0 <= summary[k] <= 1 for k in GROKKING_FIELDS - {"p", "key_frequencies"} if summary[k] is not None)
    capsys.readouterr()
    inspect.main(["fourier", f"--out_dir={out}"])
    text = capsys.readouterr().out
    assert "key frequencies" in text and "restricted" in text and "excluded" in text


def test_fourier_needs_a_modular_run(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abc " * 200)
    out = str(tmp_path / "text")
    train.main([f"--data_file={text}", f"--out_dir={out}", "--max_iters=1", "--n_layer=1", "--n_embd=8",
                "--n_head=2", "--block_size=8", "--eval_iters=1", "--always_save_checkpoint=true"])
    with pytest.raises(ValueError, match="not on a modular_\\* dataset"):
        inspect.main(["fourier", f"--out_dir={out}"])
    with pytest.raises(ValueError, match="not on a modular_\\* dataset"):
        of_run({})


def test_resume_with_another_modulus_is_one_line(tmp_path):
    out = f"--out_dir={tmp_path}"
    train.main(TINY + [out, "--max_iters=3"])
    with pytest.raises(ValueError, match="has 12 tokens but the model holds 8"):
        train.main(TINY + [out, "--max_iters=6", "--init_from=resume", "--p=11"])


def test_the_grokking_config_runs(tmp_path):
    """configs/grokking.toml for a few iterations (the full run is minutes: docs/emergence/grokking.md)."""
    out = tmp_path / "out-grokking"
    train.main([os.path.join(ROOT, "configs", "grokking.toml"), f"--out_dir={out}", "--max_iters=2",
                "--eval_interval=1"])
    summary = json.loads((out / "grokking.json").read_text())
    assert set(summary) == GROKKING_FIELDS and summary["p"] == 59
