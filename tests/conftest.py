"""Shared test setup: the device tests run on, and Hypothesis settings that keep the suite fast.

Run on a GPU with `pytest --device cuda` (or NANOGRAD_DEVICE=cuda); the default is the CPU.
Tests that need a device take the `device` fixture and move their NumPy data there with
`nanograd.backend.to_device`; on a machine without CuPy and a GPU they are skipped.
"""
import os

import pytest
from hypothesis import settings

from nanograd import backend

settings.register_profile("nanograd", max_examples=30, deadline=None)
settings.load_profile("nanograd")


def pytest_addoption(parser):
    parser.addoption("--device", choices=("cpu", "cuda"),
                     default=os.environ.get("NANOGRAD_DEVICE", "cpu"),
                     help="device for the tests' tensors (default: $NANOGRAD_DEVICE or cpu)")


@pytest.fixture(scope="session")
def device(request):
    """'cpu' or 'cuda', as asked on the command line; skips when CUDA is asked but absent."""
    device = request.config.getoption("--device")
    if device == "cuda" and not backend.cuda_available():
        pytest.skip("--device cuda needs CuPy and an NVIDIA GPU")
    return device
