"""Bad input fails at once with one clear line that names the shapes, dtype or fix.

Each case is a call that must raise; the test checks the exception type, that the message
matches (it names what is wrong), and that it fits on one line.
"""
import numpy as np
import pytest

import nanograd as ng
from nanograd import Tensor, backend, nn
from nanograd import functional as F


def zeros(*shape, dtype=np.float32, requires_grad=False):
    return Tensor(np.zeros(shape, dtype=dtype), requires_grad=requires_grad)


CASES = {
    "add_shape_mismatch": (lambda: zeros(2, 3) + zeros(4), ValueError, r"\(2,3\) \(4,\)"),
    "matmul_shape_mismatch": (lambda: zeros(2, 3) @ zeros(4, 5), ValueError, r"\(2, 3\) and \(4, 5\)"),
    "matmul_1d": (lambda: zeros(3) @ zeros(3, 2), ValueError, r"\(3,\).*at least 2-D"),
    "linear_features": (lambda: F.linear(zeros(2, 3), zeros(5, 4)), ValueError, r"3 features.*expects 4"),
    "cross_entropy_float_targets": (lambda: F.cross_entropy(zeros(4, 5), np.zeros(4)), TypeError,
                                    r"targets must be integer class ids, got dtype float64"),
    "cross_entropy_target_shape": (lambda: F.cross_entropy(zeros(2, 3, 5), np.zeros(6, dtype=int)),
                                   ValueError, r"\(2, 3, 5\) need targets of shape \(2, 3\), got \(6,\)"),
    "embedding_float_ids": (lambda: F.embedding(np.zeros(3), zeros(4, 2)), TypeError, r"ids must be integers"),
    "attention_shapes": (lambda: F.scaled_dot_product_attention(zeros(1, 1, 4, 8), *[zeros(1, 1, 4, 6)] * 2),
                         ValueError, r"q \(1, 1, 4, 8\), k \(1, 1, 4, 6\)"),
    "packed_attention_width": (lambda: F.causal_self_attention(zeros(2, 3, 10), 2), ValueError,
                               r"\(B, T, 3C\) with C divisible by n_head=2, got \(2, 3, 10\)"),
    "backward_non_scalar": (lambda: zeros(2, 3, requires_grad=True).exp().backward(), RuntimeError,
                            r"shape \(2, 3\) needs grad=.*\.sum\(\)"),
    "backward_without_grad": (lambda: zeros(2).sum().backward(), RuntimeError, r"does not require grad"),
    "backward_grad_shape": (lambda: zeros(2, requires_grad=True).exp().backward(np.ones(3)), ValueError,
                            r"grad has shape \(3,\), tensor has \(2,\)"),
    "integer_requires_grad": (lambda: Tensor(np.arange(3), requires_grad=True), TypeError,
                              r"floating-point.*int64"),
    "pow_tensor_exponent": (lambda: zeros(2) ** zeros(2), TypeError, r"exponent must be a Python number"),
    "dropout_p": (lambda: F.dropout(zeros(2), p=1.0), ValueError, r"p must be in \[0, 1\), got 1.0"),
    "gradcheck_float32": (lambda: ng.gradcheck(lambda x: x, zeros(2, requires_grad=True)), TypeError, r"float64"),
    "unknown_device": (lambda: zeros(2).to("tpu"), ng.DeviceError, r"unknown device 'tpu': use 'cpu' or 'cuda'"),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_raises_one_clear_error(name):
    call, error, match = CASES[name]
    with pytest.raises(error, match=match) as info:
        call()
    assert "\n" not in str(info.value)


CUDA_REQUESTS = {
    "tensor": lambda: Tensor(np.zeros(2), device="cuda"),
    "to": lambda: zeros(2).to("cuda"),
    "module": lambda: nn.Linear(2, 2).to("cuda"),
    "backend": lambda: backend.to_device(np.zeros(2), "cuda"),
}


@pytest.mark.skipif(backend.cuda_available(), reason="CuPy and a GPU are present")
@pytest.mark.parametrize("name", CUDA_REQUESTS)
def test_cuda_without_cupy_says_how_to_install_it(name):
    with pytest.raises(ng.DeviceError, match=r"needs CuPy.*pip install"):
        CUDA_REQUESTS[name]()
