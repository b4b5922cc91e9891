"""Scaled dot-product attention as one fused op (forward and hand-written backward).

Textbook form, per batch and head, with queries Q (Tq, D), keys K (Tk, D), values V (Tk, D):

    S = Q K^T / sqrt(D)                             scores          (Tq, Tk)
    S_ij = -inf where j > i + (Tk - Tq)             causal mask (query i sees keys up to its position)
    S_ij = -inf where seg[i + Tk - Tq] != seg[j]    segment mask, when segments are given
    P = softmax(S) along j                          attention pattern
    O = P V                                         output          (Tq, D)

Segments pack several sequences into one row: seg (Tk,) gives each key position a sequence
id (query i is key position i + Tk - Tq), and a query sees only keys of its own sequence, so
no token attends across a boundary. Every query still sees itself, so no row of P is empty.

Backward, given dO (the same with or without masks: P is zero where S is -inf, and the
zeros carry through dV, dS, dQ and dK):
    dV = P^T dO
    dP = dO V^T
    dS = P * (dP - rowsum(dP * P))           softmax backward, row by row
    dQ = dS K / sqrt(D),   dK = dS^T Q / sqrt(D)

Tq < Tk happens when decoding with a KV cache: the new queries are the last Tq positions.

Causal tiles. Under the causal mask the upper triangle of P is zero, so computing it is
waste: half of every score, exp and gemm. The fused op cuts the query rows into tiles of
TILE rows; a tile whose last row is i1 - 1 sees only keys j < k1 = i1 + Tk - Tq, so its
scores, softmax, dP and dQ use K[:k1] and V[:k1] alone. Read the other way, the keys
k0:k1 (the columns the tile adds) are seen only by rows i0 onwards, so dV[k0:k1] and
dK[k0:k1] are gemms over rows i0: and nothing above. With T = 256 and TILE = 64 the op does
10/16 of the untiled work.

Left out: dropout on the pattern, arbitrary attention masks (segments are the one kind; tiles
skip only the causal zeros, not those between segments), flash attention's online
softmax (P is kept for the backward, as the equations above use it).
"""
import math

import numpy as np

from . import backend, parallel
from .tensor import Tensor, make_result

TILE = 64  # query rows per causal tile
_mask_cache = {}


def causal_mask(xp, tq, tk, dtype):
    """Additive mask (tq, tk): 0 where query i may see key j, -inf where j is in its future."""
    key = (xp.__name__, tq, tk, np.dtype(dtype).str)
    if key not in _mask_cache:
        future = xp.triu(xp.ones((tq, tk), dtype=bool), k=tk - tq + 1)
        _mask_cache[key] = xp.where(future, xp.asarray(-np.inf, dtype=dtype), xp.asarray(0, dtype=dtype))
    return _mask_cache[key]


def segment_mask(segments, tq, dtype):
    """Additive mask (B, 1, tq, Tk): 0 where query i and key j share a segment, -inf across segments.

    segments (B, Tk): a sequence id per key position; the queries are the last tq positions.
    The 1 broadcasts over the heads.
    """
    xp = backend.get_array_module(segments)
    same = segments[:, None, -tq:, None] == segments[:, None, None, :]  # (B, 1, tq, Tk)
    return xp.where(same, xp.asarray(0, dtype=dtype), xp.asarray(-np.inf, dtype=dtype))


def attention_pattern(q, k, causal=True, segments=None, out=None):
    """P = softmax(Q K^T / sqrt(D) + masks) for arrays q (B, H, Tq, D), k (B, H, Tk, D).

    The scale is applied to q (Tq x D numbers) rather than to the scores (Tq x Tk), and
    the softmax runs in place on the score array (`out`, when given): one pass per step
    over the largest array.
    """
    xp = backend.get_array_module(q)
    s = xp.matmul(q * _scale(q), k.swapaxes(-1, -2), out=out)  # (..., Tq, Tk)
    if causal:
        s += causal_mask(xp, q.shape[-2], k.shape[-2], s.dtype)
    if segments is not None:
        s += segment_mask(segments, q.shape[-2], s.dtype)  # (B, 1, Tq, Tk) broadcast over the heads
    s -= s.max(axis=-1, keepdims=True)
    xp.exp(s, out=s)
    s *= 1 / s.sum(axis=-1, keepdims=True)
    return s


def _scale(q):
    return q.dtype.type(1 / math.sqrt(q.shape[-1]))


def scaled_dot_product_attention(q, k, v, causal=True, segments=None):
    """softmax(Q K^T / sqrt(D) [+ causal mask] [+ segment mask]) V; q (B, H, Tq, D), k and v (B, H, Tk, D).

    segments: None, or integer ids (B, Tk) of the keys' sequences (see the top of this file).
    Forward and backward each run as one kernel per block of the batch, on every core:
    a block's scores are computed, normalised and used while they are still in cache.
    """
    if q.shape[-1] != k.shape[-1] or k.shape != v.shape or q.shape[:-2] != k.shape[:-2]:
        raise ValueError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} do not match "
                         "(need q (..., Tq, D), k and v (..., Tk, D))")
    xp = backend.get_array_module(q.data)
    segments = _check_segments(xp, segments, k.shape[0], k.shape[-2])
    p = xp.empty((*q.shape[:-1], k.shape[-2]), q.dtype)  # (B, H, Tq, Tk)
    out = xp.empty(q.shape, q.dtype)  # (B, H, Tq, D)
    parallel.map_blocks(_forward, p, out, q.data, k.data, v.data, segments, causal=causal)
    def backward(g):
        dq, dk, dv = xp.empty_like(out), xp.empty(k.shape, k.dtype), xp.empty(v.shape, v.dtype)
        parallel.map_blocks(_backward, p, g, q.data, k.data, v.data, dq, dk, dv, causal=causal)
        return dq, dk, dv
    return make_result(out, (q, k, v), backward)


