"""The model behind the web page: prompts from messages, and the view inside it for one conversation.

    served = ServedModel.load("out-chat")
    prompt, end_id = served.prompt(messages, max_new_tokens=64)     # what the engine decodes
    served.inspect(messages)      # ids, tokens, attention[layer][head] (T, T), logit lens top 5

Any run folder is served. A model whose tokenizer has the chat tokens (gpt/chat/template.py)
replies to the conversation as chat.py does: the prompt is the conversation rendered with
the template and ended by <|assistant|>, its oldest turns dropped until the prompt and the
reply fit the context (gpt/chat/reply.py's trim_history), and the reply stops at <|end|>. A
model without them (any train.py run) continues the text of the last user message as
plain text, stopping at <|endoftext|> where its tokenizer has one. Messages are checked
by the chat template's rules either way.

The heads the page labels come from the run folder's circuit.json (`python -m gpt.inspect
circuit`) where there is one, else from find_circuit's classification (gpt.interp.circuit_heads)
on its probe of repeated random tokens, run once at load.

Left out: several models behind one server, tool calls.
"""
import json
import os

import numpy as np

from gpt.chat.reply import assistant_message, check_fits, trim_history
from gpt.chat.template import ChatTemplate, add_chat_tokens, has_chat_template
from gpt.hf import load_pretrained
from gpt.interp import (attention_patterns, circuit_heads, induction_scores_from_patterns, logit_lens,
                        previous_token_scores_from_patterns, probe_len, repeated_random_tokens)
from gpt.tokenizer import CharTokenizer
from gpt.tokenizer.stream import TextStream

LENS_TOP = 5  # guesses per layer and position in /api/inspect
DIGITS = 6  # decimals of the probabilities sent (a rounding error of at most 5e-7)


class ServedModel:
    """A model, its tokenizer, the chat template (or the plain-text mode), and its labelled heads."""

    def __init__(self, model, tokenizer, name, heads):
        self.model, self.tokenizer, self.name, self.heads = model, tokenizer, name, heads
        self.chat = has_chat_template(tokenizer)
        # a plain model's messages are checked by the same rules, by a template over the chat tokens alone
        self.template = ChatTemplate(tokenizer if self.chat else add_chat_tokens(CharTokenizer(" ")))

    @classmethod
    def load(cls, path):
        """Load a run folder, a checkpoint file or a GPT-2 directory, and find its labelled heads."""
        model, tokenizer = load_pretrained(path)
        return cls(model, tokenizer, os.path.basename(os.path.normpath(path)), labelled_heads(model, path))

    @property
    def block_size(self):
        return self.model.config.block_size

    def end_id(self):
        """The token that ends a reply: <|end|> for a chat model, else <|endoftext|> or None."""
        return self.template.end_id if self.chat else self.tokenizer.eot_token

    def reply_text(self):
        """A ReplyText for one reply of this model."""
        return ReplyText(self.tokenizer, self.end_id())

    def checked(self, messages):
        """`messages` checked by the template's rules, each assistant turn less any special token's
        text spelled in it (as chat.py keeps its history: reply.assistant_message), so a reply the
        page sends back never makes the conversation unservable."""
        messages = [assistant_message(self.template, m["content"])
                    if isinstance(m, dict) and m.get("role") == "assistant" and isinstance(m.get("content"), str)
                    else m for m in messages]
        self.template.check(messages)
        return messages

    def prompt(self, messages, max_new_tokens):
        """The prompt ids the reply to `messages` continues; ValueError (one line) if they cannot be served."""
        messages = self.checked(messages)
        if self.chat:
            kept, _ = trim_history(self.template, messages, self.block_size, max_new_tokens)
            return self.template.prompt_ids(kept)
        ids = self.tokenizer.encode(last_user_text(messages))
        if not ids:
            raise ValueError("the last user message is empty: this model continues its text, so write some")
        check_fits(len(ids), max_new_tokens, self.block_size)
        return ids

    def rendered_ids(self, messages):
        """The ids of the conversation as the model reads it: the chat template's rendering, or
        for a plain model the last user message's text followed by the replies after it."""
        messages = self.checked(messages)
        if self.chat:
            return self.template.render(messages)[0]
        last = max(k for k, m in enumerate(messages) if m["role"] == "user") if has_user(messages) else 0
        return self.tokenizer.encode("".join(m["content"] for m in messages[last:]))

    def inspect(self, messages):
        """{"ids", "tokens", "attention": [layer][head] (T, T) lists, "lens": {"stages", "top_ids",
        "top_tokens", "top_probs": [stage][position][k]}} for the rendered conversation."""
        ids = self.rendered_ids(messages)
        if not ids:
            raise ValueError("the conversation renders to no tokens: give a message some text")
        if len(ids) > self.block_size:
            raise ValueError(f"the conversation is {len(ids)} tokens, longer than the model's context of "
                             f"block_size={self.block_size}: inspect a shorter one")
        patterns = attention_patterns(self.model, np.array([ids]))  # each (1, H, T, T)
        stages = logit_lens(self.model, ids, k=LENS_TOP)  # [(name, top (T, k), probs (T, k))]
        return {"ids": ids, "tokens": [self.tokenizer.decode([i]) for i in ids],
                "attention": [np.round(p[0].astype(np.float64), DIGITS).tolist() for p in patterns],
                "lens": {"stages": [name for name, _, _ in stages],
                         "top_ids": [top.tolist() for _, top, _ in stages],
                         "top_tokens": [[[self.tokenizer.decode([i]) for i in row] for row in top]
                                        for _, top, _ in stages],
                         "top_probs": [np.round(p.astype(np.float64), DIGITS).tolist() for _, _, p in stages]}}

    def health(self):
        c = self.model.config
        return {"model": self.name, "n_params": int(self.model.num_params()), "block_size": c.block_size,
                "chat": self.chat, "n_layer": c.n_layer, "n_head": c.n_head, "vocab_size": c.vocab_size,
                "special_tokens": sorted(self.tokenizer.special_tokens), "heads": self.heads}


