"""Neural-network functions, each a fused op: one forward, one hand-derived backward.

Fusing matters twice: it keeps the graph small (a layer norm is one node, not ten), and
it lets the backward reuse what the forward computed. Each docstring gives the formula
its backward implements; `tests/nanograd/test_gradcheck.py` checks each one against
finite differences in float64.

Left out: 2-D convolutions, pooling, losses other than cross-entropy.
"""
import math

from . import backend
from .attention import scaled_dot_product_attention
from .ops import exp, log, matmul, relu, sigmoid, sqrt, tanh
from .tensor import Tensor, make_result

__all__ = ["cross_entropy", "dropout", "embedding", "exp", "gelu", "layer_norm", "linear", "log", "log_softmax",
           "matmul", "relu", "scaled_dot_product_attention", "sigmoid", "softmax", "softmax_array", "sqrt", "tanh"]

_GELU_C = math.sqrt(2 / math.pi)


def gelu(x):
    """GELU, tanh approximation (as GPT-2): y = x/2 (1 + tanh(u)), u = c (x + 0.044715 x^3).

    dy/dx = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3 * 0.044715 x^2), with t = tanh(u), c = sqrt(2/pi).
    Both passes work in place on arrays they own, so each costs two allocations, not ten.
    """
    xp = backend.get_array_module(x.data)
    a = x.data
    t = a * a
    t *= 0.044715
    t += 1
    t *= a
    t *= _GELU_C
    xp.tanh(t, out=t)                      # t = tanh(c (a + 0.044715 a^3))
    y = t + 1
    y *= a
    y *= 0.5                               # y = a/2 (1 + t)
    def backward(g):
        d = a * a
        d *= 3 * 0.044715 * _GELU_C
        d += _GELU_C                       # c (1 + 3 * 0.044715 a^2)
        d *= a
        d *= 0.5
        d *= 1 - t * t                     # a/2 (1 - t^2) c (1 + ...)
        d += 0.5
        d += 0.5 * t                       # + (1 + t)/2
        d *= g
        return (d,)
    return make_result(y, (x,), backward)


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
    Shapes: x (..., C); weight, bias (C,).
    """
    xp = backend.get_array_module(x.data)
    C = x.shape[-1]
    xhat = x.data - x.data.mean(axis=-1, keepdims=True)  # x - mean, (..., C)
    rstd = 1 / xp.sqrt(_row_dot(xp, xhat, xhat) / C + eps)  # (..., 1)
    xhat *= rstd
    y = xhat * weight.data if weight is not None else xhat.copy()
    if bias is not None:
        y += bias.data
    rows = tuple(range(x.ndim - 1))
    def backward(g):
        dx = g * weight.data if weight is not None else g.copy()  # dxhat, then dx in place
        mean_dxhat_xhat = _row_dot(xp, dx, xhat) / C  # (..., 1)
        dx -= dx.mean(axis=-1, keepdims=True)
        dx -= xhat * mean_dxhat_xhat
        dx *= rstd
        dw = (g * xhat).sum(axis=rows) if weight is not None and weight.requires_grad else None
        db = g.sum(axis=rows) if bias is not None and bias.requires_grad else None
        return _present((dx, dw, db), (x, weight, bias))
    return make_result(y, _present((x, weight, bias)), backward)


def _row_dot(xp, a, b):
    """sum(a * b) over the last axis, keepdims, without materialising a * b: (..., C) -> (..., 1)."""
    return xp.einsum("...c,...c->...", a, b)[..., None]


def _present(values, tensors=None):
    """The items of `values` whose tensor (default: the value itself) is not None."""
    return tuple(v for v, t in zip(values, tensors or values) if t is not None)


def linear(x, weight, bias=None):
    """y = x @ W^T + b, as one gemm over all rows. x (..., in), W (out, in), b (out,).

    Backward with g (N, out), x as (N, in): dx = g @ W, dW = g^T @ x, db = sum over rows of g.
    """
    x2 = x.data.reshape(-1, x.shape[-1])  # (N, in)
    if weight.shape[-1] != x.shape[-1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features (shape {x.shape}), "
                         f"weight expects {weight.shape[-1]} (shape {weight.shape})")
    y = x2 @ weight.data.T
    if bias is not None:
        y += bias.data
    def backward(g):
        g2 = g.reshape(-1, weight.shape[0])  # (N, out)
        dx = (g2 @ weight.data).reshape(x.shape) if x.requires_grad else None
        dw = g2.T @ x2 if weight.requires_grad else None
        db = g2.sum(axis=0) if bias is not None and bias.requires_grad else None
        return _present((dx, dw, db), (x, weight, bias))
    return make_result(y.reshape(*x.shape[:-1], weight.shape[0]), _present((x, weight, bias)), backward)


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
    rows = xp.arange(len(t))
    safe_t = xp.where(keep, t, 0)
    m = z.max(axis=1, keepdims=True)
    lse = m + xp.log(xp.exp(z - m).sum(axis=1, keepdims=True))  # (N, 1) log-sum-exp
    n = max(int(keep.sum()), 1)
    loss = ((lse[:, 0] - z[rows, safe_t]) * keep).sum() / n
    def backward(g):
        dz = xp.exp(z - lse)  # softmax, (N, C)
        dz[rows, safe_t] -= 1
        dz *= (keep * (g / n)).astype(dz.dtype)[:, None]
        return (dz.reshape(logits.shape),)
    return make_result(xp.asarray(loss, dtype=logits.dtype), (logits,), backward)
