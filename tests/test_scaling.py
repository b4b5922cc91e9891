"""scaling.py's fit: it must recover the parameters of synthetic power laws, and its size parsing;
and a tiny addition sweep (2 sizes, 15 steps) end to end."""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import scaling  # noqa: E402


@pytest.mark.parametrize("a, alpha, c", [(12.0, 0.3, 1.5), (40.0, 0.076, 0.0), (3.0, 0.5, 2.2)])
def test_fit_recovers_known_parameters(a, alpha, c):
    n = np.logspace(4, 7, 6)
    fa, falpha, fc = scaling.fit_power_law(n, a * n ** -alpha + c)
    assert falpha == pytest.approx(alpha, rel=0.02) and fc == pytest.approx(c, abs=0.01)
    assert fa == pytest.approx(a, rel=0.1)


def test_fit_with_noise_and_without_offset():
    n = np.logspace(4, 7, 8)
    noise = 1 + 0.002 * np.random.default_rng(0).standard_normal(8)
    _, alpha, c = scaling.fit_power_law(n, (8.0 * n ** -0.25 + 1.0) * noise)
    assert alpha == pytest.approx(0.25, abs=0.05) and c == pytest.approx(1.0, abs=0.1)
    a0, alpha0, c0 = scaling.fit_power_law(n, 5.0 * n ** -0.1, offset=False)
    assert (a0, alpha0, c0) == (pytest.approx(5.0), pytest.approx(0.1), 0.0)


def test_sizes_parse_and_bad_sizes_are_clear_errors():
    assert scaling.parse_sizes("1x2x32,4x4x128") == [(1, 2, 32), (4, 4, 128)]
    with pytest.raises(ValueError, match="n_layer x n_head x n_embd"):
        scaling.parse_sizes("1x2,3")


def test_a_tiny_addition_sweep_writes_every_size_and_its_curve(tmp_path):
    """CI's sweep: 2 sizes x 2 seeds, 15 steps each, through train.py's Trainer on held-out addition problems."""
    scaling.main(["--task=addition", "--quick=true", "--seeds=2", "--eval_interval=5",
                  f"--out_dir={tmp_path / 'runs'}", f"--results_dir={tmp_path}"])
    with open(tmp_path / "addition_scaling.json") as fh:
        result = json.load(fh)
    runs = result["runs"]
    assert [r["size"] for r in runs] == ["1x2x16", "1x2x32"] and runs[0]["n_params"] < runs[1]["n_params"]
    assert result["answer_digits"] == 4 and result["config"]["iters"] == 1500  # the preset was read
    for r in runs:
        assert [s["seed"] for s in r["seeds"]] == [1337, 1338]
        assert r["exact_match"] == pytest.approx(np.mean([s["exact_match"] for s in r["seeds"]]))
        for s in r["seeds"]:
            assert 0 <= s["exact_match"] <= s["per_digit_accuracy"] <= 1 and s["answer_loss"] > 0
            assert s["power_k"] == pytest.approx(s["per_digit_accuracy"] ** 4)
            assert np.mean(s["digit_accuracy"]) == pytest.approx(s["per_digit_accuracy"])
            assert s["independent_digits"] == pytest.approx(np.prod(s["digit_accuracy"]))
            assert [row["iter"] for row in s["curve"]] == [0, 5, 10, 15]
            assert s["curve"][-1]["exact_match"] == s["exact_match"]
        assert r["seeds"][0]["curve"] != r["seeds"][1]["curve"]  # the seeds are different runs
    assert (tmp_path / "addition_scaling.md").read_text().count("\n| 1x2x") == 2
    scaling.main(["--task=addition", "--quick=true", "--seeds=1", "--eval_interval=5",
                  f"--out_dir={tmp_path / 'runs'}", f"--results_dir={tmp_path}"])  # again, in the same directories
    with open(tmp_path / "addition_scaling.json") as fh:
        again = json.load(fh)["runs"][0]["seeds"][0]
    assert again["curve"] == runs[0]["seeds"][0]["curve"]  # the same run, and no rows of the first sweep


def test_addition_sweep_options_are_checked():
    with pytest.raises(ValueError, match="at least 2"):
        scaling.main(["--task=addition", "--sizes=1x2x16", "--out_dir=unused"])
    with pytest.raises(ValueError, match="the L\\(N\\) fit uses one seed"):
        scaling.main(["--seeds=2", "--out_dir=unused"])
