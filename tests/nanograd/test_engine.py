"""The autodiff engine itself: graph walking, gradient accumulation, no_grad, freeing memory.

Checks that backward handles a 10,000-op chain without recursion, sums the gradients of a
tensor used twice and across backward calls, records nothing under `no_grad` (as a
context manager and as a decorator), and that once backward has run the graph lets go
of the arrays its closures saved.
"""
import gc
import weakref

import numpy as np
import pytest

import nanograd as ng
from nanograd import Tensor, backend


def leaf(array, device):
    return Tensor(backend.to_device(np.asarray(array, dtype=np.float64), device), requires_grad=True)


def test_long_chain_backpropagates_without_recursion(device):
    x = leaf(1.0, device)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001 ** 10_000)


def test_tensor_used_twice_accumulates(device):
    x = leaf([1.0, -2.0, 3.0], device)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.numpy() * 2 + 1, backend.to_device(x.grad, "cpu"))


def test_two_backward_calls_accumulate(device):
    x = leaf([1.0, -2.0], device)
    for _ in range(2):
        (x * 3).sum().backward()
    np.testing.assert_array_equal(backend.to_device(x.grad, "cpu"), [6.0, 6.0])


def test_only_inputs_that_require_grad_get_one(device):
    x, c = leaf([1.0, 2.0], device), Tensor(backend.to_device(np.array([3.0, 4.0]), device))
    (x * c).sum().backward()
    assert c.grad is None and not c.requires_grad
    assert (x.detach() * c).requires_grad is False


def assert_not_recorded(out):
    assert out.requires_grad is False
    assert out._backward is None and out._parents == ()


def test_no_grad_context_manager(device):
    x = leaf([1.0, 2.0], device)
    with ng.no_grad():
        assert_not_recorded((x * 2).exp())
        assert not ng.is_grad_enabled()
    assert ng.is_grad_enabled()
    assert (x * 2).requires_grad


def test_no_grad_decorator_also_when_nested():
    @ng.no_grad()
    def countdown(x, n):  # re-enters the same no_grad object while it is active
        return x.exp() if n == 0 else countdown(x, n - 1)

    assert_not_recorded(countdown(leaf([1.0], "cpu"), 3))
    assert ng.is_grad_enabled()


def test_no_grad_restores_after_an_exception():
    with pytest.raises(ZeroDivisionError), ng.no_grad():
        1 / 0
    assert ng.is_grad_enabled()


def test_backward_releases_saved_arrays(device):
    x = leaf(np.ones(4), device)
    h = x.exp()  # exp's backward closure saves its output array, h.data
    loss = (h * 2).sum()
    saved = weakref.ref(h.data)
    del h
    gc.collect()
    assert saved() is not None  # the graph behind `loss` still holds it
    loss.backward()
    gc.collect()
    assert saved() is None  # backward dropped the closures, and the array with them


def test_backward_clears_every_node(device):
    x = leaf(np.ones(3), device)
    nodes = [x * 2]
    nodes.append(nodes[-1].tanh())
    nodes.append(nodes[-1].sum())
    nodes[-1].backward()
    assert all(n._backward is None and n._parents == () for n in nodes)


def test_second_backward_through_a_freed_graph_raises():
    x = ng.Tensor(np.ones(3), requires_grad=True)
    y = x * 3
    y.sum().backward()
    with pytest.raises(RuntimeError, match="second time"):
        (y * 2).sum().backward()


def test_gradcheck_perturbs_non_contiguous_inputs():
    x = ng.Tensor(np.arange(12.0).reshape(3, 4).T, requires_grad=True)  # a transposed view
    assert ng.gradcheck(lambda x: x * x, x)
