"""Modules: parameter names, train/eval, zero_grad, state dicts, and a small network that learns.

`load_state_dict` must be all-or-nothing: a missing, unexpected or mis-shaped entry is
named in the error and leaves every parameter as it was. The training check fits XOR
with a two-layer MLP and AdamW, the smallest problem a linear model cannot solve.
"""
import numpy as np
import pytest

import nanograd as ng
from nanograd import Tensor, backend, nn, optim
from nanograd import functional as F


class MLP(nn.Module):
    def __init__(self, n_in=2, n_hidden=8, n_out=2, p_drop=0.0):
        super().__init__()
        self.scale = nn.Parameter(np.ones(1))
        self.fc = nn.Linear(n_in, n_hidden)
        self.drop = nn.Dropout(p_drop)
        self.head = nn.Sequential(nn.LayerNorm(n_hidden), nn.Linear(n_hidden, n_out, bias=False))

    def forward(self, x):
        return self.head(self.drop(self.fc(x).tanh() * self.scale))


def inputs(device, n=4):
    return Tensor(backend.to_device(np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32), device))


def snapshot(model):
    return {name: p.numpy().copy() for name, p in model.named_parameters()}


def test_named_parameters():
    assert [name for name, _ in MLP().named_parameters()] == [
        "scale", "fc.weight", "fc.bias", "head.0.weight", "head.0.bias", "head.1.weight"]


def test_train_and_eval_reach_every_module(device):
    model = MLP(p_drop=0.5).to(device)
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    x = inputs(device)
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())  # dropout is off
    model.train()
    assert all(m.training for m in model.modules())


def test_zero_grad(device):
    model = MLP().to(device)
    model(inputs(device)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_state_dict_round_trip(device):
    source, target = MLP().to(device), MLP().to(device)
    target.load_state_dict(source.state_dict())
    x = inputs(device)
    np.testing.assert_array_equal(target(x).numpy(), source(x).numpy())
    source.fc.weight.data += 1  # the loaded arrays are copies
    assert not np.array_equal(target.fc.weight.numpy(), source.fc.weight.numpy())


def missing(state):
    del state["fc.bias"]


def unexpected(state):
    state["fc.extra"] = np.zeros(3)


def misshaped(state):
    state["head.1.weight"] = np.zeros((3, 3))


@pytest.mark.parametrize("corrupt, error, match", [
    (missing, KeyError, r"missing \['fc\.bias'\]"),
    (unexpected, KeyError, r"unexpected \['fc\.extra'\]"),
    (misshaped, ValueError, r"head\.1\.weight has shape \(3, 3\), the model expects \(2, 8\)"),
])
def test_load_state_dict_rejects_bad_entries_and_changes_nothing(corrupt, error, match):
    source, target = MLP(), MLP()
    state = {name: array.copy() for name, array in source.state_dict().items()}
    corrupt(state)
    before = snapshot(target)
    with pytest.raises(error, match=match):
        target.load_state_dict(state)
    after = snapshot(target)
    assert all(np.array_equal(before[name], after[name]) for name in before)


def test_mlp_learns_xor(device):
    ng.manual_seed(0)
    model = MLP(n_hidden=8).to(device)
    x = Tensor(backend.to_device(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32), device))
    y = backend.to_device(np.array([0, 1, 1, 0]), device)
    opt = optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.0)
    for _ in range(300):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
