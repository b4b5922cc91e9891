"""Neural-network functions, each a fused op: one forward, one hand-derived backward.

Fusing matters twice: it keeps the graph small (a layer norm is one node, not ten), and
it lets the backward reuse what the forward computed. Each docstring gives the formula
its backward implements; `tests/nanograd/test_gradcheck.py` checks each one against
finite differences in float64.

The heavy ones (gelu, layer_norm, linear, cross_entropy) keep their arithmetic in small
private kernels (`_gelu_forward`, `_layer_norm_backward`, ...) that work in place on a block
of rows; `parallel.map_blocks` runs a kernel over the blocks on every core (`tests/nanograd/test_parallel.py` checks that the
split answer is the unsplit one).

Left out: 2-D convolutions, pooling, losses other than cross-entropy.
"""
import math

import numpy as np

from . import backend, parallel
from .attention import causal_self_attention, scaled_dot_product_attention
from .ops import exp, log, matmul, relu, sigmoid, sqrt, tanh
from .tensor import Tensor, make_result

__all__ = ["causal_self_attention", "cross_entropy", "dropout", "embedding", "exp", "gelu", "layer_norm", "linear",
           "log", "log_softmax", "matmul", "relu", "scaled_dot_product_attention", "sigmoid", "softmax",
           "softmax_array", "sqrt", "tanh"]

_GELU_C = math.sqrt(2 / math.pi)


def gelu(x):
    """GELU, tanh approximation (as GPT-2): y = x/2 (1 + tanh(u)), u = c (x + 0.044715 x^3), c = sqrt(2/pi).

    Computed as y = x s with s = sigmoid(2u) = 1 / (1 + exp(-2u)), the same function
    ((1 + tanh u)/2 = sigmoid(2u)) with one exp in place of tanh, which NumPy computes faster.
    dy/dx = s + x s (1 - s) 2u', with u' = c (1 + 3 * 0.044715 x^2).
    Both passes are kernels over blocks of rows, in place, run on every core.
    """
    xp = backend.get_array_module(x.data)
    a = xp.ascontiguousarray(x.data).reshape(-1)  # elementwise: any shape, as one long row
    e, y = xp.empty_like(a), xp.empty_like(a)
    parallel.map_blocks(_gelu_forward, a, e, y)
    def backward(g):
        d = xp.empty_like(a)
        parallel.map_blocks(_gelu_backward, a, e, xp.ascontiguousarray(g).reshape(-1), d)
        return (d.reshape(x.shape),)
    return make_result(y.reshape(x.shape), (x,), backward)


def _gelu_forward(a, e, y):
    """e = 1 + exp(-2u), y = a / e = a sigmoid(2u); one block."""
    xp = backend.get_array_module(a)
    xp.multiply(a, a, out=e)
    e *= -2 * _GELU_C * 0.044715
    e -= 2 * _GELU_C
    e *= a                             # -2u = -2c (a + 0.044715 a^3)
    with np.errstate(over="ignore"):   # a < -10 or so: exp overflows to inf, y = a / inf = -0, as it should
        xp.exp(e, out=e)
    e += 1
    xp.divide(a, e, out=y)


def _gelu_backward(a, e, g, d):
    """d = g s (1 + 2 a u' (1 - s)), with s = 1 / e; one block."""
    xp = backend.get_array_module(a)
    s = xp.reciprocal(e)               # sigmoid(2u)
    xp.multiply(a, a, out=d)
    d *= 6 * _GELU_C * 0.044715
    d += 2 * _GELU_C                   # 2u' = 2c (1 + 3 * 0.044715 a^2)
    d *= a
    d *= 1 - s                         # 2 a u' (1 - s)
    d += 1
    d *= s
    d *= g


def softmax_array(a, axis=-1):
    """Numerically stable softmax of a plain array: exp(a - max) / sum(exp(a - max))."""
    xp = backend.get_array_module(a)
    e = xp.exp(a - a.max(axis=axis, keepdims=True))
    e *= 1 / e.sum(axis=axis, keepdims=True)
    return e


def softmax(x, axis=-1):
    """y = softmax(x). Backward: dx = y * (g - sum(g * y)), the sum over `axis`."""
    y = softmax_array(x.data, axis)
    def backward(g):
        return (y * (g - (g * y).sum(axis=axis, keepdims=True)),)
    return make_result(y, (x,), backward)


