"""Packed chat data: the loss on every assistant turn and nothing else, first-fit packing
(segments, whole conversations, every target kept), bad lines, the same loss and gradients as
one conversation per row, and train.py --chat_file end to end (a checkpoint with an exact
resume, a GPT-2 directory whose embedding grows).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gpt import hf
from gpt.chat import ChatDataset, ChatTemplate, add_chat_tokens, has_chat_template
from gpt.chat.dataset import pack
from gpt.data import DataError
from gpt.tokenizer import BPETokenizer, CharTokenizer
from tiny import tiny_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXT = "abcdefghijklmnopqrstuvwxyz ?.,!\n"
TOK = add_chat_tokens(CharTokenizer.train(TEXT))


def conversation(k):
    """A conversation of 1 to 3 exchanges with an optional system message, its size set by k."""
    messages = [{"role": "system", "content": "be brief"}] if k % 3 == 0 else []
    for turn in range(1 + k % 3):
        messages += [{"role": "user", "content": f"q{'u' * (k % 5)} {'xyz'[turn]}?"},
                     {"role": "assistant", "content": "a" * (1 + (k + turn) % 7) + "."}]
    return messages


CONVERSATIONS = [conversation(k) for k in range(40)]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def data(tmp_path):
    return ChatDataset(write_jsonl(tmp_path / "chats.jsonl", [{"messages": c} for c in CONVERSATIONS]), TOK)


def test_targets_are_every_assistant_turn_and_nothing_else(data):
    template = ChatTemplate(TOK)
    for i, (ids, targets, where) in enumerate(data.splits["train"]):
        rendered, mask = template.render(CONVERSATIONS[i])
        assert ids.tolist() == rendered and where.endswith(f"line {i + 1}")
        assert TOK.decode(targets[targets >= 0].tolist()) == "".join(
            m["content"] + "<|end|>" for m in CONVERSATIONS[i] if m["role"] == "assistant")
        assert np.array_equal(targets >= 0, mask)


def test_packed_rows_hold_whole_conversations_in_their_own_segments(data):
    x, y, segments = data.get_batch("train", 6, 64, np.random.default_rng(0))
    assert x.shape == y.shape == segments.shape and x.shape[1] <= 64 and x.dtype == segments.dtype == np.int64
    train = {tuple(ids): targets for ids, targets, _ in data.splits["train"]}
    packed = 0
    for xs, ys, seg in zip(x, y, segments):
        assert seg[0] == 0 and set(np.diff(seg)) <= {0, 1}  # segments 0, 1, ... in order, then the padding
        conversations, pad = list(np.unique(seg)), None
        if np.all(ys[seg == seg[-1]] == -1):  # a padding tail (every conversation has a target)
            pad = conversations.pop()
        for s in conversations:
            at = np.flatnonzero(seg == s)
            last = s == conversations[-1]  # the row's last token is only a target
            ids = tuple(np.append(xs[at], ys[at[-1]]) if last else xs[at])
            assert ids in train, "a segment that is not one whole conversation"
            expected = train[ids][1:] if last else np.append(train[ids][1:], -1)
            assert np.array_equal(ys[at], expected)  # every target of the conversation, and no other
            packed += 1
        if pad is not None:
            assert np.all(ys[seg == pad] == -1) and np.all(xs[seg == pad] == ChatTemplate(TOK).end_id)
    assert packed > 6  # several conversations share rows


def test_pack_is_first_fit_deterministic_and_never_overfills():
    lengths = np.random.default_rng(1).integers(3, 40, size=100)
    rows = pack(lengths, 8, 64, np.random.default_rng(7))
    assert rows == pack(lengths, 8, 64, np.random.default_rng(7))
    assert all(row and sum(lengths[row]) <= 64 for row in rows)
    assert sum(map(len, rows)) > 8
    rng = np.random.default_rng(7)
    draws = [int(rng.integers(len(lengths))) for _ in range(sum(map(len, rows)) + 1)]
    assert sorted(draws[:-1]) == sorted(i for row in rows for i in row)  # every draw placed ...
    assert all(lengths[draws[-1]] > 64 - sum(lengths[row]) for row in rows)  # ... until one fits in no row


def test_a_batch_depends_only_on_the_generator(data):
    rng = np.random.default_rng(3)
    rng.integers(10)
    state = rng.bit_generator.state
    first = data.get_batch("train", 4, 64, rng)
    rng.bit_generator.state = state
    assert all(np.array_equal(a, b) for a, b in zip(first, data.get_batch("train", 4, 64, rng)))


def test_packed_rows_give_the_loss_and_gradients_of_one_conversation_per_row(data):
    model = tiny_model(vocab_size=TOK.vocab_size, block_size=64).astype(np.float64)
    rows = pack(data.lengths["train"], 3, 65, np.random.default_rng(0))

    def loss_and_grads(x, y, segments=None):
        model.zero_grad()
        _, loss = model(x, y, segments=segments)
        loss.backward()
        return loss.item(), [p.grad.copy() for p in model.parameters()]

    packed = loss_and_grads(*data.rows("train", rows))
    x, y, _ = data.rows("train", [[i] for row in rows for i in row])  # one per row, right-padded
    alone = loss_and_grads(x, y)
    assert sum(map(len, rows)) > len(rows)
    assert packed[0] == pytest.approx(alone[0], rel=1e-12)
    for g, h in zip(packed[1], alone[1]):
        np.testing.assert_allclose(g, h, rtol=1e-9, atol=1e-12)


GOOD = {"messages": CONVERSATIONS[0]}


@pytest.mark.parametrize("rows, message", [
    ([GOOD, "{not json", GOOD], "line 2: not JSON"),
    ([GOOD, GOOD, [1, 2]], r"line 3: expected an object \{\"messages\""),
    ([{"conversation": []}, GOOD], "line 1: expected an object"),
    ([GOOD, {"messages": [{"role": "bot", "content": "hi"}]}], "line 2: message 1 has role 'bot'"),
    ([{"messages": [{"role": "user", "content": None}]}, GOOD], r"line 1: message 1 \(user\): content is a NoneType"),
    ([{"messages": [{"role": "user", "content": "hi?"}]}, GOOD], "line 1: no assistant message"),
    ([GOOD, {"messages": [{"role": "assistant", "content": "<|end|>"}]}], "line 2: .* special token"),
    ([GOOD, {"messages": [{"role": "assistant", "content": "É"}]}], "line 2: .* not in the vocabulary"),
    ([GOOD], "need at least 2"),
])
def test_bad_lines_are_one_line_errors_naming_the_file_and_line(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=message) as e:
        ChatDataset(path, TOK)
    assert "\n" not in str(e.value) and str(e.value).startswith(path)


def test_a_conversation_longer_than_a_row_is_refused(data):
    longest = max(len(ids) for ids, _, _ in data.splits["train"])
    data.check_length("train", longest - 1)
    with pytest.raises(DataError, match=f"line .*: the conversation takes {longest} tokens, more than block_size"):
        data.check_length("train", longest - 2)
    with pytest.raises(DataError, match="more than block_size"):
        data.get_batch("train", 2, longest - 2, np.random.default_rng(0))


def test_a_tokenizer_without_chat_tokens_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="lacks the chat special tokens"):
        ChatDataset(write_jsonl(tmp_path / "c.jsonl", [GOOD, GOOD]), CharTokenizer.train(TEXT))


# ---- train.py --chat_file ---------------------------------------------------------------------
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--batch_size=4", "--eval_iters=2", "--log_interval=1",
        "--warmup_iters=2", "--lr_decay_iters=8", "--always_save_checkpoint=true", "--learning_rate=3e-3",
        "--eval_interval=3", "--block_size=64"]


def train(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *TINY, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def losses(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as fh:
        return [(r["iter"], r["loss"]) for r in map(json.loads, fh) if "loss" in r]


def test_train_py_chat_file_adds_the_tokens_and_resumes_exactly(tmp_path):
    (tmp_path / "input.txt").write_text(TEXT * 50)
    chats = write_jsonl(tmp_path / "chats.jsonl", [{"messages": c} for c in CONVERSATIONS])
    pre = str(tmp_path / "pre")
    result = train(f"--data_file={tmp_path / 'input.txt'}", f"--out_dir={pre}", "--max_iters=2")
    assert result.returncode == 0, result.stderr
    full, half = str(tmp_path / "full"), str(tmp_path / "half")
    result = train(f"--init_from={pre}", f"--chat_file={chats}", f"--out_dir={full}", "--max_iters=6")
    assert result.returncode == 0, result.stderr
    assert "added the chat tokens" in result.stdout
    train(f"--init_from={pre}", f"--chat_file={chats}", f"--out_dir={half}", "--max_iters=3")
    result = train("--init_from=resume", f"--chat_file={chats}", f"--out_dir={half}", "--max_iters=6")
    assert result.returncode == 0, result.stderr
    assert "added the chat tokens" not in result.stdout
    assert losses(full) == losses(half) and len(losses(full)) == 6
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD, "{oops"])
    result = train(f"--init_from={pre}", f"--chat_file={bad}", f"--out_dir={tmp_path / 'bad'}", "--max_iters=1")
    assert result.returncode == 2 and result.stderr.strip() == f"error: {bad}, line 2: not JSON (Expecting " \
        "property name enclosed in double quotes)"


def test_train_py_chat_file_grows_a_gpt2_directory(tmp_path):
    bpe = BPETokenizer.train(TEXT * 50 + " ".join(m["content"] for c in CONVERSATIONS for m in c), 300)
    source = str(tmp_path / "gpt2")
    hf.save(tiny_model(vocab_size=bpe.vocab_size, block_size=64, n_embd=16), bpe, source)
    chats = write_jsonl(tmp_path / "chats.jsonl", [{"messages": c} for c in CONVERSATIONS])
    out = str(tmp_path / "out")
    result = train(f"--init_from={source}", f"--chat_file={chats}", f"--out_dir={out}", "--max_iters=2")
    assert result.returncode == 0, result.stderr
    assert f"added the chat tokens: vocab {bpe.vocab_size} -> {bpe.vocab_size + 4}" in result.stdout
    model, tok = hf.load_pretrained(out)
    assert model.config.vocab_size == tok.vocab_size == bpe.vocab_size + 4 and has_chat_template(tok)
