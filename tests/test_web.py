"""The web server's API on loopback: replies equal the library's and chat.py's, concurrent replies
equal lone ones, stop and disconnect end a reply, the look inside equals run_with_cache and the
logit lens, and every bad request gets a 4xx one-line JSON error while the server goes on.

Each server runs in this process on a free port of 127.0.0.1 (port 0), with the tiny chat model
of tests/gpt/tiny_chat.py (trained in about a second) or an untrained plain-text model.
Requests go through http.client with timeouts; every loop here is bounded.
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import nanograd as ng
from gpt.chat.reply import generate_reply
from gpt.checkpoint import save_checkpoint
from gpt.interp import logit_lens
from gpt.model import GPT, GPTConfig
from gpt.tokenizer import CharTokenizer
from gpt.tokenizer.symbols import SymbolTokenizer
from gpt.web.engine import Engine, Job
from gpt.web.served import ServedModel
from gpt.web.server import MAX_BODY, make_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "gpt"))
from tiny_chat import ALPHABET, CONVERSATIONS, chat_model  # noqa: E402

TIMEOUT = 30  # seconds any one request may take


def serve(model, tokenizer, **options):
    """A running WebServer on a free loopback port (its thread is a daemon)."""
    server = make_server(ServedModel(model, tokenizer, "test", {"previous_token": [[0, 1]], "induction": [[1, 0]]}),
                         "127.0.0.1", 0, quiet=True, **options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def chat_server():
    model, template = chat_model()
    server = serve(model, template.tokenizer, max_new_tokens=40)
    yield server
    server.shutdown()
    server.server_close()


def plain_model():
    """(model, tokenizer): an untrained model over a character vocabulary with no end token."""
    tokenizer = CharTokenizer.train(ALPHABET)
    ng.manual_seed(0)
    return GPT(GPTConfig(block_size=256, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32)).eval(), \
        tokenizer


@pytest.fixture(scope="module")
def plain_server():
    server = serve(*plain_model(), max_new_tokens=240)
    yield server
    server.shutdown()
    server.server_close()


def request(server, method, path, body=None, raw=None, headers=None):
    """(status, headers, body bytes) of one request."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=TIMEOUT)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=data, headers=headers or {})
    response = conn.getresponse()
    out = response.status, dict(response.getheaders()), response.read()
    conn.close()
    return out


def events(payload):
    """The JSON objects of a text/event-stream body."""
    return [json.loads(block[len("data: "):]) for block in payload.decode().split("\n\n") if block]


def reply(server, messages, **sampling):
    """(text, reason, number of token events) of one /api/chat request."""
    status, headers, payload = request(server, "POST", "/api/chat", {"messages": messages, **sampling})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream"), payload
    evs = events(payload)
    assert evs[-1]["done"] is True and all("token" in e for e in evs[:-1])
    return "".join(e["token"] for e in evs[:-1]), evs[-1]["reason"], len(evs) - 1


def test_health_names_the_model(chat_server):
    status, _, body = request(chat_server, "GET", "/api/health")
    health = json.loads(body)
    assert status == 200 and health["model"] == "test" and health["chat"] is True
    assert health["n_params"] == chat_server.served.model.num_params() and health["block_size"] == 64
    assert health["heads"] == {"previous_token": [[0, 1]], "induction": [[1, 0]]}


