"""Scaled dot-product attention as one fused op (forward and hand-written backward).

Textbook form, per batch and head, with queries Q (Tq, D), keys K (Tk, D), values V (Tk, D):

    S = Q K^T / sqrt(D)                      scores          (Tq, Tk)
    S_ij = -inf where j > i + (Tk - Tq)      causal mask (query i sees keys up to its position)
    P = softmax(S) along j                   attention pattern
    O = P V                                  output          (Tq, D)

Backward, given dO:
    dV = P^T dO
    dP = dO V^T
    dS = P * (dP - rowsum(dP * P))           softmax backward, row by row
    dQ = dS K / sqrt(D),   dK = dS^T Q / sqrt(D)

Tq < Tk happens when decoding with a KV cache: the new queries are the last Tq positions.
Left out: dropout on the pattern, arbitrary attention masks, memory-efficient tiling.
"""
import math

import numpy as np

from . import backend
from .tensor import make_result

_mask_cache = {}


def causal_mask(xp, tq, tk, dtype):
    """Additive mask (tq, tk): 0 where query i may see key j, -inf where j is in its future."""
    key = (xp.__name__, tq, tk, np.dtype(dtype).str)
    if key not in _mask_cache:
        future = xp.triu(xp.ones((tq, tk), dtype=bool), k=tk - tq + 1)
        _mask_cache[key] = xp.where(future, xp.asarray(-np.inf, dtype=dtype), xp.asarray(0, dtype=dtype))
    return _mask_cache[key]


def attention_pattern(q, k, causal=True):
    """P = softmax(Q K^T / sqrt(D) + mask) for arrays q (..., Tq, D), k (..., Tk, D).

    The scale is applied to q (Tq x D numbers) rather than to the scores (Tq x Tk), and
    the softmax runs in place on the score array: one pass per step over the largest array.
    """
    xp = backend.get_array_module(q)
    s = (q * _scale(q)) @ k.swapaxes(-1, -2)  # (..., Tq, Tk)
    if causal:
        s += causal_mask(xp, q.shape[-2], k.shape[-2], s.dtype)
    s -= s.max(axis=-1, keepdims=True)
    xp.exp(s, out=s)
    s *= 1 / s.sum(axis=-1, keepdims=True)
    return s


def _scale(q):
    return q.dtype.type(1 / math.sqrt(q.shape[-1]))


def scaled_dot_product_attention(q, k, v, causal=True):
    """softmax(Q K^T / sqrt(D) [+ causal mask]) V; q (B, H, Tq, D), k and v (B, H, Tk, D)."""
    if q.shape[-1] != k.shape[-1] or k.shape != v.shape or q.shape[:-2] != k.shape[:-2]:
        raise ValueError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} do not match "
                         "(need q (..., Tq, D), k and v (..., Tk, D))")
    p = attention_pattern(q.data, k.data, causal)  # (B, H, Tq, Tk)
    out = p @ v.data  # (B, H, Tq, D)
    def backward(g):
        xp = backend.get_array_module(g)
        dv = p.swapaxes(-1, -2) @ g  # (B, H, Tk, D)
        ds = g @ v.data.swapaxes(-1, -2)  # dP, then dS in place: (B, H, Tq, Tk)
        ds -= xp.einsum("...ij,...ij->...i", ds, p)[..., None]  # rowsum(dP * P), no temporary
        ds *= p
        dq = ds @ k.data
        dq *= _scale(q)  # the scale on the small results, not on dS
        dk = ds.swapaxes(-1, -2) @ q.data
        dk *= _scale(q)
        return dq, dk, dv
    return make_result(out, (q, k, v), backward)
