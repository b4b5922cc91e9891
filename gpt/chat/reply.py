"""Replies of a chat model: one conversation streamed as it is generated, many decoded in batches,
and a history trimmed to fit the context.

    text, reason = generate_reply(model, template, [{"role": "user", "content": "Hi"}], stream=print)
    replies = generate_replies(model, template, conversations, max_new_tokens=64, batch_size=32)
    messages, n_dropped = trim_history(template, messages, model.config.block_size, max_new_tokens=64)
    messages.append(assistant_message(template, text))          # the reply joins the conversation

A reply is what the model generates after the prompt `template.prompt_ids(messages)` (the
conversation, then <|assistant|>), up to its <|end|>: reason "end", or max_new_tokens: reason
"length". The prompt and the whole reply must fit in the model's block_size, so that the model
sees the entire conversation at every step (generate would otherwise crop the prompt from the
left without saying so); trim_history makes a long conversation fit by dropping its oldest
messages, the system message kept.

A model may emit a special token in the middle of its reply, a role token such as <|user|> most
likely (a small model does). The reply's text leaves such tokens out, as Hugging Face's
decode(skip_special_tokens=True) does. A model may also spell a special token's text with
ordinary tokens ("<", "|", "end", ...); that text stays in the reply, but a message's content may
hold no special token's text (ChatTemplate.check), so assistant_message takes it out of the
message that joins the conversation, which can then always be continued.

generate_replies decodes conversations of different lengths together: each batch is left-padded
to its longest prompt and the padding masked out (generate's attention_mask), so every row
decodes exactly as if alone; at temperature 0 the replies equal generate_reply's one by one.
Prompts are sorted by length first, so that a batch holds prompts of similar lengths (little
padding); the replies come back in the order of the input.

Left out: beam search and repetition penalties for replies, stop strings other than <|end|>,
streaming several replies at once.
"""
import numpy as np

from gpt.tokenizer.base import special_regex
from gpt.tokenizer.stream import TextStream


def generate_reply(model, template, messages, max_new_tokens=256, temperature=0, top_k=None, top_p=None, seed=None,
                   stream=None):
    """The model's reply to `messages` as (text, reason); reason "end" (it emitted <|end|>) or "length".

    temperature 0 is greedy; top_k, top_p None for off; seed as gpt.generate's. stream(str) is
    called with each piece of the reply's text as it is generated (complete characters only,
    no special token); the pieces join into `text`.
    """
    prompt = template.prompt_ids(messages)
    check_fits(len(prompt), max_new_tokens, model.config.block_size)
    text_stream = ReplyStream(template, stream) if stream is not None else None
    out = model.generate(np.array([prompt], dtype=np.int64), max_new_tokens, temperature=temperature, top_k=top_k,
                         top_p=top_p, seed=seed, eos_token_id=template.end_id, stream=text_stream)  # (1, T + n)
    if text_stream is not None:
        text_stream.close()
    return reply_of(template, out[0, len(prompt):])


def generate_replies(model, template, conversations, max_new_tokens=256, batch_size=32, temperature=0, top_k=None,
                     top_p=None, seed=None):
    """The replies [(text, reason)] to each list of messages in `conversations`, in their order.

    Decoded batch_size conversations at a time, left-padded (see the module docstring);
    temperature, top_k, top_p, seed as generate_reply's (seed: each batch draws from its own
    generator seeded with it).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    prompts = []
    for i, messages in enumerate(conversations):
        prompts.append(template.prompt_ids(messages, where=f"conversation {i}"))
        check_fits(len(prompts[-1]), max_new_tokens, model.config.block_size, where=f"conversation {i}")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    replies = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        idx, attention_mask = left_pad([prompts[i] for i in batch], pad_id=template.end_id)  # (B, T) each
        out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                             eos_token_id=template.end_id, attention_mask=attention_mask)  # (B, T + n)
        for row, i in enumerate(batch):
            replies[i] = reply_of(template, out[row, idx.shape[1]:])
    return replies


def trim_history(template, messages, block_size, max_new_tokens):
    """(messages, n_dropped): the oldest messages other than the system one dropped until the prompt
    plus max_new_tokens fits in block_size; the last message is always kept.

    The kept history starts with a user message (an assistant reply without its question goes
    with it). Raises a one-line ValueError when even the system message and the last message
    alone do not fit.
    """
    system = messages[:1] if len(messages) > 1 and messages[0]["role"] == "system" else []
    history, last = messages[len(system):-1], messages[-1:]
    while history and len(template.prompt_ids(system + history + last)) + max_new_tokens > block_size:
        history = history[1:]
        while history and history[0]["role"] != "user":
            history = history[1:]
    kept = system + history + last
    check_fits(len(template.prompt_ids(kept)), max_new_tokens, block_size, where="with every older message dropped")
    return kept, len(messages) - len(kept)


def assistant_message(template, text):
    """The assistant message of a reply `text`, less every special token's text spelled in it: removed
    until none is left (taking one out can join the halves of another), so `check` accepts it."""
    specials = special_regex(frozenset(template.tokenizer.special_tokens))
    while (kept := specials.sub("", text)) != text:
        text = kept
    return {"role": "assistant", "content": text}


def check_fits(prompt_length, max_new_tokens, block_size, where=""):
    """Raise a one-line ValueError unless a prompt of prompt_length tokens and its reply fit in block_size."""
    if prompt_length + max_new_tokens > block_size:
        raise ValueError(f"{where + ': ' if where else ''}the prompt ({prompt_length} tokens) plus "
                         f"max_new_tokens={max_new_tokens} does not fit the model's context of "
                         f"block_size={block_size} tokens: shorten the message or lower max_new_tokens")


def left_pad(prompts, pad_id):
    """Lists of ids of different lengths -> (idx, attention_mask), int64 (B, T) each, T the longest;
    each prompt sits at the right end of its row, the mask 1 on its tokens and 0 on the padding."""
    T = max(len(p) for p in prompts)
    idx = np.full((len(prompts), T), pad_id, dtype=np.int64)  # (B, T)
    attention_mask = np.zeros((len(prompts), T), dtype=np.int64)  # (B, T)
    for row, prompt in enumerate(prompts):
        idx[row, T - len(prompt):] = prompt
        attention_mask[row, T - len(prompt):] = 1
    return idx, attention_mask


def reply_of(template, new_ids):
    """(text, reason) of the generated ids (n,): the text before <|end|> without special tokens,
    and "end" if <|end|> came, else "length"."""
    new_ids = new_ids.tolist()
    skipped = mid_reply_specials(template)
    return template.decode_reply([i for i in new_ids if i not in skipped]), \
        "end" if template.end_id in new_ids else "length"


def mid_reply_specials(template):
    """The ids of every special token but <|end|>: left out of a reply's text (see the module docstring)."""
    return frozenset(template.tokenizer.special_tokens.values()) - {template.end_id}


class ReplyStream:
    """generate's stream callback for one row: passes each complete piece of reply text to `write`,
    stopping at <|end|> and leaving out other special tokens."""

    def __init__(self, template, write):
        self.end_id, self.write = template.end_id, write
        self.skipped = mid_reply_specials(template)
        self.text = TextStream(template.tokenizer)
        self.ended = False

    def __call__(self, column):  # column: (1,) the new token id
        token = int(column[0])
        self.ended = self.ended or token == self.end_id
        if not self.ended and token not in self.skipped and (piece := self.text.push([token])):
            self.write(piece)

    def close(self):
        """Pass on what is held back at the end (an unfinished character, as U+FFFD)."""
        if piece := self.text.flush():
            self.write(piece)
