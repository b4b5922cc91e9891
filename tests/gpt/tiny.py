"""A tiny GPT and random ids shared by the model, generation and interpretability tests."""
import numpy as np

import nanograd as ng
from gpt.model import GPT, GPTConfig

TINY = dict(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=8)


def tiny_model(seed=0, **overrides):
    """A freshly initialised GPT of the TINY shape (any field overridable), seeded."""
    ng.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides}))


def random_ids(B, T, vocab=TINY["vocab_size"], seed=0):
    """Integer ids (B, T) drawn uniformly from the vocabulary."""
    return np.random.default_rng(seed).integers(0, vocab, (B, T))