def test_page_is_one_file_with_nothing_from_outside(chat_server):
    status, headers, body = request(chat_server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"<script src" not in body and b"<link rel=\"stylesheet\"" not in body and b"http://" not in body
    assert b"https://" not in body


@pytest.mark.parametrize("messages", [CONVERSATIONS[0][:1], CONVERSATIONS[2][:2], CONVERSATIONS[1] +
                                      [{"role": "user", "content": "hello"}]])
def test_greedy_reply_equals_generate_reply(chat_server, messages):
    served = chat_server.served
    text, reason, n = reply(chat_server, messages, temperature=0, max_new_tokens=30)
    assert (text, reason) == generate_reply(served.model, served.template, messages, 30)
    assert n == len(served.tokenizer.encode(text)) + (reason == "end")  # one event per token, <|end|> included


def test_seeded_sampling_equals_generate_reply(chat_server):
    served, messages = chat_server.served, CONVERSATIONS[0][:1]
    options = dict(temperature=1.3, top_k=20, top_p=0.95, seed=5)
    assert reply(chat_server, messages, max_new_tokens=30, **options)[:2] == \
        generate_reply(served.model, served.template, messages, 30, **options)


def test_reply_equals_chat_py_prompt(chat_server, tmp_path):
    served = chat_server.served
    save_checkpoint(str(tmp_path / "ckpt.safetensors"), served.model, served.tokenizer)
    out = subprocess.run([sys.executable, os.path.join(ROOT, "chat.py"), f"--out_dir={tmp_path}", "--prompt=hi",
                          "--temperature=0", "--max_new_tokens=30"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert reply(chat_server, [{"role": "user", "content": "hi"}], temperature=0, max_new_tokens=30)[0] == \
        out.stdout.rstrip("\n")


def test_concurrent_replies_equal_lone_ones(chat_server):
    prompts = [[{"role": "user", "content": text}] for text in ("hello", "hi", "who art thou", "hello there",
                                                               "Hi", "who", "art thou", "hello hello")]
    alone = [reply(chat_server, m, temperature=0, max_new_tokens=30) for m in prompts]
    together = [None] * len(prompts)
    def one(i):
        together[i] = reply(chat_server, prompts[i], temperature=0, max_new_tokens=30)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert together == alone


def test_engine_batch_equals_generate_for_every_batch_size():
    model, tokenizer = plain_model()
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, tokenizer.vocab_size, n) for n in (5, 17, 9, 30, 3, 12)]
    options = dict(temperature=0.9, top_k=20, seed=7)
    expected = [model.generate(p[None], 20, **options)[0, len(p):].tolist() for p in prompts]
    for max_batch in (1, 4):
        engine = Engine(model, max_batch)
        jobs = [engine.submit(Job(p, 20, **options)) for p in prompts]
        got = [[value for kind, value in iter(lambda j=job: j.events.get(timeout=TIMEOUT), ("done", "length"))
                if kind == "token"] for job in jobs]
        engine.close()
        assert got == expected


def test_plain_model_continues_the_last_user_message(plain_server):
    served = plain_server.served
    messages = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "x"},
                {"role": "user", "content": "To be or not"}]
    text, reason, _ = reply(plain_server, messages, temperature=0, max_new_tokens=12)
    ids = served.tokenizer.encode("To be or not")
    expected = served.model.generate(np.array([ids]), 12, temperature=0)[0, len(ids):].tolist()
    assert (text, reason) == (served.tokenizer.decode(expected), "length")
    assert json.loads(request(plain_server, "GET", "/api/health")[2])["chat"] is False


def test_a_model_of_the_synthetic_tasks_is_served_as_plain_text():
    tokenizer = SymbolTokenizer([str(i) for i in range(20)])
    ng.manual_seed(0)
    served = ServedModel(GPT(GPTConfig(block_size=16, vocab_size=20, n_layer=1, n_head=2, n_embd=8)).eval(),
                         tokenizer, "symbols", {})
    assert not served.chat and served.prompt([{"role": "user", "content": "3 4 5"}], 4) == [3, 4, 5]
    assert served.inspect([{"role": "user", "content": "3 4"}, {"role": "assistant", "content": " 5"}])["ids"] == \
        [3, 4, 5]


def test_stop_ends_a_reply_with_stopped(plain_server):
    conn = http.client.HTTPConnection(*plain_server.server_address[:2], timeout=TIMEOUT)
    conn.request("POST", "/api/chat", json.dumps({"messages": [{"role": "user", "content": "Go"}],
                                                  "max_new_tokens": 240}))
    response = conn.getresponse()
    assert response.readline().startswith(b"data: {\"token\"")
    status, _, body = request(plain_server, "POST", "/api/stop", {"id": response.getheader("X-Reply-Id")})
    assert status == 200 and json.loads(body) == {"stopped": True}
    rest = events(response.read())
    conn.close()
    assert rest[-1] == {"done": True, "reason": "stopped"} and len(rest) < 240
    assert json.loads(request(plain_server, "POST", "/api/stop", {"id": "no-such-reply"})[2]) == {"stopped": False}


