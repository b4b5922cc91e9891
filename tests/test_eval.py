"""eval.py: strided windows score every token once, and the loss equals Hugging Face's.

Hugging Face's GPT2LMHeadModel (random, small) is the oracle for the loss on the same
tokens; those tests skip without torch and transformers.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import eval as evaluate  # noqa: E402

from gpt import hf  # noqa: E402
from gpt.tokenizer import BPETokenizer  # noqa: E402

TEXT = "".join(f"Line {i}: to be, or not to be, that is the question.\n" for i in range(30))


@pytest.mark.parametrize("n, max_length, stride", [(100, 32, 16), (100, 32, 31), (33, 32, 8), (10, 32, 5), (2, 2, 1)])
def test_windows_score_every_token_once(n, max_length, stride):
    windows = evaluate.strided_windows(n, max_length, stride)
    scored = [p for begin, end, first in windows for p in range(first, end)]
    assert scored == list(range(1, n))
    assert all(end - begin <= max_length and begin < first for begin, end, first in windows)


def test_disjoint_windows_skip_each_windows_first_token():
    windows = evaluate.strided_windows(100, 32, 32)
    scored = [p for begin, end, first in windows for p in range(first, end)]
    assert scored == [p for p in range(1, 100) if p % 32]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random GPT2LMHeadModel saved by transformers, with our BPE tokenizer's vocab.json/merges.txt."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    tok = BPETokenizer.train(TEXT, 300)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=32, vocab_size=tok.vocab_size,
                                     initializer_range=0.1)
    model = transformers.GPT2LMHeadModel(config).eval()
    d = str(tmp_path_factory.mktemp("hf"))
    model.save_pretrained(d)
    tok.save_gpt2(d)
    return torch, model, d


@pytest.mark.parametrize("stride", [8, 31, 32])
def test_loss_matches_hf_on_the_same_tokens(hf_dir, stride):
    torch, theirs, d = hf_dir
    ours, _ = hf.load(d)
    ids = np.random.default_rng(0).integers(0, 300, 150)
    nll, count = evaluate.total_nll(ours, ids, 32, stride, batch_size=3)
    expected, n = 0.0, 0
    for begin, end, first in evaluate.strided_windows(len(ids), 32, stride):
        labels = torch.from_numpy(ids[begin:end]).clone()[None]
        labels[:, :first - begin] = -100  # HF shifts the labels itself: position p is predicted from < p
        with torch.no_grad():
            loss = theirs(torch.from_numpy(ids[begin:end])[None], labels=labels).loss.item()
        expected += loss * (end - first)
        n += end - first
    assert count == n == (len(ids) - 1 if stride < 32 else len(ids) - 1 - (len(ids) - 1) // 32)
    assert abs(nll / count - expected / n) < 1e-4


def test_one_window_is_hf_loss(hf_dir):
    torch, theirs, d = hf_dir
    ours, _ = hf.load(d)
    ids = np.random.default_rng(1).integers(0, 300, 32)
    nll, count = evaluate.total_nll(ours, ids, 32, 32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(ids)[None], labels=torch.from_numpy(ids)[None]).loss.item()
    assert count == 31 and abs(nll / count - expected) < 1e-4


def run_eval(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_cli_prints_loss_and_perplexity(hf_dir, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    result = run_eval(f"--init_from={hf_dir[2]}", f"--data_file={text}", "--stride=16")
    assert result.returncode == 0, result.stderr
    loss = float(result.stdout.split("mean loss ")[1].split(",")[0])
    assert f"perplexity {np.exp(loss):.2f}"[:-1] in result.stdout


@pytest.mark.parametrize("args, message", [
    ([], "--data_file"),
    (["--data_file=/nonexistent.txt"], "/nonexistent.txt"),
    (["--data_file=README.md", "--stride=0", "--max_length=99999"], "--max_length=99999"),
])
def test_bad_input_is_one_line(hf_dir, args, message):
    result = run_eval(f"--init_from={hf_dir[2]}", *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
