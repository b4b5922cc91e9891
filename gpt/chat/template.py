"""The chat format: conversations as token ids, with the loss on the assistant's turns only.

    tok = add_chat_tokens(tokenizer)                     # + <|system|> <|user|> <|assistant|> <|end|>
    template = ChatTemplate(tok)
    ids, targets_mask = template.render([{"role": "user", "content": "Who art thou?"},
                                         {"role": "assistant", "content": "A friend."}])
    prompt = template.prompt_ids(messages)               # ... <|assistant|>: generate from here
    reply = template.decode_reply(generated_ids)         # text up to <|end|>

Layout: each message is <|role|> content <|end|>, one after the other, with no newlines or
spaces added (a model trained on this format learns where turns start from the role tokens
alone). The four chat tokens are special tokens appended to the tokenizer's vocabulary
(`add_chat_tokens`; existing ids keep their meaning), so a character-level tokenizer and
byte-level BPE use the same format. The content of each message is encoded on its own, so
no BPE token spans a turn boundary.

Special tokens come only from the template: a message whose content holds the text of any
special token of the tokenizer ("<|end|>", "<|endoftext|>", ...) is refused with a
ChatFormatError, rather than encoded as ordinary text. That way a user cannot close a turn or
forge an assistant turn by typing its token, and the ids of a conversation are exactly the
ids of its rendered text with specials allowed (what Hugging Face's apply_chat_template
followed by its tokenizer gives). A character outside a character-level vocabulary is
refused the same way, naming the message.

The targets (`targets_mask`) are the tokens the model learns to produce: the content of every
assistant message and the <|end|> closing it. Role tokens, system and user content are
context only. `jinja` is the same template as a Hugging Face chat_template (Jinja2), which
gpt/hf.py writes into tokenizer_config.json; it refuses what `check` refuses (a content holding
a chat token; a tokenizer's other specials, such as <|endoftext|>, it cannot know).

Left out: tool calls, multimodal content (content lists), per-turn loss weights, a default
system prompt.
"""
from ..tokenizer import TokenizerError
from ..tokenizer.base import check_text, special_regex

ROLES = ("system", "user", "assistant")
ROLE_TOKENS = {role: f"<|{role}|>" for role in ROLES}
END = "<|end|>"
CHAT_TOKENS = (*ROLE_TOKENS.values(), END)
JINJA = (
    "{% for message in messages %}"
    "{% if message['role'] not in " + repr(list(ROLES)) + " %}"
    "{{ raise_exception('unknown role ' + message['role']) }}{% endif %}"
    "{% if message['role'] == 'system' and not loop.first %}"
    "{{ raise_exception('only the first message may be a system message') }}{% endif %}"
    "{% for token in " + repr(list(CHAT_TOKENS)) + " %}{% if token in message['content'] %}"
    "{{ raise_exception('a message contains the special token ' + token) }}{% endif %}{% endfor %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '" + END + "' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '" + ROLE_TOKENS["assistant"] + "' }}{% endif %}"
)


class ChatFormatError(ValueError):
    """Messages, or a tokenizer, that the chat format cannot use; the message names the problem."""


def has_chat_template(tokenizer):
    """True when `tokenizer` has all four chat special tokens."""
    return all(t in tokenizer.special_tokens for t in CHAT_TOKENS)


def add_chat_tokens(tokenizer):
    """`tokenizer` if it has the chat tokens, else a copy with those missing appended as special
    tokens (ids after every existing one, so a trained model's ids keep their meaning)."""
    if has_chat_template(tokenizer):
        return tokenizer
    try:
        return tokenizer.with_special_tokens(CHAT_TOKENS)
    except TokenizerError as e:
        raise ChatFormatError(f"cannot add the chat tokens: {e}") from None


class ChatTemplate:
    """Renders conversations of a tokenizer that has the chat tokens (see the module docstring)."""

    jinja = JINJA

    def __init__(self, tokenizer):
        if not has_chat_template(tokenizer):
            missing = [t for t in CHAT_TOKENS if t not in tokenizer.special_tokens]
            raise ChatFormatError(f"the tokenizer lacks the chat special tokens {missing}; "
                                  "add them with gpt.chat.add_chat_tokens (and grow the model's embedding)")
        self.tokenizer = tokenizer
        self.role_ids = {role: tokenizer.special_tokens[t] for role, t in ROLE_TOKENS.items()}
        self.end_id = tokenizer.special_tokens[END]
        self._specials = special_regex(frozenset(tokenizer.special_tokens))

    def check(self, messages, where=""):
        """ChatFormatError (prefixed by `where`, e.g. a file and line) unless `messages` is a
        non-empty list of {"role", "content"} dicts with roles in ROLES, string content free of
        special tokens, and at most one system message, the first."""
        prefix = _prefix(where)
        if not isinstance(messages, list) or not messages:
            raise ChatFormatError(f"{prefix}messages must be a non-empty list of {{\"role\", \"content\"}} "
                                  f"objects, got {messages!r:.60}")
        for k, m in enumerate(messages, 1):
            if not isinstance(m, dict):
                raise ChatFormatError(f"{prefix}message {k} is a {type(m).__name__}, expected an object "
                                      "{\"role\", \"content\"}")
            if set(m) != {"role", "content"}:
                raise ChatFormatError(f"{prefix}message {k} has keys {sorted(m)}; a message has exactly "
                                      "'role' and 'content'")
            if m["role"] not in ROLES:
                raise ChatFormatError(f"{prefix}message {k} has role {m['role']!r:.40}; roles are {', '.join(ROLES)}")
            if not isinstance(m["content"], str):
                raise ChatFormatError(f"{prefix}message {k} ({m['role']}): content is a "
                                      f"{type(m['content']).__name__}, expected a string")
            if m["role"] == "system" and k > 1:
                raise ChatFormatError(f"{prefix}message {k} is a system message; only the first message may be one")
            try:
                check_text(m["content"])
            except TokenizerError as e:
                raise ChatFormatError(f"{prefix}message {k} ({m['role']}): {e}") from None
            if found := self._specials.search(m["content"]):
                raise ChatFormatError(f"{prefix}message {k} ({m['role']}) contains the special token "
                                      f"{found.group()!r}; special tokens come only from the chat template, "
                                      "so write it another way")

    def render(self, messages, where=""):
        """(ids, targets_mask): <|role|> content <|end|> for each message; the mask is True on the
        content and <|end|> of assistant messages. Both lists have the same length."""
        self.check(messages, where)
        ids, mask = [], []
        for k, m in enumerate(messages, 1):
            try:
                content = self.tokenizer.encode(m["content"])
            except TokenizerError as e:
                raise ChatFormatError(f"{_prefix(where)}message {k} ({m['role']}): {e}") from None
            ids += [self.role_ids[m["role"]], *content, self.end_id]
            mask += [False] + [m["role"] == "assistant"] * (len(content) + 1)
        return ids, mask

    def prompt_ids(self, messages, where=""):
        """The ids of `messages` followed by <|assistant|>: what a model continues to reply."""
        return self.render(messages, where)[0] + [self.role_ids["assistant"]]

    def decode_reply(self, ids):
        """The text of generated `ids` up to (not including) the first <|end|>."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return self.tokenizer.decode(ids[:ids.index(self.end_id)] if self.end_id in ids else ids)


def _prefix(where):
    """"where: " to start an error message with, or "" when there is no place to name."""
    return f"{where}: " if where else ""
