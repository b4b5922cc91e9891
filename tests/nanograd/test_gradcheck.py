"""Every op and layer against finite differences in float64, then the same cases in float32.

A case is a function of Tensors and its inputs as NumPy arrays. Float arrays become
inputs that gradcheck perturbs; integer and boolean arrays (ids, targets, indices, masks)
ride along as constants. The float32 run checks dtype preservation: the output and every
gradient must stay float32, so no op silently turns a float32 model into float64.
"""
import numpy as np
import pytest

import nanograd as ng
from nanograd import Tensor, backend, nn
from nanograd import functional as F

_rng = np.random.default_rng(0)


def normal(*shape):
    return _rng.standard_normal(shape)


def positive(*shape):
    """Values in [0.5, 2]: safe for log, sqrt, division and fractional powers."""
    return _rng.uniform(0.5, 2.0, shape)


def mask(*shape):
    return _rng.random(shape) < 0.5


def reduction(name, axis, keepdims, **kwargs):
    return lambda a: getattr(a, name)(axis=axis, keepdims=keepdims, **kwargs)


def seeded_dropout(x):
    ng.manual_seed(0)  # the same mask on every call gradcheck makes
    return F.dropout(x, p=0.5)


IDS = np.array([[0, 2, 2], [4, 0, 2]])  # id 2 three times, id 0 twice: their grads accumulate
ATTENTION = [normal(2, 2, 4, 3), normal(2, 2, 4, 3), normal(2, 2, 4, 3)]  # q, k, v (B, H, T, D)
SEGMENTS = np.array([[0, 0, 1, 1], [0, 1, 1, 2]])  # (B, T): packed sequences, attention stays within each

OPS = {
    "add": (lambda a, b: a + b, [normal(2, 3), normal(2, 3)]),
    "add_broadcast": (lambda a, b: a + b, [normal(2, 1, 3), normal(4, 1)]),
    "radd_scalar": (lambda a: 2.0 + a, [normal(2, 3)]),
    "sub_broadcast": (lambda a, b: a - b, [normal(3, 1), normal(1, 4)]),
    "rsub_scalar": (lambda a: 1.0 - a, [normal(2, 3)]),
    "mul_broadcast": (lambda a, b: a * b, [normal(2, 3, 4), normal(3, 1)]),
    "mul_same_tensor": (lambda a: a * a, [normal(2, 3)]),
    "div_broadcast": (lambda a, b: a / b, [normal(2, 3), positive(3)]),
    "rdiv_scalar": (lambda a: 1.0 / a, [positive(2, 3)]),
    "neg": (lambda a: -a, [normal(2, 3)]),
    "pow_int": (lambda a: a ** 3, [normal(2, 3)]),
    "pow_fractional": (lambda a: a ** 0.5, [positive(2, 3)]),
    "pow_negative": (lambda a: a ** -1.5, [positive(2, 3)]),
    "matmul_2d": (lambda a, b: a @ b, [normal(3, 4), normal(4, 5)]),
    "matmul_batched_broadcast": (lambda a, b: a @ b, [normal(2, 1, 3, 4), normal(3, 4, 2)]),
    "matmul_2d_by_batched": (lambda a, b: a @ b, [normal(3, 4), normal(2, 4, 5)]),
    "matmul_rows_fast_path": (lambda a, b: a @ b, [normal(2, 3, 4), normal(4, 5)]),
    "exp": (lambda a: a.exp(), [normal(2, 3)]),
    "log": (lambda a: a.log(), [positive(2, 3)]),
    "sqrt": (lambda a: a.sqrt(), [positive(2, 3)]),
    "tanh": (lambda a: a.tanh(), [normal(2, 3)]),
    "sigmoid": (lambda a: a.sigmoid(), [normal(2, 3)]),
    "relu": (lambda a: a.relu(), [normal(2, 3)]),
    "gelu": (F.gelu, [normal(2, 3)]),
    **{f"{name}_axis{axis}_keepdims{keepdims}": (reduction(name, axis, keepdims), [normal(2, 3, 4)])
       for name in ("sum", "mean", "max", "var")
       for axis in (1, -1, (0, 2), None)
       for keepdims in (False, True)},
    "var_ddof1": (reduction("var", 1, False, ddof=1), [normal(2, 3, 4)]),
    "reshape": (lambda a: a.reshape(4, 3), [normal(2, 6)]),
    "reshape_flatten": (lambda a: a.reshape(-1), [normal(2, 3, 2)]),
    "transpose_axes": (lambda a: a.transpose(2, 0, 1), [normal(2, 3, 4)]),
    "transpose_T": (lambda a: a.T, [normal(2, 3)]),
    "getitem_slices": (lambda a: a[1:, ::2], [normal(3, 5)]),
    "getitem_negative_step": (lambda a: a[::-1], [normal(4, 2)]),
    "getitem_ellipsis_int": (lambda a: a[..., 1], [normal(2, 3, 4)]),
    "getitem_int_array_repeated": (lambda a: a[np.array([0, 2, 0, 0])], [normal(3, 2)]),
    "getitem_column_list_repeated": (lambda a: a[:, [1, 1, 3]], [normal(2, 4)]),
    "getitem_tensor_index": (lambda a, i: a[i], [normal(4, 3), np.array([3, 0, 3])]),
    "getitem_bool_mask": (lambda a, m: a[m], [normal(4, 3), np.array([True, False, True, True])]),
    "concatenate": (lambda a, b: ng.concatenate([a, b], axis=1), [normal(2, 3), normal(2, 2)]),
    "stack": (lambda a, b: ng.stack([a, b], axis=-1), [normal(2, 3), normal(2, 3)]),
    "split_sections": (lambda a: ng.stack(ng.split(a, 2, axis=1)), [normal(3, 4)]),
    "split_indices": (lambda a: ng.concatenate(ng.split(a, [1, 3], axis=-1)[::-1], axis=-1), [normal(2, 5)]),
    "where_broadcast": (lambda c, a, b: ng.where(c, a, b), [mask(2, 3), normal(2, 3), normal(3)]),
    "masked_fill": (lambda a, m: a.masked_fill(m, -1.0), [normal(2, 3), mask(2, 3)]),
    "softmax": (F.softmax, [normal(3, 5)]),
    "softmax_axis0": (lambda a: F.softmax(a, axis=0), [normal(3, 5)]),
    "log_softmax": (F.log_softmax, [normal(3, 5)]),
    "log_softmax_axis0": (lambda a: F.log_softmax(a, axis=0), [normal(3, 5)]),
    "layer_norm": (F.layer_norm, [normal(2, 3, 5), normal(5), normal(5)]),
    "layer_norm_no_affine": (F.layer_norm, [normal(4, 5)]),
    "linear": (F.linear, [normal(2, 3, 4), normal(5, 4), normal(5)]),
    "linear_no_bias": (F.linear, [normal(3, 4), normal(5, 4)]),
    "embedding_repeated_ids": (F.embedding, [IDS, normal(5, 3)]),
    "dropout": (seeded_dropout, [normal(4, 5)]),
    "cross_entropy_NC": (F.cross_entropy, [normal(4, 5), np.array([1, -1, 4, 1])]),
    "cross_entropy_BTC": (F.cross_entropy, [normal(2, 3, 5), np.array([[1, -1, 3], [0, 4, -1]])]),
    "attention_causal": (F.scaled_dot_product_attention, ATTENTION),
    "attention_non_causal": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=False), ATTENTION),
    "causal_self_attention_packed": (lambda qkv: F.causal_self_attention(qkv, 2), [normal(2, 4, 12)]),
    "attention_kv_cache": (F.scaled_dot_product_attention,  # 2 new queries over 5 cached keys
                           [normal(2, 2, 2, 3), normal(2, 2, 5, 3), normal(2, 2, 5, 3)]),
    "attention_segments": (lambda q, k, v, seg: F.scaled_dot_product_attention(q, k, v, segments=seg),
                           [*ATTENTION, SEGMENTS]),
    "causal_self_attention_segments": (lambda qkv, seg: F.causal_self_attention(qkv, 2, seg),
                                       [normal(2, 4, 12), SEGMENTS]),
    "attention_kv_cache_segments": (lambda q, k, v, seg: F.scaled_dot_product_attention(q, k, v, segments=seg),
                                    [normal(2, 2, 2, 3), normal(2, 2, 5, 3), normal(2, 2, 5, 3),
                                     np.array([[0, 0, 1, 1, 1], [0, 1, 1, 2, 2]])]),
}

