"""A tiny chat model shared by the reply and chat.py tests: a character tokenizer with the chat
tokens, a small GPT trained for a few seconds on three conversations until it answers them
and closes its turns with <|end|>."""
import string

import numpy as np

import nanograd as ng
from gpt.chat import ChatTemplate, add_chat_tokens
from gpt.model import GPT, GPTConfig
from gpt.tokenizer import CharTokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Good morrow."}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Well met, friend."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "who art thou"},
     {"role": "assistant", "content": "A player."}],
]
ALPHABET = string.ascii_letters + string.digits + " .,!?'\n"


def chat_model(steps=120, block_size=64, seed=0):
    """(model, template): a GPT of 2 layers and width 32 trained on CONVERSATIONS (the loss on the
    assistant's turns only), one conversation per row."""
    template = ChatTemplate(add_chat_tokens(CharTokenizer.train(ALPHABET)))
    ng.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=template.tokenizer.vocab_size, n_layer=2, n_head=2,
                          n_embd=32))
    rendered = [template.render(messages) for messages in CONVERSATIONS]
    T = max(len(ids) for ids, _ in rendered) - 1
    x = np.full((len(rendered), T), template.end_id, dtype=np.int64)  # (B, T) right-padded inputs
    y = np.full((len(rendered), T), -1, dtype=np.int64)  # (B, T) targets: assistant tokens only
    for row, (ids, mask) in enumerate(rendered):
        x[row, :len(ids) - 1] = ids[:-1]
        y[row, :len(ids) - 1] = np.where(mask[1:], ids[1:], -1)
    opt = model.configure_optimizers(weight_decay=0.0, learning_rate=1e-2, betas=(0.9, 0.99))
    for _ in range(steps):
        _, loss = model(x, y)
        model.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), template
