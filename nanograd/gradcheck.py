"""Finite-difference gradient checking: the test every op and layer must pass.

`gradcheck(fn, *inputs)` projects fn's output onto a fixed random direction R, so one
backward pass gives d(sum(fn * R))/d(input) for every input element; each element is
then nudged by +-eps and the same scalar recomputed (central differences). Inputs must
be float64: float32 differences are too coarse to tell a small bug from rounding.

Left out: complex numbers, second derivatives.
"""
import numpy as np

from . import backend
from .tensor import Tensor


class GradcheckError(AssertionError):
    """The analytic and numeric gradients disagree; the message names the worst element."""


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Compare backward against central differences for every input with requires_grad.

    fn: Tensors -> Tensor. Returns True, or raises GradcheckError naming the input,
    element, analytic and numeric values of the worst disagreement.
    """
    checked = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    for x in checked:
        if x.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 inputs, got {x.dtype}: use Tensor(x.astype('float64'))")
        x.data = backend.get_array_module(x.data).ascontiguousarray(x.data)  # so nudging a flat view nudges x
    out = fn(*inputs)
    xp = backend.get_array_module(out.data)
    direction = xp.asarray(np.random.default_rng(seed).standard_normal(out.shape))

    def objective():
        return float((fn(*inputs).data * direction).sum())

    for x in checked:
        x.grad = None
    (out * Tensor(direction)).sum().backward()
    for n, x in enumerate(inputs):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        analytic = backend.to_device(x.grad if x.grad is not None else xp.zeros_like(x.data), "cpu")
        numeric = _numeric_gradient(objective, x, eps)
        _compare(n, x.shape, analytic, numeric, atol, rtol)
    return True


def _numeric_gradient(objective, x, eps):
    """(f(x + eps e_i) - f(x - eps e_i)) / 2 eps for each element i of x."""
    grad = np.zeros(x.shape)
    flat = x.data.reshape(-1)  # a view: writing it nudges x
    for i in range(flat.size):
        orig = float(flat[i])
        flat[i] = orig + eps
        plus = objective()
        flat[i] = orig - eps
        minus = objective()
        flat[i] = orig
        grad.flat[i] = (plus - minus) / (2 * eps)
    return grad


def _compare(n, shape, analytic, numeric, atol, rtol):
    err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    if err.size and err.max() > 0:
        i = np.unravel_index(int(err.argmax()), shape)
        raise GradcheckError(f"gradcheck: input {n} (shape {shape}) at index {tuple(map(int, i))}: "
                             f"analytic {analytic[i]:.6g}, numeric {numeric[i]:.6g} "
                             f"(atol {atol}, rtol {rtol}); {int((err > 0).sum())} of {err.size} elements differ")
