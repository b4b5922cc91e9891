"""nanograd: reverse-mode automatic differentiation over NumPy (or CuPy) arrays.

    import nanograd as ng
    x = ng.Tensor(array, requires_grad=True)
    ng.functional.gelu(x @ w + b).sum().backward()   # x.grad is an array

Read in this order: tensor.py (the graph and backward), ops.py (each op's forward and
backward), functional.py and attention.py (fused neural-network ops), nn.py (modules),
optim.py (AdamW, SGD), gradcheck.py (how every op is tested).
"""
from . import functional, nn, optim, parallel
from .backend import (DeviceError, cuda_available, get_array_module, get_rng_state, manual_seed,
                      set_rng_state)
from .gradcheck import GradcheckError, gradcheck
from .ops import concatenate, masked_fill, split, stack, where
from .tensor import Tensor, is_grad_enabled, no_grad

__all__ = ["Tensor", "no_grad", "is_grad_enabled", "gradcheck", "GradcheckError", "manual_seed",
           "get_rng_state", "set_rng_state", "get_array_module", "cuda_available", "DeviceError",
           "concatenate", "stack", "split", "where", "masked_fill", "functional", "nn", "optim"]
