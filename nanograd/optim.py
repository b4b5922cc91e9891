"""Optimizers and the learning-rate schedule: AdamW, SGD with momentum, gradient clipping.

Both optimizers take a list of parameters or of parameter groups (dicts with "params"
and their own hyperparameters), update `.data` in place, and save and restore their
state so that a resumed run continues exactly. AdamW's update is one kernel
(`_adamw_kernel`) run over blocks of a large parameter, or once over a flat buffer that
holds all the small ones (`AdamW._update_together`), on every core.

Left out: Adam's amsgrad, Nesterov momentum, a flat buffer for SGD.
"""
import math

import numpy as np

from . import backend, parallel


class Optimizer:
    """Shared machinery: parameter groups, per-parameter state, state_dict round trip."""

    def __init__(self, params, defaults):
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = [{**defaults, **g, "params": list(g["params"])} for g in groups]
        self.state = {}  # id(param) -> {name: array or int}

    def params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self):
        for p in self.params():
            p.grad = None

    def state_dict(self):
        """{"param_groups": [hyperparameters], "state": {index: {name: array|int}}}, by parameter order."""
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        state = {i: dict(self.state[id(p)]) for i, p in enumerate(self.params()) if id(p) in self.state}
        return {"param_groups": groups, "state": state}

    def load_state_dict(self, state_dict):
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"optimizer state has {len(groups)} parameter groups, this optimizer has "
                             f"{len(self.param_groups)}")
        for mine, saved in zip(self.param_groups, groups):
            mine.update(saved)
        params = self.params()
        self.state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            self.state[id(p)] = {k: backend.to_device(v, p.device).astype(p.dtype) if hasattr(v, "shape") else v
                                 for k, v in s.items()}


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's defaults.

    Per step t, with gradient g:
        p <- p - lr * wd * p                   (decay, not through the gradient)
        m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
        p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self._flat = {}  # id of a group's first small parameter -> its flat buffers

    def step(self):
        for group in self.param_groups:
            hyper = dict(lr=group["lr"], b1=group["betas"][0], b2=group["betas"][1], eps=group["eps"],
                         wd=group["weight_decay"])
            params = [p for p in group["params"] if p.grad is not None]
            small = [p for p in params if _fits_flat(p, params)]
            if len(small) < 2 or len({self._moments(p)["step"] for p in small}) > 1:
                small = []  # one at a time (a parameter that missed steps has its own bias correction)
            if small:
                self._update_together(small, hyper)
            together = {id(p) for p in small}
            for p in params:
                if id(p) not in together:
                    self._update(p, hyper)

    def _moments(self, p):
        """This parameter's state, zero moments on its first step."""
        s = self.state.get(id(p))
        if s is None:
            xp = backend.get_array_module(p.data)
            s = self.state[id(p)] = {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}
        return s

    def _update(self, p, hyper):
        """One parameter, in blocks over the threads."""
        s = self._moments(p)
        s["step"] += 1
        parallel.map_blocks(_adamw_kernel, p.data, p.grad, s["exp_avg"], s["exp_avg_sq"], **hyper,
                            bias1=1 - hyper["b1"] ** s["step"], bias2=1 - hyper["b2"] ** s["step"])

    def _update_together(self, params, hyper):
        """Many small parameters as one: they live in one flat buffer, their moments in two.

        A small parameter's update is a dozen NumPy calls on a few thousand numbers, so
        their overhead, not the arithmetic, is the cost; as one flat array the update is a
        dozen calls in all, split over the threads. p.data and the moments become views
        into the flat buffers (state_dict still sees them per parameter); if anything
        rebinds one (loading a checkpoint), the buffers are rebuilt from the current values.
        """
        states = [self._moments(p) for p in params]
        t = states[0]["step"] + 1
        flat = self._flat.get(id(params[0]))
        if flat is None or not _views_of(flat, params, states):
            flat = self._flat[id(params[0])] = _flatten(params, states)
        for s in states:
            s["step"] = t
        grads = np.concatenate([p.grad.ravel() for p in params])
        parallel.map_blocks(_adamw_kernel, flat["p"], grads, flat["m"], flat["v"], **hyper,
                            bias1=1 - hyper["b1"] ** t, bias2=1 - hyper["b2"] ** t)