def causal_self_attention(qkv, n_head, segments=None):
    """Causal multi-head self-attention from the packed projection: qkv (B, T, 3C) -> (B, T, C).

    segments: None, or integer ids (B, T): each token attends only within its own segment.

    The same arithmetic as cutting qkv into q, k, v of n_head heads each (B, H, T, D), calling
    scaled_dot_product_attention and merging the heads back (B, T, C). Here the heads are
    strided views into qkv and into the output, so nothing is split, transposed or merged
    by copying, and the backward writes dQ, dK and dV straight into one (B, T, 3C) gradient.
    """
    xp = backend.get_array_module(qkv.data)
    if qkv.ndim != 3 or qkv.shape[2] % (3 * n_head):
        raise ValueError(f"causal_self_attention: qkv must be (B, T, 3C) with C divisible by n_head={n_head}, "
                         f"got {qkv.shape}")
    B, T, C = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    D = C // n_head
    segments = _check_segments(xp, segments, B, T)
    q, k, v = _heads(qkv.data, n_head, D)  # each (B, H, T, D)
    y = xp.empty((B, T, C), qkv.dtype)
    p = xp.empty((B, n_head, T, T), qkv.dtype)
    parallel.map_blocks(_forward, p, *_heads(y, n_head, D), q, k, v, segments, causal=True)
    def backward(g):
        dqkv = xp.empty((B, T, 3 * C), qkv.dtype)
        parallel.map_blocks(_backward, p, *_heads(g, n_head, D), q, k, v, *_heads(dqkv, n_head, D), causal=True)
        return (dqkv,)
    return make_result(y, (qkv,), backward)


def _check_segments(xp, segments, batch_size, tk):
    """segments (an array or Tensor) as integer ids (B, Tk) on the device of the op, or None; else a one-line error."""
    if segments is None:
        return None
    segments = xp.asarray(segments.data if isinstance(segments, Tensor) else segments)
    if segments.shape != (batch_size, tk) or segments.dtype.kind not in "iu":
        raise ValueError(f"attention: segments must be integer ids (B, Tk) = ({batch_size}, {tk}), "
                         f"got {segments.dtype} {segments.shape}")
    return segments


def _heads(a, n_head, head_dim):
    """The heads of a (B, T, m * H * D) array as m views (B, H, T, D): no copies when a is contiguous."""
    B, T, _ = a.shape
    return tuple(a.reshape(B, T, -1, n_head, head_dim).transpose(2, 0, 3, 1, 4))


def _tiles(tq, tk, causal):
    """[(i0, i1, k0, k1)]: query rows i0:i1 see keys :k1; keys k0:k1 are seen by rows i0: only.

    One tile covering everything when not causal or too short to be worth cutting.
    """
    if not causal or tq < 2 * TILE:
        return [(0, tq, 0, tk)]
    cuts = list(range(0, tq, TILE)) + [tq]
    return [(i0, i1, i0 + tk - tq if i0 else 0, i1 + tk - tq) for i0, i1 in zip(cuts, cuts[1:])]


def _forward(p, out, q, k, v, segments, causal):
    """P and O = P V for one block of the batch (and of segments, or None), into p and out, tile by tile."""
    xp = backend.get_array_module(p)
    for i0, i1, _, k1 in _tiles(q.shape[-2], k.shape[-2], causal):
        s = attention_pattern(q[..., i0:i1, :], k[..., :k1, :], causal, None if segments is None else segments[:, :k1],
                              out=p[..., i0:i1, :k1])
        p[..., i0:i1, k1:] = 0  # the future, never computed
        xp.matmul(s, v[..., :k1, :], out=out[..., i0:i1, :])


def _backward(p, g, q, k, v, dq, dk, dv, causal):
    """dQ, dK, dV for one block of the batch (equations at the top of this file), into dq, dk, dv."""
    xp = backend.get_array_module(p)
    tiles = _tiles(q.shape[-2], k.shape[-2], causal)
    ds = xp.empty_like(p)  # dS, filled tile by tile: (b, H, Tq, Tk)
    for i0, i1, _, k1 in tiles:  # row tiles: dS and dQ
        pt = p[..., i0:i1, :k1]
        dst = xp.matmul(g[..., i0:i1, :], v[..., :k1, :].swapaxes(-1, -2), out=ds[..., i0:i1, :k1])  # dP
        dst -= xp.einsum("...ij,...ij->...i", dst, pt)[..., None]  # rowsum(dP * P), no temporary
        dst *= pt  # dS
        xp.matmul(dst, k[..., :k1, :], out=dq[..., i0:i1, :])
    for i0, _, k0, k1 in tiles:  # column tiles: dV and dK from the rows that see those keys
        xp.matmul(p[..., i0:, k0:k1].swapaxes(-1, -2), g[..., i0:, :], out=dv[..., k0:k1, :])  # dV = P^T dO
        xp.matmul(ds[..., i0:, k0:k1].swapaxes(-1, -2), q[..., i0:, :], out=dk[..., k0:k1, :])
    dq *= _scale(q)  # the scale on the small results, not on dS
    dk *= _scale(q)