def log_softmax(x, axis=-1):
    """y = x - logsumexp(x). Backward: dx = g - softmax(x) * sum(g)."""
    xp = backend.get_array_module(x.data)
    shifted = x.data - x.data.max(axis=axis, keepdims=True)
    y = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
    def backward(g):
        return (g - xp.exp(y) * g.sum(axis=axis, keepdims=True),)
    return make_result(y, (x,), backward)


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """Normalise over the last axis, then scale and shift: y = xhat * w + b.

    xhat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps). With dxhat = g * w:
      dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
      dw = sum over rows of g * xhat,   db = sum over rows of g.
    Shapes: x (..., C); weight, bias (C,). Both passes are row-wise kernels run on every core;
    the backward's kernel returns each block's share of dw and db, summed here.
    """
    xp = backend.get_array_module(x.data)
    C = x.shape[-1]
    x2 = xp.ascontiguousarray(x.data).reshape(-1, C)  # (N, C)
    xhat, y, rstd = xp.empty_like(x2), xp.empty_like(x2), xp.empty((len(x2), 1), x2.dtype)
    w, b = (None if t is None else t.data for t in (weight, bias))
    parallel.map_blocks(_layer_norm_forward, x2, xhat, rstd, y, weight=w, bias=b, eps=eps)
    def backward(g):
        dx = xp.empty_like(x2)
        parts = parallel.map_blocks(_layer_norm_backward, xp.ascontiguousarray(g).reshape(-1, C), xhat, rstd, dx,
                                    weight=w)
        dw = _summed([p[0] for p in parts]) if weight is not None and weight.requires_grad else None
        db = _summed([p[1] for p in parts]) if bias is not None and bias.requires_grad else None
        return _present((dx.reshape(x.shape), dw, db), (x, weight, bias))
    return make_result(y.reshape(x.shape), _present((x, weight, bias)), backward)


def _layer_norm_forward(x, xhat, rstd, y, weight, bias, eps):
    """xhat, rstd and y = xhat * w + b for a block of rows (n, C); rstd is (n, 1).

    Row means and row dot products are matmuls (x @ 1/C, xhat . xhat): faster than
    NumPy's reductions along a short last axis.
    """
    xp = backend.get_array_module(x)
    xp.subtract(x, _row_mean(x), out=xhat)  # x - mean
    xp.multiply(_row_dot(xhat, xhat), 1 / x.shape[-1], out=rstd)  # var
    rstd += eps
    xp.sqrt(rstd, out=rstd)
    xp.reciprocal(rstd, out=rstd)
    xhat *= rstd
    if weight is None:
        y[...] = xhat
    else:
        xp.multiply(xhat, weight, out=y)
    if bias is not None:
        y += bias


def _layer_norm_backward(g, xhat, rstd, dx, weight):
    """dx for a block of rows, into dx; returns the block's (sum of g * xhat, sum of g) over rows."""
    xp = backend.get_array_module(g)
    if weight is None:
        dx[...] = g
    else:
        xp.multiply(g, weight, out=dx)  # dxhat
    mean_dxhat_xhat = _row_dot(dx, xhat) / xhat.shape[-1]  # (n, 1)
    dx -= _row_mean(dx)
    dx -= xhat * mean_dxhat_xhat
    dx *= rstd
    return xp.einsum("nc,nc->c", g, xhat), _sum_rows(g)


def _row_mean(a):
    """Mean over the last axis as a matrix-vector product: (n, C) -> (n, 1)."""
    xp = backend.get_array_module(a)
    return (a @ xp.full(a.shape[-1], 1 / a.shape[-1], a.dtype))[:, None]


def _sum_rows(a):
    """Sum over the rows as a vector-matrix product: (n, C) -> (C,)."""
    return backend.get_array_module(a).ones(len(a), a.dtype) @ a


def _row_dot(a, b):
    """sum(a * b) over the last axis, keepdims, as a stack of (1, C) @ (C, 1) products: (..., C) -> (..., 1).

    Never materialises a * b.
    """
    return (a[..., None, :] @ b[..., :, None])[..., 0]


def _present(values, tensors=None):
    """The items of `values` whose tensor (default: the value itself) is not None."""
    return tuple(v for v, t in zip(values, tensors or values) if t is not None)


def linear(x, weight, bias=None):
    """y = x @ W^T + b, as gemms over blocks of rows. x (..., in), W (out, in), b (out,).

    Backward with g (N, out), x as (N, in): dx = g @ W, dW = g^T @ x, db = sum over rows of g.
    Each thread takes a block of rows: its rows of y and dx, and its rows' share of dW and
    db (a sum over rows is the sum of the blocks' sums), added up at the end. A thread thus
    reads its rows of g and x once, for dx and dW both. BLAS runs one thread inside each
    block (see nanograd.parallel).
    """
    xp = backend.get_array_module(x.data)
    if weight.shape[-1] != x.shape[-1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features (shape {x.shape}), "
                         f"weight expects {weight.shape[-1]} (shape {weight.shape})")
    x2 = x.data.reshape(-1, x.shape[-1])  # (N, in)
    threads = parallel.get_num_threads()
    y = xp.empty((len(x2), weight.shape[0]), x2.dtype)  # (N, out)
    parallel.map_blocks(_linear_forward, x2, y, weight=weight.data, bias=None if bias is None else bias.data,
                        blocks=threads)
    def backward(g):
        g2 = g.reshape(-1, weight.shape[0])  # (N, out)
        dx = xp.empty_like(x2) if x.requires_grad else None
        parts = parallel.map_blocks(_linear_backward, g2, x2, dx, weight=weight.data, want_dw=weight.requires_grad,
                                    want_db=bias is not None and bias.requires_grad, blocks=threads)
        dw, db = (_summed(share) for share in zip(*parts))
        return _present((None if dx is None else dx.reshape(x.shape), dw, db), (x, weight, bias))
    return make_result(y.reshape(*x.shape[:-1], weight.shape[0]), _present((x, weight, bias)), backward)


