"""Optimizers against direct NumPy transcriptions of their update equations, and exact resume.

AdamW (with weight decay, two parameter groups with different learning rates) and SGD
with momentum are stepped on fixed gradient sequences and compared with the textbook
equations written out in NumPy. Then: clip_grad_norm_, the cosine learning-rate schedule,
and that saving and loading an optimizer's state continues training bit for bit.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanograd import Tensor, backend, nn, optim

STEPS = 5


def run_optimizer(make_optimizer, groups):
    """Step an optimizer STEPS times on fixed gradients; `groups` is a list of (params, hyperparameters).

    Returns the initial parameter arrays, the gradient sequence for each, and the final arrays.
    """
    rng = np.random.default_rng(0)
    params = [[nn.Parameter(rng.standard_normal((2, 3)), dtype=np.float64) for _ in range(n)] for n, _ in groups]
    start = [p.data.copy() for ps in params for p in ps]
    grads = [[rng.standard_normal((2, 3)) for _ in range(STEPS)] for _ in start]
    opt = make_optimizer([{"params": ps, **hyper} for ps, (_, hyper) in zip(params, groups)])
    flat = [p for ps in params for p in ps]
    for t in range(STEPS):
        for p, g in zip(flat, grads):
            p.grad = g[t]
        opt.step()
    return start, grads, [p.data for p in flat]


def adamw_reference(p, grads, lr, b1, b2, eps, wd):
    m = v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        p = p - lr * wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def sgd_reference(p, grads, lr, momentum, wd):
    buf = None
    for g in grads:
        g = g + wd * p
        buf = g if buf is None else momentum * buf + g
        p = p - lr * buf
    return p


@given(lr=st.floats(1e-4, 0.1), wd=st.floats(0, 0.5), b1=st.floats(0.5, 0.95), b2=st.floats(0.9, 0.999))
def test_adamw_matches_the_update_equations(lr, wd, b1, b2):
    groups = [(2, {"lr": lr}), (1, {"lr": lr / 10, "weight_decay": 0.0})]
    start, grads, final = run_optimizer(lambda g: optim.AdamW(g, betas=(b1, b2), weight_decay=wd), groups)
    group_of = [dict(lr=lr, wd=wd)] * 2 + [dict(lr=lr / 10, wd=0.0)]
    for p0, gs, p, hyper in zip(start, grads, final, group_of):
        expected = adamw_reference(p0, gs, b1=b1, b2=b2, eps=1e-8, **hyper)
        np.testing.assert_allclose(p, expected, rtol=1e-10, atol=1e-12)


@given(lr=st.floats(1e-3, 0.1), momentum=st.floats(0, 0.99), wd=st.floats(0, 0.1))
def test_sgd_momentum_matches_the_update_equations(lr, momentum, wd):
    start, grads, final = run_optimizer(lambda g: optim.SGD(g, lr=lr, momentum=momentum, weight_decay=wd),
                                        [(2, {})])
    for p0, gs, p in zip(start, grads, final):
        np.testing.assert_allclose(p, sgd_reference(p0, gs, lr, momentum, wd), rtol=1e-10, atol=1e-12)


def test_clip_grad_norm_returns_the_norm_and_scales():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(1))
    a.grad, b.grad = np.array([3.0, 0.0], dtype=np.float32), np.array([4.0], dtype=np.float32)
    original = a.grad
    assert optim.clip_grad_norm_([a, b], max_norm=10.0) == pytest.approx(5.0)
    assert a.grad is original  # under the limit: untouched
    assert optim.clip_grad_norm_([a, b], max_norm=1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(np.concatenate([a.grad, b.grad]), [0.6, 0.0, 0.8], rtol=1e-5)
    assert a.grad.dtype == np.float32
    np.testing.assert_array_equal(original, [3.0, 0.0])  # rebound, not modified in place


@pytest.mark.parametrize("step, lr", [
    (0, 1.0 / 11),           # warmup starts above zero
    (9, 10.0 / 11),          # last warmup step
    (10, 1.0),               # peak
    (60, 0.55),              # halfway through the decay: the mean of max and min
    (110, 0.1),              # end of the decay
    (500, 0.1),              # stays at min_lr
])
def test_cosine_schedule(step, lr):
    schedule = optim.cosine_schedule(step, max_lr=1.0, min_lr=0.1, warmup_iters=10, decay_iters=110)
    assert schedule == pytest.approx(lr)


def test_cosine_schedule_decays_monotonically():
    lrs = [optim.cosine_schedule(s, 1.0, 0.1, 10, 110) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert not math.isclose(lrs[0], lrs[-1])


OPTIMIZERS = {
    "AdamW": lambda groups, lr: optim.AdamW(groups, lr=lr, weight_decay=0.1),
    "SGD": lambda groups, lr: optim.SGD(groups, lr=lr, momentum=0.9),
}


def train(model, opt, steps, device):
    """A few steps of least squares on fixed data."""
    rng = np.random.default_rng(1)
    x, y = (Tensor(backend.to_device(rng.standard_normal(s).astype(np.float32), device)) for s in [(8, 3), (8, 2)])
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_state_dict_resumes_exactly(name, device):
    """6 steps in one go == 3 steps, save model and optimizer, load both into fresh objects, 3 more."""
    def fresh(state, lr):
        model = nn.Linear(3, 2).to(device)
        model.load_state_dict(state)
        groups = [{"params": [model.weight]}, {"params": [model.bias], "lr": lr / 2, "weight_decay": 0.0}]
        return model, OPTIMIZERS[name](groups, lr)

    init = {k: v.copy() for k, v in nn.Linear(3, 2).state_dict().items()}
    straight, opt = fresh(init, lr=0.05)
    train(straight, opt, 6, device)

    first, opt = fresh(init, lr=0.05)
    train(first, opt, 3, device)
    resumed, opt_resumed = fresh(first.state_dict(), lr=123.0)  # lr comes back from the state dict
    opt_resumed.load_state_dict(opt.state_dict())
    train(resumed, opt_resumed, 3, device)

    for (param_name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=param_name)


def small_model():
    rng = np.random.default_rng(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    for p in model.parameters():  # non-trivial LayerNorm weights too
        p.data = rng.standard_normal(p.shape).astype(np.float32)
    return model


def test_adamw_small_parameters_updated_together_match_one_at_a_time(monkeypatch):
    """The flat path (every parameter here is small) against FLAT_BYTES = 0, bit for bit: with
    a parameter that misses a step (its own bias correction), and with weights rebound mid-run."""
    def run():
        model = small_model()
        opt = optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
        rng = np.random.default_rng(3)
        x, y = (Tensor(rng.standard_normal(s).astype(np.float32)) for s in [(8, 3), (8, 2)])
        for step in range(6):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            if step == 2:  # as loading a checkpoint does: new arrays, not the flat buffer's views
                model.load_state_dict({k: v * 0.5 for k, v in model.state_dict().items()})
            if step == 4:
                model[2].bias.grad = None  # this one misses a step
            opt.step()
        return [p.data.copy() for p in model.parameters()]

    together = run()
    monkeypatch.setattr(optim, "FLAT_BYTES", 0)
    for a, b in zip(together, run()):
        np.testing.assert_array_equal(a, b)


def test_adamw_together_resumes_exactly_from_its_state_dict():
    rng = np.random.default_rng(4)
    x, y = (Tensor(rng.standard_normal(s).astype(np.float32)) for s in [(8, 3), (8, 2)])

    def steps(model, opt, n):
        for _ in range(n):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()

    straight = small_model()
    steps(straight, optim.AdamW(straight.parameters(), lr=0.05), 4)
    first = small_model()
    opt = optim.AdamW(first.parameters(), lr=0.05)
    steps(first, opt, 2)
    resumed = small_model()
    resumed.load_state_dict({k: v.copy() for k, v in first.state_dict().items()})
    opt_resumed = optim.AdamW(resumed.parameters(), lr=0.05)
    opt_resumed.load_state_dict(opt.state_dict())
    steps(resumed, opt_resumed, 2)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
