"""Segments: several sequences packed in one row behave as separate rows.

A row holding A then B, with segment ids, must give the logits of A alone and of B alone
(fast path, hooked path, KV cache), and in float64 the same loss and gradients as one
sequence per row with padding. The fused op with segments is checked against the hooked
pattern past its causal tiles. Tiny models only, so the file takes seconds.
"""
import numpy as np
import pytest

import nanograd as ng
from gpt.model import attention_pattern
from nanograd import attention
from nanograd import functional as F

from tiny import random_ids, tiny_model  # noqa: E402

A, B = random_ids(1, 3, seed=1)[0], random_ids(1, 5, seed=2)[0]  # two sequences; block_size is 8
PACKED = np.concatenate([A, B])[None]  # (1, 8)
SEGMENTS = np.array([[0, 0, 0, 1, 1, 1, 1, 1]])  # A is segment 0, B segment 1


def logits_of(model, idx, **kwargs):
    return model(idx, **kwargs)[0].numpy()


def test_packed_row_gives_the_logits_of_each_sequence_alone():
    model = tiny_model()
    packed = logits_of(model, PACKED, segments=SEGMENTS)  # (1, 8, V)
    np.testing.assert_allclose(packed[:, :3], logits_of(model, A[None]), atol=1e-6)
    np.testing.assert_allclose(packed[:, 3:], logits_of(model, B[None]), atol=1e-6)
    assert not np.allclose(packed, logits_of(model, PACKED), atol=1e-3)  # without segments B would see A


def test_segment_ids_need_not_be_contiguous_runs():
    """Position and mask both follow the id, so A interleaved with B is still A alone."""
    model = tiny_model()
    order = np.array([0, 3, 4, 1, 5, 6, 2, 7])  # A's tokens at 0, 3, 6
    packed = logits_of(model, PACKED[:, order], segments=SEGMENTS[:, order])
    np.testing.assert_allclose(packed[:, [0, 3, 6]], logits_of(model, A[None]), atol=1e-6)


def test_hooked_path_sees_the_masked_pattern():
    model = tiny_model()
    logits, cache = model.run_with_cache(PACKED, segments=SEGMENTS)
    np.testing.assert_allclose(logits.numpy(), logits_of(model, PACKED, segments=SEGMENTS), atol=1e-6)
    pattern = cache["blocks.1.attn.pattern"]  # (1, H, 8, 8)
    assert not pattern[:, :, 3:, :3].any() and not pattern[:, :, :3, 3:].any()  # nothing across A | B
    np.testing.assert_allclose(pattern.sum(-1), 1, atol=1e-6)
    _, alone = model.run_with_cache(B[None], names=["blocks.1.attn.pattern"])
    np.testing.assert_allclose(pattern[:, :, 3:, 3:], alone["blocks.1.attn.pattern"], atol=1e-6)


def test_kv_cache_with_segments_matches_the_full_pass():
    model = tiny_model()
    full = logits_of(model, PACKED, segments=SEGMENTS)
    cache = model.new_cache(1)
    with ng.no_grad():
        steps = [logits_of(model, PACKED[:, t:t + 1], cache=cache, segments=SEGMENTS[:, t:t + 1]) for t in range(8)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-6)


def test_kv_cache_refuses_to_mix_calls_with_and_without_segments():
    model = tiny_model()
    cache = model.new_cache(1)
    with ng.no_grad():
        model(PACKED[:, :2], cache=cache, segments=SEGMENTS[:, :2])
        with pytest.raises(ValueError, match="give segments at every call or at none"):
            model(PACKED[:, 2:3], cache=cache)


def test_bad_segments_are_one_line_errors():
    with pytest.raises(ValueError, match=r"segments must be integer ids of the shape of idx \(1, 8\)"):
        tiny_model()(PACKED, segments=SEGMENTS[:, :5])


def loss_and_grads(model, idx, targets, segments=None):
    model.zero_grad()
    _, loss = model(idx, targets, segments=segments)
    loss.backward()
    return loss.item(), {name: p.grad.copy() for name, p in model.named_parameters()}


def test_packed_loss_and_gradients_equal_one_sequence_per_row_float64():
    model = tiny_model().astype(np.float64)
    targets = random_ids(1, 8, seed=3)  # a target for every token of A and B
    packed_loss, packed_grads = loss_and_grads(model, PACKED, targets, SEGMENTS)
    rows = np.zeros((2, 8), dtype=np.int64)  # A then padding, B then padding
    rows[0, :3], rows[1, :5] = A, B
    row_targets = np.full((2, 8), -1)  # padding is never a target
    row_targets[0, :3], row_targets[1, :5] = targets[0, :3], targets[0, 3:]
    loss, grads = loss_and_grads(model, rows, row_targets)
    assert abs(packed_loss - loss) < 1e-12
    for name, grad in grads.items():
        np.testing.assert_allclose(packed_grads[name], grad, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("tq", [2 * attention.TILE + 5, 3])  # all queries (causal tiles), or a KV cache's last 3
def test_fused_op_with_segments_equals_the_dense_pattern(tq):
    """Forward and backward of the tiled op with segments against softmax(QK^T + masks) V as Tensors."""
    rng = np.random.default_rng(0)
    T = 2 * attention.TILE + 5
    q, k, v = (rng.standard_normal((2, 2, n, 4)) for n in (tq, T, T))
    segments = np.sort(rng.integers(0, 4, (2, T)), axis=1)  # four segments of random lengths per row
    outputs = []
    for fn in (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, segments=segments),
               lambda q, k, v: attention_pattern(q, k, segments) @ v):
        ts = [ng.Tensor(a, requires_grad=True) for a in (q, k, v)]
        out = fn(*ts)
        (out * ng.Tensor(np.cos(np.arange(out.size)).reshape(out.shape))).sum().backward()
        outputs.append([out.numpy(), *(t.grad for t in ts)])
    for fused, dense in zip(*outputs):
        np.testing.assert_allclose(fused, dense, atol=1e-12)