class ReplyText:
    """Generated ids in, the reply's text out piece by piece: "" for the end token, for any other
    special token (left out of a reply, as chat.py and Hugging Face's skip_special_tokens do) and
    while a character's bytes are unfinished; the pieces and `flush()` join into the reply's text."""

    def __init__(self, tokenizer, end_id):
        self.text, self.end_id = TextStream(tokenizer), end_id
        self.skipped = frozenset(tokenizer.special_tokens.values())

    def push(self, token):
        return "" if token in self.skipped else self.text.push([token])

    def flush(self):
        return self.text.flush()


def has_user(messages):
    return any(m["role"] == "user" for m in messages)


def last_user_text(messages):
    """The content of the last user message (a plain model continues it); ValueError if there is none."""
    if not has_user(messages):
        raise ValueError("no user message: this model continues the text of the last user message")
    return [m["content"] for m in messages if m["role"] == "user"][-1]


def labelled_heads(model, path):
    """{"previous_token": [[layer, head], ...], "induction": [...]}: from circuit.json beside the
    checkpoint, else classified now as find_circuit does, from one batch of its repeated random
    tokens (one forward pass: not its ablations and K-composition); none for one layer."""
    circuit_path = os.path.join(path if os.path.isdir(path) else os.path.dirname(path), "circuit.json")
    if os.path.exists(circuit_path):
        with open(circuit_path, encoding="utf-8") as fh:
            circuit = json.load(fh)
        return {"previous_token": circuit.get("previous_token_heads", []),
                "induction": circuit.get("induction_heads", [])}
    if model.config.n_layer < 2:
        return {"previous_token": [], "induction": []}
    L = probe_len(model)  # find_circuit's probe (its defaults: 8 rows, seed 0) and its rules
    patterns = attention_patterns(model, repeated_random_tokens(model.config.vocab_size, L, 8,
                                                                np.random.default_rng(0)))
    ind, prev = circuit_heads(induction_scores_from_patterns(patterns, L),
                              previous_token_scores_from_patterns(patterns))
    return {"previous_token": prev, "induction": ind}
