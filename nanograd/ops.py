"""Elementwise, reduction and shape ops: each forward beside its local backward.

Every op has the same form: compute the output array, then define `backward(g)` that
returns d(loss)/d(input) for each input given g = d(loss)/d(output). Binary ops
broadcast like NumPy, and `unbroadcast` sums a gradient back down to its input's shape.
At the bottom, the ops are attached to Tensor as methods and operators.

Left out: 1-D matmul, comparison ops with gradients, in-place variants.
"""
import math

import numpy as np

from . import backend
from .tensor import Tensor, as_tensor, make_result


def unbroadcast(g, shape):
    """Sum g (shape of the broadcast result) down to `shape`, undoing NumPy broadcasting."""
    if g.shape == shape:
        return g
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))  # leading axes broadcasting added
    kept = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=kept, keepdims=True) if kept else g


def _operands(a, b):
    a = as_tensor(a, like=b if isinstance(b, Tensor) else None)
    return a, as_tensor(b, like=a)


# ---- arithmetic ----------------------------------------------------------------------
def add(a, b):
    a, b = _operands(a, b)
    def backward(g):  # d(a+b) = da + db
        return unbroadcast(g, a.shape), unbroadcast(g, b.shape)
    return make_result(a.data + b.data, (a, b), backward)


def sub(a, b):
    a, b = _operands(a, b)
    def backward(g):
        return unbroadcast(g, a.shape), unbroadcast(-g, b.shape)
    return make_result(a.data - b.data, (a, b), backward)


def mul(a, b):
    a, b = _operands(a, b)
    def backward(g):  # d(ab) = b da + a db
        return (unbroadcast(g * b.data, a.shape) if a.requires_grad else None,
                unbroadcast(g * a.data, b.shape) if b.requires_grad else None)
    return make_result(a.data * b.data, (a, b), backward)


def div(a, b):
    a, b = _operands(a, b)
    def backward(g):  # d(a/b) = da / b - a db / b^2
        return (unbroadcast(g / b.data, a.shape) if a.requires_grad else None,
                unbroadcast(-g * a.data / (b.data * b.data), b.shape) if b.requires_grad else None)
    return make_result(a.data / b.data, (a, b), backward)


def neg(a):
    return make_result(-a.data, (a,), lambda g: (-g,))


def pow(a, exponent):
    """a ** exponent for a scalar exponent: d(a^p) = p a^(p-1) da."""
    if isinstance(exponent, Tensor) or np.ndim(exponent) != 0:
        raise TypeError("pow: the exponent must be a Python number (tensor exponents are not supported)")
    def backward(g):
        return (g * (exponent * a.data ** (exponent - 1)),)
    return make_result(a.data ** exponent, (a,), backward)


def matmul(a, b):
    """a @ b for 2-D or batched operands (batch dims broadcast), as np.matmul.

    Shapes: (..., n, k) @ (..., k, m) -> (..., n, m).
    Backward: dA = g @ B^T, dB = A^T @ g, each summed over broadcast batch dims.
    A (..., n, k) @ (k, m) product is computed as one 2-D gemm over all rows.
    """
    a, b = _operands(a, b)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align "
                         "(need (..., n, k) @ (..., k, m), both at least 2-D)")
    if b.ndim == 2 and a.ndim > 2:
        return _matmul_rows(a, b)
    def backward(g):
        return (unbroadcast(g @ b.data.swapaxes(-1, -2), a.shape) if a.requires_grad else None,
                unbroadcast(a.data.swapaxes(-1, -2) @ g, b.shape) if b.requires_grad else None)
    return make_result(a.data @ b.data, (a, b), backward)


def _matmul_rows(a, b):
    """(..., k) @ (k, m): flatten the leading dims so BLAS sees one big gemm."""
    a2 = a.data.reshape(-1, a.shape[-1])  # (N, k)
    out = (a2 @ b.data).reshape(*a.shape[:-1], b.shape[-1])
    def backward(g):
        g2 = g.reshape(-1, b.shape[-1])  # (N, m)
        return ((g2 @ b.data.T).reshape(a.shape) if a.requires_grad else None,
                a2.T @ g2 if b.requires_grad else None)
    return make_result(out, (a, b), backward)


# ---- elementwise functions -----------------------------------------------------------
def exp(a):
    out = backend.get_array_module(a.data).exp(a.data)
    return make_result(out, (a,), lambda g: (g * out,))  # d(e^a) = e^a da


def log(a):
    xp = backend.get_array_module(a.data)
    return make_result(xp.log(a.data), (a,), lambda g: (g / a.data,))


def sqrt(a):
    out = backend.get_array_module(a.data).sqrt(a.data)
    return make_result(out, (a,), lambda g: (g / (2 * out),))


def tanh(a):
    out = backend.get_array_module(a.data).tanh(a.data)
    return make_result(out, (a,), lambda g: (g * (1 - out * out),))


def sigmoid(a):
    xp = backend.get_array_module(a.data)
    out = 0.5 * (xp.tanh(0.5 * a.data) + 1)  # = 1 / (1 + e^-a), without overflow
    return make_result(out, (a,), lambda g: (g * out * (1 - out),))


def relu(a):
    mask = a.data > 0
    return make_result(a.data * mask, (a,), lambda g: (g * mask,))


