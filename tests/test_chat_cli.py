"""chat.py end to end on a tiny chat model: the scripted modes against the library's replies, an
interactive chat driven through stdin, trimming, Ctrl-C, a GPT-2 directory with the chat
tokens, and bad input in one line, exit 2.

The model (tests/gpt/tiny_chat.py) is trained in about a second and saved as a checkpoint. What
the user sees (stdout, one line on stderr, the exit code) is the thing under test: most cases
run chat.py's main in this process through run_main, with stdin replaced; the interactive
chat, Ctrl-C and one exit code run it as a subprocess.
"""
import io
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

import nanograd as ng
from gpt import hf
from gpt.chat import ChatTemplate, add_chat_tokens
from gpt.chat.reply import generate_replies, generate_reply
from gpt.checkpoint import save_checkpoint
from gpt.cli import run_main
from gpt.model import GPT, GPTConfig
from gpt.tokenizer import BPETokenizer, CharTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "gpt"))
import chat as chat_script  # noqa: E402
from tiny_chat import ALPHABET, CONVERSATIONS, chat_model  # noqa: E402

GREEDY = ["--temperature=0", "--max_new_tokens=30"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(model, template, run folder) of the tiny chat model, saved as a checkpoint."""
    model, template = chat_model()
    folder = tmp_path_factory.mktemp("chat-run")
    save_checkpoint(str(folder / "ckpt.safetensors"), model, template.tokenizer)
    return model, template, str(folder)


def chat(*args, stdin=None):
    """chat.py in a subprocess: what a user sees, real signals and exit codes."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "chat.py"), *args], input=stdin, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


@pytest.fixture
def chat_here(capsys, monkeypatch):
    """chat.py's main in this process through run_main, as `chat` returns it (a CompletedProcess), in a
    fraction of the time."""
    def run(*args, stdin=""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            run_main(chat_script.main, list(args))
            code = 0
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)
    return run


def one_line_error(result, *mentions):
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for text in mentions:
        assert text in result.stderr, result.stderr


def test_prompt_prints_the_reply_alone(run, chat_here):
    model, template, folder = run
    for messages in CONVERSATIONS:
        system = [f"--system={messages[0]['content']}"] if messages[0]["role"] == "system" else []
        result = chat_here(f"--out_dir={folder}", *GREEDY, *system, f"--prompt={messages[-2]['content']}")
        assert result.returncode == 0, result.stderr
        text, _ = generate_reply(model, template, messages[:-1], max_new_tokens=30)
        assert result.stdout == text + "\n" == messages[-1]["content"] + "\n"


def test_prompts_file_writes_the_one_by_one_replies_in_order(run, tmp_path, chat_here):
    model, template, folder = run
    long = CONVERSATIONS[0] + CONVERSATIONS[1] + CONVERSATIONS[0][:1]  # 52 tokens: with 30 more, over 64
    conversations = [c[:-1] for c in CONVERSATIONS] + [CONVERSATIONS[0] + [{"role": "user", "content": "hi"}], long]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations), encoding="utf-8")
    result = chat_here(f"--out_dir={folder}", *GREEDY, f"--prompts_file={path}", "--batch_size=2")
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"{path}, line 5: dropped the 2 oldest messages to fit the context of 64 tokens\n"
    conversations[-1] = long[2:]
    alone = [generate_reply(model, template, c, max_new_tokens=30)[0] for c in conversations]
    assert [json.loads(line) for line in result.stdout.splitlines()] == [{"reply": text} for text in alone]
    assert [text for text, _ in generate_replies(model, template, conversations, 30, batch_size=2)] == alone


def test_an_interactive_chat_answers_resets_and_sets_the_temperature(run):
    _, _, folder = run
    result = chat(f"--out_dir={folder}", *GREEDY, stdin="hello\n/reset\n/temp 0.5\nhi\n/help\n/nope\n/quit\nhello\n")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    out = result.stdout
    assert out.startswith(f"chatting with {folder} (context 64 tokens)")
    assert "Good morrow." in out and "(conversation forgotten)" in out and "(temperature 0.5)" in out
    assert "/reset" in out.split("(temperature 0.5)")[1] and "(unknown command /nope" in out
    assert out.count("Good morrow.") == 1  # nothing after /quit is read


def test_ctrl_d_and_ctrl_c_end_the_chat_cleanly(run):
    _, _, folder = run
    ctrl_d = chat(f"--out_dir={folder}", *GREEDY, stdin="hello\n")
    assert ctrl_d.returncode == 0 and ctrl_d.stderr == "" and "Good morrow." in ctrl_d.stdout
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "chat.py"), f"--out_dir={folder}"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("chatting with")  # waiting for the first line now
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0 and stderr == "", stderr


def test_a_long_conversation_drops_its_oldest_messages_with_one_line(run, chat_here):
    _, _, folder = run
    result = chat_here(f"--out_dir={folder}", *GREEDY, "--max_new_tokens=20", stdin="hello\nhi\nhello\nhi\n")
    assert result.returncode == 0, result.stderr
    dropped = re.findall(r"^(?:> )?\(dropped the (\d+) oldest messages to fit the context of 64 tokens\)$",
                         result.stdout, re.MULTILINE)
    assert dropped and all(int(n) % 2 == 0 for n in dropped), result.stdout  # whole exchanges


