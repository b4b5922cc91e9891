"""Supervised fine-tuning: prompt masking, padding and truncation, the split, bad lines, and
train.py fine-tuning a checkpoint or GPT-2 directory (with block_size crop and exact resume).
"""
import json
import os
import sys

import numpy as np
import pytest

from gpt import hf
from gpt.data import DataError
from gpt.model import GPT, GPTConfig
from gpt.sft import SFTDataset
from gpt.tokenizer import BPETokenizer, CharTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
import train  # noqa: E402

TEXT = "".join(f"Line {i}: to be, or not to be, that is the question.\n" for i in range(150))
CHAR = CharTokenizer.train(TEXT)
EXAMPLES = [{"prompt": f"Line {i}: to be", "completion": f" {i % 7}"} for i in range(40)]
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4", "--eval_iters=2",
        "--log_interval=1", "--warmup_iters=2", "--lr_decay_iters=8", "--always_save_checkpoint=true",
        "--learning_rate=3e-3"]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def jsonl(tmp_path):
    return write_jsonl(tmp_path / "sft.jsonl", EXAMPLES)


def test_targets_are_completion_and_end_only(jsonl):
    data = SFTDataset(jsonl, CHAR)
    assert data.eos == CHAR.encode("\n")[0]  # a char tokenizer ends completions with its newline
    x, y = data.get_batch("train", 6, 32, np.random.default_rng(0))
    for xs, ys in zip(x, y):
        prompt_length = next(len(CHAR.encode(e["prompt"])) for e in EXAMPLES
                             if CHAR.encode(e["prompt"]) == xs[:len(CHAR.encode(e["prompt"]))].tolist())
        scored = ys[ys >= 0]
        assert np.all(ys[:prompt_length - 1] == -1)
        assert CHAR.decode(scored.tolist())[-1] == "\n" and CHAR.decode(scored.tolist())[0] == " "
        assert np.array_equal(ys[:-1][ys[:-1] >= 0], xs[1:][ys[:-1] >= 0])  # targets are the next inputs


def test_rows_are_padded_and_long_prompts_cut_from_the_left(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "to be or not to be", "completion": " 1"},
                                              {"prompt": "be", "completion": " 2"}] * 5)
    data = SFTDataset(path, CHAR)
    x, y = data.get_batch("train", 8, 8, np.random.default_rng(0))
    assert x.shape[1] == 8  # the long example, cut to block_size
    for xs, ys in zip(x, y):
        if CHAR.decode(xs.tolist()).startswith("be 2"):  # the short example, right-padded
            assert ys.tolist()[:4] == [-1, *CHAR.encode(" 2\n")] and set(ys[4:]) == {-1}
        else:
            assert CHAR.decode(xs.tolist()) == " to be 1" and CHAR.decode(ys[ys >= 0].tolist()) == " 1\n"


def test_split_is_the_last_tenth_and_bpe_ends_with_eot(jsonl):
    bpe = BPETokenizer.train(TEXT, 300)
    data = SFTDataset(jsonl, bpe)
    assert len(data.splits["train"]) == 36 and len(data.splits["val"]) == 4
    assert [n for _, _, n in data.splits["val"]] == [37, 38, 39, 40]
    assert data.eos == bpe.eot_token and all(ids[-1] == bpe.eot_token for ids, _, _ in data.splits["val"])


@pytest.mark.parametrize("rows, message", [
    ([EXAMPLES[0], "{not json", EXAMPLES[1]], "line 2: not JSON"),
    ([EXAMPLES[0], EXAMPLES[1], {"prompt": "x"}], "line 3: expected an object with string fields"),
    ([{"prompt": 1, "completion": "x"}, EXAMPLES[0]], "line 1: expected an object"),
    ([{"prompt": "", "completion": "1"}, EXAMPLES[0]], "line 1: the prompt is empty"),
    ([{"prompt": "é", "completion": "1"}, EXAMPLES[0]], "line 1: 1 characters are not in the vocabulary"),
    ([EXAMPLES[0]], "need at least 2"),
    ([], "no examples"),
])
def test_bad_lines_are_one_line_errors_naming_the_line(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=message) as e:
        SFTDataset(path, CHAR)
    assert "\n" not in str(e.value) and path in str(e.value)


def test_check_length_names_the_line_that_cannot_fit(tmp_path):
    path = write_jsonl(tmp_path / "long.jsonl", [EXAMPLES[0], {"prompt": "a", "completion": " to be or not"}])
    data = SFTDataset(path, CHAR)
    with pytest.raises(DataError, match="line 2: the completion and end token take 14 tokens"):
        data.check_length("val", 8)
    data.check_length("val", 14)


# ---- train.py ---------------------------------------------------------------------------------
def metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A run directory holding a tiny char model trained for a few iterations on TEXT."""
    out, text = tmp_path_factory.mktemp("pre"), tmp_path_factory.mktemp("text") / "input.txt"
    text.write_text(TEXT)
    train.main(TINY + [f"--data_file={text}", f"--out_dir={out}", "--max_iters=30", "--eval_interval=30"])
    return str(out)


def losses(out_dir):
    return [(r["iter"], r["loss"]) for r in metrics(out_dir) if "loss" in r]


def test_sft_fine_tuning_lowers_completion_loss_and_resumes_exactly(pretrained, jsonl, tmp_path):
    common = TINY + [f"--sft_file={jsonl}", "--eval_interval=4", "--block_size=12"]
    full, half = str(tmp_path / "full"), str(tmp_path / "half")
    train.main(common + [f"--init_from={pretrained}", f"--out_dir={full}", "--max_iters=8"])
    train.main(common + [f"--init_from={pretrained}", f"--out_dir={half}", "--max_iters=4"])
    train.main(common + ["--init_from=resume", f"--out_dir={half}", "--max_iters=8"])
    val = [r["val_loss"] for r in metrics(full) if "val_loss" in r]
    assert val[-1] < val[0]
    assert losses(full) == losses(half)  # bit-identical after the resume
    model, _ = hf.load_pretrained(full)
    assert model.config.block_size == 12  # cropped from the pretrained 16


def test_fine_tune_a_gpt2_directory_on_text(tmp_path):
    bpe = BPETokenizer.train(TEXT, 300)
    source = str(tmp_path / "gpt2")
    hf.save(GPT(GPTConfig(block_size=32, vocab_size=bpe.vocab_size, n_layer=1, n_head=2, n_embd=16)), bpe, source)
    (tmp_path / "input.txt").write_text(TEXT)
    out = str(tmp_path / "out")
    train.main(TINY + [f"--init_from={source}", f"--data_file={tmp_path / 'input.txt'}", f"--out_dir={out}",
                       "--max_iters=4", "--eval_interval=4"])
    model, tok = hf.load_pretrained(out)
    assert model.config.block_size == 16 and tok.encode(TEXT) == bpe.encode(TEXT)
    assert metrics(out)[-1]["val_loss"] < metrics(out)[0]["val_loss"]


def test_sft_from_scratch_is_refused(jsonl):
    with pytest.raises(ValueError, match="--sft_file fine-tunes a trained model"):
        train.main(TINY + [f"--sft_file={jsonl}", "--out_dir=/tmp/never"])