# ---- reductions ------------------------------------------------------------------------
def _axes(ndim, axis):
    """Normalise axis (None, int or tuple) to a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(ax % ndim for ax in axes))


def _expand(g, shape, axes, keepdims):
    """Broadcast a reduced gradient back over the reduced axes of `shape`."""
    xp = backend.get_array_module(g)
    if not keepdims:
        g = xp.expand_dims(g, axes)
    return xp.broadcast_to(g, shape)


def sum(a, axis=None, keepdims=False):
    axes = _axes(a.ndim, axis)
    def backward(g):  # every summed element gets the output's gradient
        return (_expand(g, a.shape, axes, keepdims),)
    return make_result(a.data.sum(axis=axes, keepdims=keepdims), (a,), backward)


def mean(a, axis=None, keepdims=False):
    axes = _axes(a.ndim, axis)
    n = math.prod(a.shape[ax] for ax in axes)
    def backward(g):
        return (_expand(g / n, a.shape, axes, keepdims),)
    return make_result(a.data.mean(axis=axes, keepdims=keepdims), (a,), backward)


def max(a, axis=None, keepdims=False):
    """Maximum over axes; the gradient is split equally among tied maxima."""
    axes = _axes(a.ndim, axis)
    out = a.data.max(axis=axes, keepdims=True)
    def backward(g):
        mask = (a.data == out).astype(a.dtype)  # a bool mask would divide into float64
        share = mask / mask.sum(axis=axes, keepdims=True)
        return (_expand(g, a.shape, axes, keepdims) * share,)
    return make_result(out if keepdims else out.squeeze(axes), (a,), backward)


def var(a, axis=None, keepdims=False, ddof=0):
    """Variance as np.var (ddof=0: divide by n). d var / dx_i = 2 (x_i - mean) / (n - ddof)."""
    axes = _axes(a.ndim, axis)
    n = math.prod(a.shape[ax] for ax in axes)
    centered = a.data - a.data.mean(axis=axes, keepdims=True)
    out = (centered * centered).sum(axis=axes, keepdims=keepdims) / (n - ddof)
    def backward(g):
        return (_expand(g, a.shape, axes, keepdims) * centered * (2 / (n - ddof)),)
    return make_result(out, (a,), backward)


# ---- shapes ---------------------------------------------------------------------------
def reshape(a, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return make_result(a.data.reshape(shape), (a,), lambda g: (g.reshape(a.shape),))


def transpose(a, *axes):
    """Permute axes (reverse them when none are given); backward applies the inverse."""
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
    axes = tuple(axes) or tuple(reversed(range(a.ndim)))
    inverse = tuple(np.argsort(axes))
    return make_result(a.data.transpose(axes), (a,), lambda g: (g.transpose(inverse),))


def getitem(a, index):
    """a[index] for slices, ints and integer arrays; repeated indices accumulate in backward."""
    index = tuple(i.data if isinstance(i, Tensor) else i for i in index) \
        if isinstance(index, tuple) else (index.data if isinstance(index, Tensor) else index)
    def backward(g):
        grad = backend.get_array_module(g).zeros_like(a.data)
        if _is_basic(index):  # slices and ints select each element at most once
            grad[index] = g
        else:
            backend.scatter_add(grad, index, g)
        return (grad,)
    return make_result(a.data[index], (a,), backward)


def _is_basic(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in items)


def concatenate(tensors, axis=0):
    tensors = [as_tensor(t) for t in tensors]
    xp = backend.get_array_module(tensors[0].data)
    bounds = np.cumsum([t.shape[axis] for t in tensors])[:-1].tolist()
    def backward(g):  # each input gets its own slab of g
        return tuple(xp.split(g, bounds, axis=axis))
    return make_result(xp.concatenate([t.data for t in tensors], axis=axis), tensors, backward)


def stack(tensors, axis=0):
    tensors = [as_tensor(t) for t in tensors]
    xp = backend.get_array_module(tensors[0].data)
    def backward(g):
        return tuple(xp.moveaxis(g, axis, 0))
    return make_result(xp.stack([t.data for t in tensors], axis=axis), tensors, backward)


def split(a, indices_or_sections, axis=0):
    """np.split as a list of tensors (each a slice of `a`, so each has its own backward)."""
    xp = backend.get_array_module(a.data)
    pieces = xp.split(a.data, indices_or_sections, axis=axis)
    starts = np.cumsum([0] + [p.shape[axis] for p in pieces])
    index = lambda i: (slice(None),) * (axis % a.ndim) + (slice(starts[i], starts[i + 1]),)
    return [getitem(a, index(i)) for i in range(len(pieces))]


def where(condition, a, b):
    """Elementwise `a if condition else b` (condition: bool array, not differentiated)."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    a, b = _operands(a, b)
    xp = backend.get_array_module(a.data)
    def backward(g):
        zero = xp.zeros((), dtype=g.dtype)
        return unbroadcast(xp.where(cond, g, zero), a.shape), unbroadcast(xp.where(cond, zero, g), b.shape)
    return make_result(xp.where(cond, a.data, b.data), (a, b), backward)


def masked_fill(a, mask, value):
    """a with `value` wherever mask is True (as torch.masked_fill)."""
    return where(mask, as_tensor(value, like=a), a)


# ---- Tensor methods and operators ------------------------------------------------------
def _install():
    swap = lambda f: (lambda a, b: f(b, a))
    methods = {
        "__add__": add, "__radd__": swap(add), "__sub__": sub, "__rsub__": swap(sub),
        "__mul__": mul, "__rmul__": swap(mul), "__truediv__": div, "__rtruediv__": swap(div),
        "__matmul__": matmul, "__rmatmul__": swap(matmul), "__neg__": neg, "__pow__": pow,
        "__getitem__": getitem, "exp": exp, "log": log, "sqrt": sqrt, "tanh": tanh,
        "sigmoid": sigmoid, "relu": relu, "sum": sum, "mean": mean, "max": max, "var": var,
        "reshape": reshape, "transpose": transpose, "masked_fill": masked_fill,
    }
    for name, fn in methods.items():
        setattr(Tensor, name, fn)
    Tensor.T = property(lambda self: transpose(self))


_install()