def test_a_client_that_disconnects_stops_its_reply_within_a_token(plain_server):
    jobs = []
    submit = plain_server.engine.submit
    plain_server.engine.submit = lambda job: jobs.append(job) or submit(job)
    try:
        sock = socket.create_connection(plain_server.server_address[:2], timeout=TIMEOUT)
        body = json.dumps({"messages": [{"role": "user", "content": "Go"}], "max_new_tokens": 240}).encode()
        sock.sendall(b"POST /api/chat HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        received = b""
        while b"data: " not in received:  # the headers come first, then the first token's event
            received += sock.recv(4096)
        at_close = jobs[0].n_new
        sock.close()
        for _ in range(200):  # bounded: 10 s
            if plain_server.engine.busy() == (0, 0):
                break
            time.sleep(0.05)
    finally:
        plain_server.engine.submit = submit
    assert plain_server.engine.busy() == (0, 0)
    # the decoding thread looks at the client before each step: the step under way may add one token
    assert jobs[0].n_new <= at_close + 2 < 240


def test_inspect_equals_run_with_cache_and_the_logit_lens(chat_server):
    served = chat_server.served
    messages = CONVERSATIONS[2]
    status, _, body = request(chat_server, "POST", "/api/inspect", {"messages": messages})
    got = json.loads(body)
    ids = served.template.render(messages)[0]
    assert status == 200 and got["ids"] == ids
    assert "".join(got["tokens"]) == served.tokenizer.decode(ids)
    _, cache = served.model.run_with_cache(np.array([ids]))
    for layer in range(served.model.config.n_layer):
        np.testing.assert_allclose(got["attention"][layer], cache[f"blocks.{layer}.attn.pattern"][0], atol=1e-5)
    for s, (name, top, probs) in enumerate(logit_lens(served.model, ids, k=5)):
        assert got["lens"]["stages"][s] == name and got["lens"]["top_ids"][s] == top.tolist()
        np.testing.assert_allclose(got["lens"]["top_probs"][s], probs, atol=1e-5)


BAD = [
    ("POST", "/api/chat", b"{not json", 400),
    ("POST", "/api/chat", b"[1, 2]", 400),
    ("POST", "/api/chat", b"{}", 400),
    ("POST", "/api/chat", b'{"messages": []}', 400),
    ("POST", "/api/chat", b'{"messages": "hello"}', 400),
    ("POST", "/api/chat", b'{"messages": [{"role": "wizard", "content": "hi"}]}', 400),
    ("POST", "/api/chat", b'{"messages": [{"role": "user", "content": 5}]}', 400),
    ("POST", "/api/chat", b'{"messages": [{"role": "user", "content": "<|end|>"}]}', 400),
    ("POST", "/api/chat", b'{"messages": [{"role": "user", "content": "\xc3\x28"}]}', 400),
    ("POST", "/api/chat", b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', 400),
    ("POST", "/api/chat", b'{"messages": [{"role": "user", "content": "hi"}], "temperature": -1}', 400),
    ("POST", "/api/chat", b'{"messages": [{"role": "user", "content": "hi"}], "top_k": 1.5}', 400),
    ("POST", "/api/chat", b'{"messages": [{"role": "user", "content": "hi"}], "top_p": 2}', 400),
    ("POST", "/api/chat", b'{"messages": [{"role": "user", "content": "hi"}], "seed": true}', 400),
    ("POST", "/api/chat", b'{"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 0}', 400),
    ("POST", "/api/chat", b'{"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 41}', 400),
    ("POST", "/api/chat", b'{"messages": [{"role": "user", "content": "hi"}], "colour": 1}', 400),
    ("POST", "/api/chat", json.dumps({"messages": [{"role": "user", "content": "a" * 100}]}).encode(), 400),
    ("POST", "/api/chat", b"x" * (MAX_BODY + 1), 413),
    ("POST", "/api/inspect", json.dumps({"messages": [{"role": "user", "content": "a" * 100}]}).encode(), 400),
    ("POST", "/api/inspect", b'{"messages": [{"role": "user"}]}', 400),
    ("POST", "/api/stop", b"{}", 400),
    ("GET", "/api/nothing", None, 404),
    ("GET", "/api/chat", None, 404),
    ("POST", "/", b"{}", 404),
    ("PUT", "/api/chat", b"{}", 405),
    ("DELETE", "/", None, 405),
]


@pytest.mark.parametrize("method, path, raw, status", BAD,
                         ids=[f"{k}-{method}-{path}-{status}" for k, (method, path, _, status) in enumerate(BAD)])
def test_bad_requests_get_a_4xx_one_line_json_error(chat_server, method, path, raw, status):
    got, headers, body = request(chat_server, method, path, raw=raw)
    assert got == status and headers["Content-Type"] == "application/json"
    error = json.loads(body)["error"]
    assert error and "\n" not in error
    assert request(chat_server, "GET", "/api/health")[0] == 200


def test_a_body_without_content_length_is_refused(chat_server):
    sock = socket.create_connection(chat_server.server_address[:2], timeout=TIMEOUT)
    sock.sendall(b"POST /api/chat HTTP/1.0\r\n\r\n{}")
    answer = b"".join(iter(lambda: sock.recv(4096), b""))
    sock.close()
    assert answer.startswith(b"HTTP/1.0 411") and b'{"error": ' in answer


@pytest.mark.parametrize("path", ["/../setup.cfg", "/%2e%2e/setup.cfg", "/%2E%2E%2Fsetup.cfg", "/..%2fsetup.cfg",
                                  "/static/../../setup.cfg", "//etc/passwd", "/index.html/../../setup.cfg",
                                  "/.%2e/.%2e/setup.cfg"])
def test_no_path_reaches_another_file(chat_server, path):
    sock = socket.create_connection(chat_server.server_address[:2], timeout=TIMEOUT)
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.0\r\n\r\n")
    answer = b"".join(iter(lambda: sock.recv(4096), b""))
    sock.close()
    assert answer.startswith(b"HTTP/1.0 404") and b"[metadata]" not in answer and b"root:" not in answer


def test_chat_web_refuses_bad_options_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "chat_web.py"), f"--out_dir={tmp_path}"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and out.stderr.count("\n") == 1


def test_a_reply_that_spells_a_special_token_keeps_the_conversation_servable(chat_server):
    """The page sends the model's earlier replies back: one holding the text of a special token (a
    model can spell "<|end|>" with ordinary tokens) is served without that text, not refused."""
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Good <|end|>morrow."},
                {"role": "user", "content": "hi"}]
    text, reason, _ = reply(chat_server, messages, temperature=0)
    cleaned = [messages[0], {"role": "assistant", "content": "Good morrow."}, messages[2]]
    assert (text, reason) == reply(chat_server, cleaned, temperature=0)[:2]
    status, _, payload = request(chat_server, "POST", "/api/inspect", {"messages": messages})
    assert status == 200
    assert "".join(json.loads(payload)["tokens"]) == "<|user|>hello<|end|><|assistant|>Good morrow.<|end|><|user|>hi<|end|>"


def test_reply_text_leaves_out_special_tokens_the_model_emits_mid_reply():
    from gpt.web.served import ReplyText
    _, template = chat_model(steps=0)
    text = ReplyText(template.tokenizer, template.end_id)
    user, (a, b) = template.tokenizer.special_tokens["<|user|>"], template.tokenizer.encode("ab")
    assert [text.push(t) for t in (a, user, b, template.end_id)] + [text.flush()] == ["a", "", "b", "", ""]
