"""Property tests (Hypothesis): forwards agree with NumPy on random shapes; softmax behaves.

Elementwise ops are compared with the NumPy expressions they implement, binary ops on
random mutually broadcastable shapes (their gradients are gradchecked there too), and
reductions over random axes with and without keepdims. Softmax and log-softmax are
checked for what a loss relies on: rows sum to one, adding a constant changes nothing,
logits of +-1e4 give finite values and gradients, and log_softmax is log(softmax).
"""
import math
import operator
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nanograd as ng
from nanograd import Tensor, backend
from nanograd import functional as F

SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, max_side=4)
VALUES = st.floats(-5, 5)
AWAY_FROM_ZERO = st.floats(0.5, 2) | st.floats(-2, -0.5)  # keeps division well conditioned

UNARY = {  # name: (nanograd op, NumPy reference, input domain)
    "neg": (operator.neg, np.negative, VALUES),
    "exp": (Tensor.exp, np.exp, VALUES),
    "log": (Tensor.log, np.log, st.floats(0.01, 5)),
    "sqrt": (Tensor.sqrt, np.sqrt, st.floats(0, 5)),
    "tanh": (Tensor.tanh, np.tanh, VALUES),
    "sigmoid": (Tensor.sigmoid, lambda x: 1 / (1 + np.exp(-x)), VALUES),
    "relu": (Tensor.relu, lambda x: np.maximum(x, 0), VALUES),
    "gelu": (F.gelu, lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))), VALUES),
    "pow": (lambda t: t ** 3, lambda x: x ** 3, VALUES),
}
BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv}


def tensor(array, device, requires_grad=False):
    return Tensor(backend.to_device(array, device), requires_grad=requires_grad)


@pytest.mark.parametrize("name", UNARY)
@given(data=st.data())
def test_unary_matches_numpy(name, data, device):
    op, reference, values = UNARY[name]
    x = data.draw(hnp.arrays(np.float64, SHAPES, elements=values))
    np.testing.assert_allclose(op(tensor(x, device)).numpy(), reference(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", BINARY)
@given(data=st.data())
def test_binary_broadcasts_like_numpy(name, data, device):
    op = BINARY[name]
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3))
    a, b = (data.draw(hnp.arrays(np.float64, s, elements=AWAY_FROM_ZERO)) for s in shapes.input_shapes)
    ta, tb = tensor(a, device, requires_grad=True), tensor(b, device, requires_grad=True)
    np.testing.assert_allclose(op(ta, tb).numpy(), op(a, b), rtol=1e-12)
    assert ng.gradcheck(op, ta, tb)  # gradients are summed back down to each input's shape


@pytest.mark.parametrize("name", ["sum", "mean", "max", "var"])
@given(data=st.data())
def test_reduction_matches_numpy(name, data, device):
    x = data.draw(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=4, max_side=4), elements=VALUES))
    axis = data.draw(st.none() | st.integers(-x.ndim, x.ndim - 1) | hnp.valid_tuple_axes(x.ndim))
    keepdims = data.draw(st.booleans())
    t = tensor(x, device, requires_grad=True)
    out = getattr(t, name)(axis=axis, keepdims=keepdims)
    expected = getattr(np, name)(x, axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    out.sum().backward()
    assert t.grad.shape == x.shape


def test_max_splits_gradient_among_ties():
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0.5, 0.5], [1, 0, 0]])


LOGITS = hnp.arrays(np.float64, SHAPES, elements=st.floats(-50, 50))


@given(x=LOGITS, shift=st.floats(-100, 100))
def test_softmax_rows_sum_to_one_and_ignore_a_shift(x, shift):
    p = F.softmax(Tensor(x)).data
    np.testing.assert_allclose(p.sum(axis=-1), 1, rtol=1e-12)
    np.testing.assert_allclose(F.softmax(Tensor(x + shift)).data, p, atol=1e-10)


@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
@given(x=hnp.arrays(np.float32, SHAPES, elements=st.sampled_from([-1e4, -1.0, 0.0, 1.0, 1e4])))
def test_stable_for_huge_logits(fn, x):
    t = Tensor(x, requires_grad=True)
    out = fn(t)
    (out * Tensor(np.linspace(-1, 1, x.size, dtype=np.float32).reshape(x.shape))).sum().backward()
    assert np.isfinite(out.data).all() and np.isfinite(t.grad).all()


@given(x=hnp.arrays(np.float64, SHAPES, elements=st.floats(-1000, 1000)))
def test_log_softmax_is_log_of_softmax(x):
    with np.errstate(divide="ignore"):
        reference = np.log(F.softmax(Tensor(x)).data)
    normal = reference > np.log(np.finfo(np.float64).tiny)  # exp underflows (to 0) below this
    np.testing.assert_allclose(F.log_softmax(Tensor(x)).data[normal], reference[normal], rtol=1e-9, atol=1e-9)


@given(x=hnp.arrays(np.float32, SHAPES, elements=st.floats(-1e4, 1e4, width=32)))
def test_gelu_is_the_tanh_formula_everywhere_without_warnings(x):
    """The exp form x sigmoid(2u) equals GPT-2's x/2 (1 + tanh(u)), overflow included (no warning)."""
    t = Tensor(x, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = F.gelu(t)
        y.sum().backward()
    x64 = x.astype(np.float64)
    u = math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)
    np.testing.assert_allclose(y.data, 0.5 * x64 * (1 + np.tanh(u)), rtol=1e-5, atol=1e-6)
    assert np.isfinite(t.grad).all()
