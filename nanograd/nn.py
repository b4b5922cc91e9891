"""Modules: parameters organised into named, nestable layers (PyTorch's nn.Module shape).

A Module registers every Parameter and sub-Module assigned to it as an attribute, so
`named_parameters()` yields names like `h.0.attn.c_attn.weight`, the names checkpoints use.

Left out: buffers, forward hooks (the GPT adds its own), parameter sharing checks.
"""
import math

import numpy as np

from . import backend
from . import functional as F
from .tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module trains: requires_grad=True, float32 unless given a dtype."""

    def __init__(self, data, dtype=np.float32):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=True, dtype=dtype)


class Module:
    """Base class: subclasses assign Parameters and Modules in __init__ and define forward."""

    def __init__(self):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_params" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                               "before assigning attributes")
        self._params.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._params[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def named_parameters(self, prefix=""):
        """(name, Parameter) pairs, depth first; a parameter shared twice is yielded once."""
        seen = set()
        for name, p in self._named_parameters_all(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _named_parameters_all(self, prefix):
        for name, p in self._params.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m._named_parameters_all(f"{prefix}{name}.")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def modules(self):
        """This module and all its descendants, depth first."""
        yield self
        for m in self._modules.values():
            yield from m.modules()

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, device):
        """Move every parameter's data to `device` ('cpu' or 'cuda') in place; returns self."""
        for p in self.parameters():
            p.data = backend.to_device(p.data, device)
            p.grad = None if p.grad is None else backend.to_device(p.grad, device)
        return self

    def astype(self, dtype):
        """Cast every parameter to `dtype` in place (e.g. float64 for gradient checks); returns self."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None
        return self

    def state_dict(self):
        """{name: array} of every parameter (the arrays themselves, not copies)."""
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters of the same names; all-or-nothing.

        Raises KeyError naming missing or unexpected entries, ValueError naming a shape
        mismatch, before any parameter is changed.
        """
        params = dict(self.named_parameters())
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise KeyError(f"load_state_dict: missing {missing or 'none'}, unexpected {unexpected or 'none'}")
        for name, p in params.items():
            if tuple(state[name].shape) != p.shape:
                raise ValueError(f"load_state_dict: {name} has shape {tuple(state[name].shape)}, "
                                 f"the model expects {p.shape}")
        for name, p in params.items():
            xp = backend.get_array_module(p.data)
            p.data = xp.array(backend.to_device(state[name], p.device), dtype=p.dtype)


class Linear(Module):
    """y = x W^T + b; weight (out, in) as in PyTorch, init U(-1/sqrt(in), 1/sqrt(in))."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        bound = 1 / math.sqrt(in_features)
        self.weight = Parameter(backend.rng().uniform(-bound, bound, (out_features, in_features)))
        self.bias = Parameter(backend.rng().uniform(-bound, bound, (out_features,))) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Embedding(Module):
    """A lookup table (num_embeddings, embedding_dim), init N(0, 1)."""

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        self.weight = Parameter(backend.rng().standard_normal((num_embeddings, embedding_dim)))

    def forward(self, idx):
        return F.embedding(idx, self.weight)


class LayerNorm(Module):
    """Layer normalisation over the last axis with learned scale (ones) and shift (zeros)."""

    def __init__(self, dim, eps=1e-5, bias=True):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(dim))
        self.bias = Parameter(np.zeros(dim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)


class Dropout(Module):
    def __init__(self, p=0.1):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)


class ModuleList(Module):
    """A list of modules, registered under the names '0', '1', ..."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)


class Sequential(ModuleList):
    """Modules applied in order: Sequential(a, b)(x) == b(a(x))."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x):
        for m in self:
            x = m(x)
        return x
