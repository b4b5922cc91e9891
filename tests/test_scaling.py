"""scaling.py's fit: it must recover the parameters of synthetic power laws, and its size parsing."""
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