FLAT_BYTES = 512 << 10  # parameters smaller than this are updated together (AdamW._update_together)


def _fits_flat(p, params):
    """Whether p can join params[0]'s flat update: a small float NumPy array of the same dtype."""
    return isinstance(p.data, np.ndarray) and p.data.nbytes < FLAT_BYTES and p.data.dtype == params[0].data.dtype


def _flatten(params, states):
    """One flat array each for the parameters and their two moments; rebind them all as views."""
    flat = {key: np.concatenate([a.ravel() for a in arrays])
            for key, arrays in (("p", [p.data for p in params]), ("m", [s["exp_avg"] for s in states]),
                                ("v", [s["exp_avg_sq"] for s in states]))}
    start = 0
    for p, s in zip(params, states):
        view = lambda key: flat[key][start:start + p.data.size].reshape(p.shape)
        p.data, s["exp_avg"], s["exp_avg_sq"] = view("p"), view("m"), view("v")
        start += p.data.size
    flat["ids"] = [id(p) for p in params]
    return flat


def _views_of(flat, params, states):
    """Whether the flat buffers still back exactly these parameters and moments."""
    return (flat["ids"] == [id(p) for p in params]
            and all(p.data.base is flat["p"] and s["exp_avg"].base is flat["m"] and s["exp_avg_sq"].base is flat["v"]
                    for p, s in zip(params, states)))


def _adamw_kernel(p, g, m, v, lr, b1, b2, eps, wd, bias1, bias2):
    """The update above on a block of one parameter, in place, with one scratch array
    instead of a temporary per term. bias1, bias2 = 1 - b1^t, 1 - b2^t."""
    xp = backend.get_array_module(p)
    scratch = xp.multiply(g, 1 - b1)
    m *= b1
    m += scratch                                        # m = b1 m + (1 - b1) g
    xp.multiply(g, g, out=scratch)
    scratch *= 1 - b2
    v *= b2
    v += scratch                                        # v = b2 v + (1 - b2) g^2
    if wd:
        p *= 1 - lr * wd                                # decoupled weight decay
    xp.sqrt(v, out=scratch)
    scratch *= 1 / math.sqrt(bias2)
    scratch += eps                                      # sqrt(v_hat) + eps
    xp.divide(m, scratch, out=scratch)
    scratch *= -lr / bias1                              # -lr m_hat / (sqrt(v_hat) + eps)
    p += scratch


class SGD(Optimizer):
    """SGD with momentum as PyTorch: buf <- momentum buf + g (+ wd p);  p <- p - lr buf."""

    def __init__(self, params, lr=1e-2, momentum=0.0, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + group["weight_decay"] * p.data if group["weight_decay"] else p.grad
                if group["momentum"]:
                    s = self.state.get(id(p))
                    if s is None:
                        s = self.state[id(p)] = {"momentum_buffer": g.copy()}
                    else:
                        s["momentum_buffer"] *= group["momentum"]
                        s["momentum_buffer"] += g
                    g = s["momentum_buffer"]
                p.data -= group["lr"] * g


def clip_grad_norm_(params, max_norm):
    """Scale all gradients so their global L2 norm is at most max_norm; return the norm before.

    Rebinds each `.grad` (gradient arrays are never modified in place, see tensor.py).
    """
    params = [p for p in params if p.grad is not None]
    grads = [p.grad for p in params]
    if not grads:
        return 0.0
    total = math.sqrt(sum(float(backend.get_array_module(g).vdot(g.ravel(), g.ravel())) for g in grads))
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for p in params:
            p.grad = p.grad * p.grad.dtype.type(coef)
    return total


def cosine_schedule(step, max_lr, min_lr, warmup_iters, decay_iters):
    """Learning rate at `step`: linear warmup to max_lr, cosine decay to min_lr at decay_iters.

    Warmup is (step + 1) / (warmup_iters + 1) * max_lr, as nanoGPT; after decay_iters, min_lr.
    """
    if step < warmup_iters:
        return max_lr * (step + 1) / (warmup_iters + 1)
    if step >= decay_iters:
        return min_lr
    progress = (step - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)
