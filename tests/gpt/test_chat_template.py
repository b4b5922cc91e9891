"""The chat format: chat special tokens in both tokenizers (save/load, checkpoints, HF export),
the rendered layout and its target mask, message validation, and the Jinja template checked
against transformers' apply_chat_template.
"""
import json
import shutil
import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gpt import hf
from gpt.chat import CHAT_TOKENS, ChatFormatError, ChatTemplate, add_chat_tokens, has_chat_template
from gpt.checkpoint import load_checkpoint, save_checkpoint
from gpt.tokenizer import BPETokenizer, CharTokenizer, SymbolTokenizer, load_tokenizer, load_tokenizer_json
from gpt.tokenizer.base import special_regex

from tiny import tiny_model  # noqa: E402

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak. Who's there?\n" * 20
CHAR = add_chat_tokens(CharTokenizer.train(TEXT))
BPE = add_chat_tokens(BPETokenizer.train(TEXT, 300))
CONVERSATION = [{"role": "system", "content": "Speak."},
                {"role": "user", "content": "Who's there?"},
                {"role": "assistant", "content": "All"},
                {"role": "user", "content": "hear me"},
                {"role": "assistant", "content": "Speak, speak."}]


# ---- special tokens ---------------------------------------------------------------------------
@pytest.mark.parametrize("base", [CharTokenizer.train(TEXT), BPETokenizer.train(TEXT, 300)], ids=["char", "bpe"])
def test_add_chat_tokens_appends_ids_and_is_idempotent(base):
    tok = add_chat_tokens(base)
    assert [tok.special_tokens[t] for t in CHAT_TOKENS] == list(range(base.vocab_size, base.vocab_size + 4))
    assert tok.vocab_size == base.vocab_size + 4 and not has_chat_template(base) and has_chat_template(tok)
    assert tok.encode(TEXT) == base.encode(TEXT)  # the old ids keep their meaning
    assert add_chat_tokens(tok).special_tokens == tok.special_tokens


def test_add_chat_tokens_refuses_a_tokenizer_without_specials():
    with pytest.raises(ChatFormatError, match="cannot add the chat tokens: .*symbol tokenizer has no special"):
        add_chat_tokens(SymbolTokenizer(["a", "b"]))


@pytest.mark.parametrize("tok", [CHAR, BPE], ids=["char", "bpe"])
def test_chat_tokens_survive_save_load_and_checkpoints(tok, tmp_path):
    tok.save(tmp_path / "tok.json")
    assert load_tokenizer(tmp_path / "tok.json").special_tokens == tok.special_tokens
    model = tiny_model(vocab_size=tok.vocab_size)
    save_checkpoint(tmp_path / "ckpt.safetensors", model, tok)
    loaded = load_checkpoint(tmp_path / "ckpt.safetensors").tokenizer
    ids = ChatTemplate(tok).render(CONVERSATION)[0]
    assert loaded.special_tokens == tok.special_tokens and ChatTemplate(loaded).render(CONVERSATION)[0] == ids


def test_a_char_file_written_before_specials_still_loads():
    old = json.dumps({"format": "nanograd-gpt-tokenizer", "version": 1, "type": "char", "chars": "\nab",
                      "special_tokens": {}})
    assert load_tokenizer_json(old).encode("ab\n") == [1, 2, 0]


# ---- rendering --------------------------------------------------------------------------------
@pytest.mark.parametrize("tok", [CHAR, BPE], ids=["char", "bpe"])
def test_render_layout_and_targets(tok):
    template = ChatTemplate(tok)
    ids, mask = template.render(CONVERSATION)
    assert tok.decode(ids) == ("<|system|>Speak.<|end|><|user|>Who's there?<|end|><|assistant|>All<|end|>"
                               "<|user|>hear me<|end|><|assistant|>Speak, speak.<|end|>")
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "All<|end|>Speak, speak.<|end|>"
    prompt = template.prompt_ids(CONVERSATION[:2])
    assert tok.decode(prompt) == "<|system|>Speak.<|end|><|user|>Who's there?<|end|><|assistant|>"
    reply = tok.encode("Speak.<|end|><|user|>A", allowed_special="all")
    assert template.decode_reply(reply) == "Speak." and template.decode_reply(np.array(reply)) == "Speak."


def messages_of(roles_and_texts, system):
    """Messages from (is_assistant, text) turns, after an optional system message."""
    turns = [{"role": "assistant" if a else "user", "content": t} for a, t in roles_and_texts]
    return ([{"role": "system", "content": system}] if system is not None else []) + turns


TEXTS = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
CHAR_TEXTS = st.text(st.sampled_from(CHAR.chars), max_size=12)


@pytest.mark.parametrize("tok, texts", [(CHAR, CHAR_TEXTS), (BPE, TEXTS)], ids=["char", "bpe"])
def test_rendered_ids_decode_to_the_text_and_mask_the_assistant(tok, texts):
    @given(st.lists(st.tuples(st.booleans(), texts), min_size=1, max_size=6), st.none() | texts)
    def check(turns, system):
        messages = messages_of(turns, system)
        assume(not any(special_regex(frozenset(tok.special_tokens)).search(m["content"]) for m in messages))
        ids, mask = ChatTemplate(tok).render(messages)
        text = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
        assert tok.decode(ids) == text and tok.encode(text, allowed_special="all") == ids
        assistant = "".join(f"{m['content']}<|end|>" for m in messages if m["role"] == "assistant")
        assert len(mask) == len(ids) and tok.decode([i for i, m in zip(ids, mask) if m]) == assistant
    check()


