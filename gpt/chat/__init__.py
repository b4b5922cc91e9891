"""Chat: the conversation format (template.py) and packed conversation data (dataset.py).

    tok = add_chat_tokens(tokenizer); template = ChatTemplate(tok)
    ids, targets_mask = template.render(messages)      # [{"role": "user", "content": ...}, ...]
    data = ChatDataset("chats.jsonl", tok)              # x, y, segments = data.get_batch(...)
"""
from .dataset import ChatDataset
from .template import (CHAT_TOKENS, END, ROLES, ChatFormatError, ChatTemplate, add_chat_tokens,
                       has_chat_template)

__all__ = ["CHAT_TOKENS", "END", "ROLES", "ChatDataset", "ChatFormatError", "ChatTemplate", "add_chat_tokens",
           "has_chat_template"]
