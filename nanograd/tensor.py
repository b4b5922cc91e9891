"""The Tensor and reverse-mode autodiff: how a graph is recorded and walked backwards.

An op computes its output array and a `backward(g)` closure that maps the gradient of
the output to one gradient per input (the local chain rule). `Tensor.backward` orders
the graph topologically without recursion, so a chain of any length works, sums the
gradients of tensors used more than once, and drops each node's closure once it has
run, which frees the arrays the closure saved.

Invariant: gradient arrays are never modified in place (the optimizers and
`clip_grad_norm_` rebind `.grad`), so ops may hand the same array to several inputs.

The ops themselves live in `ops.py` (elementwise, reductions, shapes) and
`functional.py` (neural-network functions); they attach to Tensor as methods.
Left out: higher-order gradients, in-place ops on tensors that require grad.
"""
import contextlib

import numpy as np

from . import backend

_grad_enabled = True


class no_grad(contextlib.ContextDecorator):
    """Context manager and decorator: ops inside record nothing and keep nothing alive."""

    def __init__(self):
        self._prev = []  # a stack: a decorated function may re-enter while active (recursion)

    def __enter__(self):
        global _grad_enabled
        self._prev.append(_grad_enabled)
        _grad_enabled = False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._prev.pop()


def is_grad_enabled():
    return _grad_enabled


class Tensor:
    """An array plus what autodiff needs: `.grad`, `.requires_grad` and the op that made it.

    Python scalars and lists become float32 (the default dtype); arrays keep their dtype.
    """
    __array_ufunc__ = None  # make `ndarray + Tensor` call Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        if isinstance(data, Tensor):
            data = data.data
        from_python = not hasattr(data, "dtype")
        xp = backend.get_array_module(data)
        data = xp.asarray(data, dtype=dtype)
        if from_python and dtype is None and data.dtype == np.float64:
            data = data.astype(np.float32)
        if device is not None or (from_python and backend.default_device() != "cpu"):
            data = backend.to_device(data, device or backend.default_device())
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require grad, got {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self._parents = ()
        self._backward = None
        self._released = False  # True once backward has run through this op and freed it

    # ---- array-like properties -------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    device = property(lambda self: backend.device_of(self.data))

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    def numpy(self):
        """The data as a NumPy array on the host."""
        return backend.to_device(self.data, "cpu")

    def item(self):
        return self.data.item()

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def to(self, device):
        """A copy on `device` ('cpu' or 'cuda'); a leaf keeps requires_grad."""
        return Tensor(backend.to_device(self.data, device), requires_grad=self.requires_grad)

    # ---- autodiff --------------------------------------------------------------------
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` that requires grad.

        grad: the upstream gradient, same shape as self; may be omitted for a scalar.
        The first backward() of a process tunes glibc's malloc to keep freed memory for the
        next step (backend.keep_freed_memory says why; NANOGRAD_KEEP_FREED_MEMORY=0 turns it off).
        """
        backend.maybe_keep_freed_memory()
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input had requires_grad=True, or it was made under no_grad)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() on a tensor of shape {self.shape} needs grad= "
                                   "of the same shape; reduce it to a scalar (e.g. .sum()) first")
            grad = backend.get_array_module(self.data).ones_like(self.data)
        grad = grad.data if isinstance(grad, Tensor) else grad
        if grad.shape != self.shape:
            raise ValueError(f"backward(): grad has shape {grad.shape}, tensor has {self.shape}")
        grads = {id(self): grad}
        for node in reversed(_topological_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._released:
                raise RuntimeError("backward() through part of a graph a second time: the first backward "
                                   "freed its saved arrays; run the forward again")
            if node._backward is None:  # a leaf: store what reached it
                g = backend.get_array_module(g).ascontiguousarray(g)
                node.grad = g if node.grad is None else node.grad + g
                continue
            for parent, pg in zip(node._parents, node._backward(g)):
                if pg is not None and parent.requires_grad:
                    key = id(parent)
                    grads[key] = pg if key not in grads else grads[key] + pg
            node._backward, node._parents, node._released = None, (), True  # free saved arrays


def _topological_order(root):
    """Nodes that need grad, each after all of its parents (iterative post-order DFS)."""
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in node._parents if p.requires_grad and id(p) not in visited)
    return order


def as_tensor(x, like=None):
    """Wrap a non-Tensor operand; Python numbers take the dtype of `like` (no upcasting)."""
    if isinstance(x, Tensor):
        return x
    if like is not None and not hasattr(x, "dtype"):
        xp = backend.get_array_module(like.data)
        return Tensor(xp.asarray(x, dtype=like.dtype))
    return Tensor(x)


def make_result(data, parents, backward):
    """The output Tensor of an op; records `backward` only if some parent needs grad.

    backward: g -> tuple with one gradient array (or None) per parent, in order.
    """
    out = Tensor(data)
    if _grad_enabled and any(p.requires_grad for p in parents):
        out.requires_grad = True
        out._parents = tuple(parents)
        out._backward = backward
    return out