# ---- validation -------------------------------------------------------------------------------
USER = {"role": "user", "content": "hear me"}


@pytest.mark.parametrize("messages, message", [
    ({"role": "user"}, "messages must be a non-empty list"),
    ([], "messages must be a non-empty list"),
    ([USER, "hi"], "message 2 is a str, expected an object"),
    ([{"role": "user", "text": "hi"}], r"message 1 has keys \['role', 'text'\]"),
    ([{"role": "bot", "content": "hi"}], "message 1 has role 'bot'; roles are system, user, assistant"),
    ([{"role": "user", "content": 3}], r"message 1 \(user\): content is a int, expected a string"),
    ([USER, {"role": "system", "content": "x"}], "message 2 is a system message; only the first"),
    ([{"role": "system", "content": "x"}] * 2, "message 2 is a system message"),
    ([USER, {"role": "user", "content": "a<|end|>"}], r"message 2 \(user\) contains the special token '<\|end\|>'"),
    ([{"role": "system", "content": "<|user|>"}], r"message 1 \(system\) contains the special token '<\|user\|>'"),
    ([{"role": "user", "content": "\ud800"}], "lone surrogate"),
    ([USER, {"role": "assistant", "content": "é"}], r"message 2 \(assistant\): 1 characters are not in the vocab"),
])
def test_bad_messages_are_one_line_errors_naming_the_problem(messages, message):
    with pytest.raises(ChatFormatError, match=message) as e:
        ChatTemplate(CHAR).render(messages, where="chats.jsonl, line 7")
    assert str(e.value).startswith("chats.jsonl, line 7: ") and "\n" not in str(e.value)


def test_a_tokenizer_without_chat_tokens_is_refused():
    with pytest.raises(ChatFormatError, match="lacks the chat special tokens .*add_chat_tokens"):
        ChatTemplate(CharTokenizer.train(TEXT))


# ---- Hugging Face -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny model with the BPE chat tokenizer, exported as a GPT-2 directory."""
    directory = str(tmp_path_factory.mktemp("hf"))
    hf.save(tiny_model(vocab_size=BPE.vocab_size, block_size=64), BPE, directory)
    return directory


def test_export_writes_the_template_and_import_reads_the_chat_tokens_back(exported):
    with open(f"{exported}/tokenizer_config.json") as f:
        config = json.load(f)
    assert config["chat_template"] == ChatTemplate.jinja
    assert {t["content"] for t in config["added_tokens_decoder"].values()} == set(BPE.special_tokens)
    _, tok = hf.load(exported)
    assert tok.special_tokens == BPE.special_tokens


def test_a_foreign_chat_template_warns_on_import(exported, tmp_path):
    shutil.copytree(exported, tmp_path / "other")
    with open(tmp_path / "other" / "tokenizer_config.json", "r+") as f:
        config = json.load(f) | {"chat_template": "{{ messages }}"}
        f.seek(0), f.truncate(), json.dump(config, f)
    with pytest.warns(UserWarning, match="its chat_template is not this project's"):
        hf.load(str(tmp_path / "other"))


@pytest.mark.parametrize("generation_prompt", [False, True])
def test_transformers_renders_and_tokenizes_as_we_do(exported, generation_prompt):
    transformers, jinja2 = pytest.importorskip("transformers"), pytest.importorskip("jinja2")
    theirs = transformers.AutoTokenizer.from_pretrained(exported)
    template = ChatTemplate(BPE)
    ours = template.prompt_ids(CONVERSATION) if generation_prompt else template.render(CONVERSATION)[0]
    text = theirs.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=generation_prompt)
    assert text == BPE.decode(ours)
    assert theirs(text, add_special_tokens=False)["input_ids"] == ours
    for bad, message in [(CONVERSATION[1:] + CONVERSATION[:1], "only the first message may be a system message"),
                         ([{"role": "tool", "content": "x"}], "unknown role tool"),
                         ([{"role": "user", "content": "a<|assistant|>b"}], "contains the special token")]:
        with pytest.raises(jinja2.TemplateError, match=message):
            theirs.apply_chat_template(bad, tokenize=False)


def test_a_directory_transformers_saved_keeps_the_chat_tokens_and_template(exported, tmp_path):
    transformers = pytest.importorskip("transformers")
    transformers.AutoTokenizer.from_pretrained(exported).save_pretrained(tmp_path)  # tokenizer.json
    for name in ("config.json", "model.safetensors"):
        shutil.copy(f"{exported}/{name}", tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the saved template is ours
        _, tok = hf.load(str(tmp_path))
    assert tok.special_tokens == BPE.special_tokens
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")
    with pytest.warns(UserWarning, match="its chat_template is not this project's"):
        hf.load(str(tmp_path))