LAYERS = {
    "Linear": (lambda: nn.Linear(4, 3), normal(2, 5, 4)),
    "Embedding": (lambda: nn.Embedding(6, 3), IDS),
    "LayerNorm": (lambda: nn.LayerNorm(4), normal(2, 5, 4)),
    "Sequential": (lambda: nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2)), normal(3, 4)),
}


def as_input(array, device, dtype):
    """A float array becomes a copy in `dtype` that requires grad; ids and masks stay constants."""
    is_float = array.dtype.kind == "f"
    return Tensor(backend.to_device(array.astype(dtype) if is_float else array, device), requires_grad=is_float)


@pytest.mark.parametrize("name", OPS)
def test_op_gradient(name, device):
    fn, arrays = OPS[name]
    assert ng.gradcheck(fn, *[as_input(a, device, np.float64) for a in arrays])


@pytest.mark.parametrize("name", OPS)
def test_op_keeps_float32(name, device):
    fn, arrays = OPS[name]
    inputs = [as_input(a, device, np.float32) for a in arrays]
    out = fn(*inputs)
    out.sum().backward()
    assert out.dtype == np.float32
    assert {x.grad.dtype for x in inputs if x.requires_grad} == {np.dtype(np.float32)}


@pytest.mark.parametrize("name", LAYERS)
def test_layer_gradient(name, device):
    make, x = LAYERS[name]
    layer = make().astype(np.float64).to(device)
    x = as_input(x, device, np.float64)
    assert ng.gradcheck(lambda x, *params: layer(x), x, *layer.parameters())


@pytest.mark.parametrize("name", LAYERS)
def test_layer_keeps_float32(name, device):
    make, x = LAYERS[name]
    layer = make().to(device)
    out = layer(as_input(x, device, np.float32))
    out.sum().backward()
    assert out.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in layer.parameters())