def _linear_forward(x, y, weight, bias):
    """y = x @ W^T (+ b) for a block of rows, into y."""
    backend.get_array_module(x).matmul(x, weight.T, out=y)
    if bias is not None:
        y += bias


def _linear_backward(g, x, dx, *, weight, want_dw, want_db):
    """One block of rows of linear's backward: dx = g @ W into dx (skipped when None), and the
    block's shares of dW = g^T @ x and db = sum of g's rows, returned (None when not wanted)."""
    xp = backend.get_array_module(g)
    if dx is not None:
        xp.matmul(g, weight, out=dx)
    return (g.T @ x if want_dw else None), (_sum_rows(g) if want_db else None)


def _summed(shares):
    """The sum of the blocks' shares, added into the first; None when they are None."""
    total = shares[0]
    if total is not None:
        for share in shares[1:]:
            total += share
    return total


def embedding(idx, weight):
    """Rows of `weight` picked by integer ids: idx (...) -> (..., C).

    Backward scatters g back into the rows it came from; a repeated id accumulates.
    """
    ids = idx.data if isinstance(idx, Tensor) else idx
    xp = backend.get_array_module(weight.data)
    ids = xp.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got {ids.dtype}")
    def backward(g):
        grad = xp.zeros_like(weight.data)
        backend.scatter_add(grad, ids.ravel(), g.reshape(-1, weight.shape[1]))
        return (grad,)
    return make_result(weight.data[ids], (weight,), backward)


def _log_sum_exp(z, lse):
    """lse = max + log(sum(exp(z - max))) of each row of a block z (n, C), into lse (n, 1)."""
    xp = backend.get_array_module(z)
    m = z.max(axis=1, keepdims=True)
    e = xp.subtract(z, m)
    xp.exp(e, out=e)
    xp.log(e.sum(axis=1, keepdims=True), out=lse)
    lse += m


def _cross_entropy_backward(z, lse, t, scale, dz):
    """dz = (softmax(z) - onehot(t)) * scale for a block of rows, into dz."""
    xp = backend.get_array_module(z)
    xp.subtract(z, lse, out=dz)
    xp.exp(dz, out=dz)
    dz[xp.arange(len(t)), t] -= 1
    dz *= scale


def dropout(x, p=0.1, training=True):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    The identity when not training or p == 0, so evaluation needs no rescaling.
    """
    if not training or p == 0:
        return x
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    xp = backend.get_array_module(x.data)
    mask = (backend.uniform(xp, x.shape, x.dtype) >= p).astype(x.dtype) / x.dtype.type(1 - p)
    return make_result(x.data * mask, (x,), lambda g: (g * mask,))


def cross_entropy(logits, targets, ignore_index=-1):
    """Mean of -log softmax(logits)[target] over targets != ignore_index.

    logits (N, C) or (B, T, C); targets integer (N,) or (B, T). With p = softmax(logits),
    n = number of counted targets: dlogits = (p - onehot(target)) / n on counted rows,
    0 on ignored rows. The one-hot is never built: 1 is subtracted at the target index.
    When every target is ignored the loss is 0 (PyTorch gives nan).
    """
    xp = backend.get_array_module(logits.data)
    t = xp.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class ids, got dtype {t.dtype}")
    if logits.shape[:-1] != t.shape:
        raise ValueError(f"cross_entropy: logits {logits.shape} need targets of shape "
                         f"{logits.shape[:-1]}, got {t.shape}")
    C = logits.shape[-1]
    z = logits.data.reshape(-1, C)  # (N, C)
    t = t.reshape(-1)
    keep = t != ignore_index
    safe_t = xp.where(keep, t, 0)
    lse = xp.empty((len(z), 1), z.dtype)  # log-sum-exp of each row
    parallel.map_blocks(_log_sum_exp, z, lse)
    n = max(int(keep.sum()), 1)
    loss = ((lse[:, 0] - z[xp.arange(len(t)), safe_t]) * keep).sum() / n
    def backward(g):
        dz = xp.empty_like(z)
        parallel.map_blocks(_cross_entropy_backward, z, lse, safe_t, (keep * (g / n)).astype(z.dtype)[:, None], dz)
        return (dz.reshape(logits.shape),)
    return make_result(xp.asarray(loss, dtype=logits.dtype), (logits,), backward)