def test_a_message_too_long_or_with_unknown_characters_is_refused_and_the_chat_goes_on(run, chat_here):
    _, _, folder = run
    result = chat_here(f"--out_dir={folder}", *GREEDY, stdin="x" * 60 + "\nhé\nhello\n")
    assert result.returncode == 0, result.stderr
    refused = [line for line in result.stdout.splitlines() if "(not sent: " in line]
    assert len(refused) == 2 and "block_size=64" in refused[0] and "'é'" in refused[1], result.stdout
    assert "Good morrow." in result.stdout
    one_line_error(chat_here(f"--out_dir={folder}", *GREEDY, "--prompt=" + "x" * 60), "block_size=64")


def spelling_model(template, prompt_length, reply):
    """A GPT whose greedy reply after any prompt of prompt_length tokens is the ids `reply`: its blocks
    add nothing (zero output projections), position p's embedding is the unit vector e_p, and the
    unembedding row of each token sums the e_p of the positions that predict it."""
    model = GPT(GPTConfig(block_size=32, vocab_size=template.tokenizer.vocab_size, n_layer=1, n_head=1, n_embd=32,
                          tie_embeddings=False))
    state = {name: np.zeros_like(value) if name.endswith(("wte.weight", "c_proj.weight", "unembed.weight"))
             else value for name, value in model.state_dict().items()}
    state["transformer.wpe.weight"] = np.eye(32, dtype=np.float32)
    for k, token in enumerate(reply):
        state["unembed.weight"][token, prompt_length - 1 + k] = 1
    model.load_state_dict(state)
    return model.eval()


def test_a_reply_that_spells_a_special_token_joins_the_conversation_without_it(tmp_path, chat_here):
    template = ChatTemplate(add_chat_tokens(CharTokenizer.train("<|end>hi ")))
    spelled = template.tokenizer.encode("<|end|>", disallowed_special=())  # ordinary tokens: < | e n d | >
    model = spelling_model(template, len(template.prompt_ids([{"role": "user", "content": "hi"}])),
                           spelled + template.tokenizer.encode("hi") + [template.end_id])
    save_checkpoint(str(tmp_path / "ckpt.safetensors"), model, template.tokenizer)
    result = chat_here(f"--out_dir={tmp_path}", "--temperature=0", "--max_new_tokens=10", stdin="hi\nhi\n")
    assert result.returncode == 0, result.stderr
    assert "> <|end|>hi\n(the reply spells a special token's text; the conversation keeps it without that " \
           "text)\n" in result.stdout and "not sent" not in result.stdout, result.stdout
    assert result.stdout.count("> ") == 3  # both messages answered, then Ctrl-D


def test_a_hugging_face_directory_with_the_chat_tokens_chats(tmp_path, chat_here):
    template = ChatTemplate(add_chat_tokens(BPETokenizer.train(ALPHABET * 4, vocab_size=280)))
    ng.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=template.tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16))
    hf.save(model, template.tokenizer, str(tmp_path / "gpt2-chat"))
    result = chat_here(f"--init_from={tmp_path / 'gpt2-chat'}", "--temperature=0", "--max_new_tokens=10", "--prompt=hi")
    assert result.returncode == 0, result.stderr
    loaded, tokenizer = hf.load_pretrained(str(tmp_path / "gpt2-chat"))
    text, _ = generate_reply(loaded, ChatTemplate(tokenizer), [{"role": "user", "content": "hi"}], max_new_tokens=10)
    assert result.stdout == text + "\n"


def test_a_run_without_a_chat_template_is_one_line(tmp_path):
    tokenizer = CharTokenizer.train(ALPHABET)
    save_checkpoint(str(tmp_path / "ckpt.safetensors"),
                    GPT(GPTConfig(block_size=16, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=1, n_embd=8)),
                    tokenizer)
    one_line_error(chat(f"--out_dir={tmp_path}", "--prompt=hello"), f"{tmp_path} has no chat template",
                   "--chat_file")


@pytest.mark.parametrize("line, mentions", [
    ("{not json", "line 2: not JSON"),
    ('{"prompt": "hello"}', "line 2: expected an object"),
    ('{"messages": [{"role": "king", "content": "hello"}]}', "line 2: message 1 has role 'king'"),
])
def test_a_malformed_prompts_line_is_one_line_naming_it(run, tmp_path, line, mentions, chat_here):
    _, _, folder = run
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"messages": CONVERSATIONS[0][:1]}) + "\n" + line + "\n", encoding="utf-8")
    result = chat_here(f"--out_dir={folder}", f"--prompts_file={path}")
    one_line_error(result, f"{path}, {mentions}")
    assert result.stdout == ""  # every line is checked before any is answered


def test_bad_options_are_one_line(run, chat_here):
    _, _, folder = run
    one_line_error(chat_here("--out_dir=no-such-run", "--prompt=hi"), "no checkpoint")
    one_line_error(chat_here(f"--out_dir={folder}", "--prompt=hi <|end|>"), "special token")


def test_the_default_reply_length_fits_any_model(run, chat_here):
    """With no --max_new_tokens a reply may take half the context, so a short message always fits."""
    model, template, folder = run
    result = chat_here(f"--out_dir={folder}", "--temperature=0", "--prompt=hello")
    half = model.config.block_size // 2
    assert result.returncode == 0, result.stderr
    assert result.stdout == generate_reply(model, template, [{"role": "user", "content": "hello"}], half)[0] + "\n"
