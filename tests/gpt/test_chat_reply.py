"""Replies: the text and reason of generate_reply, what it streams, batched replies equal to
one-by-one ones, trimming a history to the context, and the errors when nothing fits.

The model (tiny_chat.py) is trained for about a second on three conversations, so its greedy
replies are known; every test takes well under a second after that.
"""
import numpy as np
import pytest

import nanograd as ng
from gpt.chat import ChatTemplate, add_chat_tokens
from gpt.chat.reply import generate_replies, generate_reply, left_pad, trim_history
from gpt.model import GPT, GPTConfig
from gpt.tokenizer import BPETokenizer
from gpt.tokenizer.stream import TextStream

from tiny_chat import CONVERSATIONS, chat_model  # noqa: E402

USER = [{"role": "user", "content": "hello"}]
UNICODE = "naïve café, 3 € each; 🙂 ok. " * 4


@pytest.fixture(scope="module")
def trained():
    return chat_model()


def test_the_reply_ends_at_end_and_streams_exactly_its_text(trained):
    model, template = trained
    for messages in CONVERSATIONS:
        pieces = []
        text, reason = generate_reply(model, template, messages[:-1], max_new_tokens=30, stream=pieces.append)
        assert (text, reason) == (messages[-1]["content"], "end")
        assert "".join(pieces) == text  # the <|end|> is not streamed


def test_a_reply_cut_at_max_new_tokens_says_length(trained):
    model, template = trained
    pieces = []
    text, reason = generate_reply(model, template, USER, max_new_tokens=4, stream=pieces.append)
    assert (text, reason) == ("Good", "length") and pieces == list("Good")


def test_the_stream_holds_back_a_character_split_across_byte_tokens():
    tokenizer = BPETokenizer.train(UNICODE, vocab_size=270)
    ids = tokenizer.encode(UNICODE)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # some tokens end mid-character
    stream = TextStream(tokenizer)
    pieces = [stream.push([i]) for i in ids]
    assert "".join(pieces) == UNICODE and not any("\ufffd" in p for p in pieces)
    cut = TextStream(tokenizer)
    held = cut.push(list("🙂".encode("utf-8")[:2]))  # the first two of its four bytes
    assert held == "" and cut.flush() == "\ufffd" == tokenizer.decode(list("🙂".encode("utf-8")[:2]))


def test_a_sampled_reply_over_byte_tokens_streams_its_text():
    template = ChatTemplate(add_chat_tokens(BPETokenizer.train(UNICODE, vocab_size=270)))
    ng.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=template.tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16))
    pieces = []
    text, reason = generate_reply(model, template, USER, max_new_tokens=40, temperature=1.0, seed=3,
                                  stream=pieces.append)
    assert "".join(pieces) == text and reason in ("end", "length")


def test_special_tokens_in_the_middle_of_a_reply_are_left_out_of_its_text(trained):
    _, template = trained
    ng.manual_seed(1)
    model = GPT(GPTConfig(block_size=64, vocab_size=template.tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16))
    prompt = template.prompt_ids(USER)
    raw = model.generate(np.array([prompt]), 40, temperature=2.0, seed=9, eos_token_id=template.end_id)
    raw = raw[0, len(prompt):].tolist()
    roles = set(template.role_ids.values())
    end = raw.index(template.end_id)
    assert roles & set(raw[:end])  # the untrained model does emit a role token before its <|end|>
    pieces = []
    text, reason = generate_reply(model, template, USER, max_new_tokens=40, temperature=2.0, seed=9,
                                  stream=pieces.append)
    assert text == template.tokenizer.decode([i for i in raw[:end] if i not in roles]) == "".join(pieces)
    assert reason == "end"
    template.check(USER + [{"role": "assistant", "content": text}])  # the reply can join the conversation


def test_batched_replies_equal_one_by_one_in_input_order(trained):
    model, template = trained
    conversations = [c[:-1] for c in CONVERSATIONS] + [USER, [{"role": "user", "content": "who art thou, friend"}]]
    alone = [generate_reply(model, template, c, max_new_tokens=20) for c in conversations]
    for batch_size in (1, 2, 32):  # padded batches of mixed lengths, and one batch of all
        assert generate_replies(model, template, conversations, 20, batch_size=batch_size) == alone


def test_left_pad_puts_each_prompt_at_the_right_end():
    idx, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert idx.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def history(n):
    """A system message and n exchanges, then a user message."""
    messages = [{"role": "system", "content": "Be brief."}]
    for k in range(n):
        messages += [{"role": "user", "content": f"question {k}"}, {"role": "assistant", "content": f"answer {k}"}]
    return messages + [{"role": "user", "content": "last"}]


def test_trim_history_drops_the_oldest_exchanges_and_keeps_the_system_message(trained):
    _, template = trained
    messages = history(6)
    kept, dropped = trim_history(template, messages, block_size=64, max_new_tokens=10)
    assert dropped > 0 and dropped % 2 == 0 and kept == messages[:1] + messages[1 + dropped:]
    one_more_exchange = messages[:1] + messages[1 + dropped - 2:]
    assert len(template.prompt_ids(kept)) + 10 <= 64 < len(template.prompt_ids(one_more_exchange)) + 10
    assert trim_history(template, messages, block_size=1000, max_new_tokens=10) == (messages, 0)


def test_a_history_left_with_an_assistant_reply_first_drops_it_too(trained):
    _, template = trained
    messages = history(1)[1:]  # no system message: user, assistant, user
    long_reply = [messages[0], {"role": "assistant", "content": "x" * 30}, messages[2]]
    kept, dropped = trim_history(template, long_reply, block_size=30, max_new_tokens=10)
    assert kept == messages[2:] and dropped == 2


def test_a_message_too_long_alone_is_one_clear_error(trained):
    model, template = trained
    too_long = [{"role": "user", "content": "x" * 60}]
    with pytest.raises(ValueError, match="block_size=64") as info:
        trim_history(template, history(2)[:1] + too_long, 64, 10)
    assert "\n" not in str(info.value) and "max_new_tokens" in str(info.value)
    for call in (lambda: generate_reply(model, template, too_long, max_new_tokens=10),
                 lambda: generate_replies(model, template, [USER, too_long], 10)):
        with pytest.raises(ValueError, match="does not fit"):
            call()
