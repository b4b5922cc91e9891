"""The chat server under load: continuous batching against a queue, at our model sizes, and its limits.

    python benchmarks/web_batching.py                          # both sizes, both modes (a few minutes)
    python benchmarks/web_batching.py --sizes chat --new 64

For each model size a randomly initialised model (speed does not depend on the weights) is
saved with a character tokenizer that has no end token, so every reply runs to --new tokens.
`python chat_web.py` serves it on a free port of 127.0.0.1, once with --max_batch=1 (one reply
at a time behind a queue) and once with --max_batch=8 (continuous batching), and a client in
this process measures:

    ttft_ms           median time from sending a request with a 50-token prompt to reading
                      its first token event (--rounds requests, one at a time)
    one_tok_s         tokens per second of one reply: --new / (request sent to done event)
    chat_py_tok_s     the same reply decoded as chat.py decodes it (model.generate with a KV
                      cache, in this process while the server idles): --new / its wall time
    c4_tok_s, c8_tok_s  all tokens / wall time of 4 and 8 replies requested at once
    one_cpu_ms, c4_cpu_ms  the server's CPU time (all threads) per token, one reply and 4 at once:
                      what a machine with other work on it cannot distort much
    chat_py_cpu_ms    chat.py's decoding's CPU time per token (this process)
    equal_alone       each of the 8 concurrent greedy replies equals the one it got alone
    bad_4xx           how many of 200 malformed or oversized requests got a 4xx JSON error
    health_after      /api/health still answers 200 after them
    rss_mb            the server's resident memory (VmRSS) before them, after them, and after 200 more
    paths_refused     every path outside the page (/../, encoded forms) got 404

Both servers run side by side, and each round times queue, batching and chat.py's decoding in
turn, so a change in the machine's load hits them alike; the numbers are medians of --rounds
rounds (c8_tok_s is one run). All traffic stays on 127.0.0.1 and every loop is bounded.
Sizes: "chat" is chat_pipeline.py's model (4 layers, 4 heads, 128 wide, context 256); "play" is
configs/shakespeare_char.toml's (6 layers, 6 heads, 384 wide, context 256).

Left out: clients on other machines, HTTP keep-alive, prompts longer than 50 tokens.
"""
import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import nanograd as ng  # noqa: E402
from gpt.checkpoint import save_checkpoint  # noqa: E402
from gpt.model import GPT, GPTConfig  # noqa: E402
from gpt.tokenizer import CharTokenizer  # noqa: E402

SIZES = {"chat": dict(n_layer=4, n_head=4, n_embd=128), "play": dict(n_layer=6, n_head=6, n_embd=384)}
TEXT = "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer"
PROMPT = TEXT[:50]  # 50 characters: 50 tokens of the character tokenizer
TIMEOUT = 120  # seconds any one request may take
BAD_PATHS = ["/../setup.cfg", "/%2e%2e/setup.cfg", "/%2E%2E%2Fsetup.cfg", "/..%2f..%2fetc%2fpasswd",
             "/static/../../setup.cfg", "//etc/passwd", "/index.html/../../README.md", "/.%2e/.%2e/setup.cfg"]


def bad_requests(limit):
    """[(method, path, body bytes)]: one of each kind of request the server must refuse."""
    def chat(**fields):
        return ("POST", "/api/chat", json.dumps({"messages": [{"role": "user", "content": "hi"}], **fields}).encode())
    return [("POST", "/api/chat", b"{not json"), ("POST", "/api/chat", b"[]"),
            ("POST", "/api/chat", b'{"messages": []}'),
            ("POST", "/api/chat", b'{"messages": [{"role": "wizard", "content": "hi"}]}'),
            ("POST", "/api/chat", b'{"messages": [{"role": "user", "content": 7}]}'),
            chat(temperature="hot"), chat(top_p=3), chat(max_new_tokens=limit + 1), chat(seed=-1),
            ("POST", "/api/chat", json.dumps({"messages": [{"role": "user", "content": "a" * 300}]}).encode()),
            ("POST", "/api/inspect", json.dumps({"messages": [{"role": "user", "content": "a" * 300}]}).encode()),
            ("POST", "/api/chat", b"x" * (2 << 20)),  # 2 MiB, over the 1 MiB limit
            ("GET", "/api/nothing", None), ("PUT", "/api/chat", b"{}"), ("GET", BAD_PATHS[0], None)]


class Server:
    """`python chat_web.py` in a subprocess on a free loopback port."""

    def __init__(self, out_dir, max_batch, limit):
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "chat_web.py"), f"--out_dir={out_dir}",
                                      "--port=0", "--quiet=true", f"--max_batch={max_batch}",
                                      f"--max_new_tokens={limit}"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline()  # "serving ... at http://127.0.0.1:PORT"
        if "http://" not in line:
            self.proc.kill()
            raise RuntimeError(f"chat_web.py did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])

    def request(self, method, path, body=None):
        """(status, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            return response.status, response.read()
        except (ConnectionError, http.client.HTTPException) as e:
            return None, str(e).encode()
        finally:
            conn.close()

    def reply(self, text, new):
        """(seconds to the first token event, seconds to the done event, reply text) of one greedy reply."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        start = time.perf_counter()
        conn.request("POST", "/api/chat", json.dumps({"messages": [{"role": "user", "content": text}],
                                                      "temperature": 0, "max_new_tokens": new}))
        response = conn.getresponse()
        first, pieces = None, []
        for line in response:
            if not line.startswith(b"data: "):
                continue
            event = json.loads(line[6:])
            if "token" in event:
                first = first or time.perf_counter() - start
                pieces.append(event["token"])
            else:
                done = time.perf_counter() - start
                break
        conn.close()
        return first, done, "".join(pieces)

    def cpu_s(self):
        """CPU seconds the server process has used (user + system, all its threads)."""
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def together(server, texts, new):
    """(wall seconds, replies) of len(texts) replies requested at once, one thread each."""
    out = [None] * len(texts)
    def one(i):
        out[i] = server.reply(texts[i], new)[2]
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    return time.perf_counter() - start, out


def chat_py_speed(model, tokenizer, new):
    """(tokens per second, CPU ms per token) of model.generate on PROMPT, greedy with a KV cache
    (chat.py's decoding)."""
    start, cpu = time.perf_counter(), time.process_time()
    model.generate(np.array([tokenizer.encode(PROMPT)]), new, temperature=0)
    return new / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / new


def timings(servers, model, tokenizer, args):
    """{max_batch: {"ttft_ms", "one_tok_s", "chat_py_tok_s", "c4_tok_s"}}, medians of rounds in which the
    servers and chat.py's decoding take turns, so that a change in the machine's load hits them alike."""
    texts = [TEXT[k:k + 50] for k in range(4)]
    runs = {b: {k: [] for k in ("ttft_ms", "one_tok_s", "chat_py_tok_s", "c4_tok_s", "one_cpu_ms", "c4_cpu_ms",
                                "chat_py_cpu_ms")} for b in servers}
    for server in servers.values():
        server.reply(PROMPT, 4)  # warm up
    for _ in range(args.rounds):
        for max_batch, server in servers.items():
            run = runs[max_batch]
            run["ttft_ms"].append(1000 * server.reply(PROMPT, 1)[0])
            cpu = server.cpu_s()
            run["one_tok_s"].append(args.new / server.reply(PROMPT, args.new)[1])
            run["one_cpu_ms"].append(1000 * (server.cpu_s() - cpu) / args.new)
            speed, cpu_ms = chat_py_speed(model, tokenizer, args.new)
            run["chat_py_tok_s"].append(speed)
            run["chat_py_cpu_ms"].append(cpu_ms)
            cpu = server.cpu_s()
            run["c4_tok_s"].append(4 * args.new / together(server, texts, args.new)[0])
            run["c4_cpu_ms"].append(1000 * (server.cpu_s() - cpu) / (4 * args.new))
    return {b: {k: round(statistics.median(v), 1) for k, v in run.items()} for b, run in runs.items()}


def limits(server, args):
    """8 replies at once against alone, 200 bad requests (twice, RSS after each), the paths refused."""
    texts = [TEXT[k:k + 50] for k in range(8)]
    wall8, replies8 = together(server, texts, args.new)
    alone = [server.reply(text, args.new)[2] for text in texts]
    bad = bad_requests(args.limit)
    rss = [server.rss_mb()]
    statuses = []
    for _ in range(2):
        statuses += [server.request(*bad[k % len(bad)])[0] for k in range(200)]
        rss.append(server.rss_mb())
    paths = [server.request("GET", path)[0] for path in BAD_PATHS]
    return {"c8_tok_s": round(8 * args.new / wall8, 1), "equal_alone": sum(a == b for a, b in zip(replies8, alone)),
            "bad_4xx": sum(s is not None and 400 <= s < 500 for s in statuses[:200]),
            "health_after": server.request("GET", "/api/health")[0], "rss_mb": [round(r, 1) for r in rss],
            "paths_refused": sum(s == 404 for s in paths) == len(paths)}


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # `kill` unwinds too, stopping the servers
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--new", type=int, default=100, help="tokens per reply")
    ap.add_argument("--rounds", type=int, default=5, help="repeats of each timing (median)")
    ap.add_argument("--limit", type=int, default=200, help="the server's --max_new_tokens")
    args = ap.parse_args()
    tokenizer = CharTokenizer.train(TEXT + "abcdefghijklmnopqrstuvwxyz")
    rows = []
    for size in args.sizes:
        ng.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=256, **SIZES[size])).eval()
        with tempfile.TemporaryDirectory() as out_dir:
            save_checkpoint(os.path.join(out_dir, "ckpt.safetensors"), model, tokenizer)
            servers = {max_batch: Server(out_dir, max_batch, args.limit) for max_batch in (1, 8)}
            try:
                timed = timings(servers, model, tokenizer, args)
                for max_batch, server in servers.items():
                    row = {"size": size, "max_batch": max_batch, **timed[max_batch], **limits(server, args)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
            finally:
                for server in servers.values():
                    server.close()
    print("\n| size | max_batch | TTFT ms | 1 client tok/s | chat.py tok/s | 4 clients tok/s | 8 clients tok/s "
          "| CPU ms/token: 1 client, 4, chat.py | 8 equal alone | 4xx of 200 | RSS MB: before, after 200, after 400 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['max_batch']} | {r['ttft_ms']} | {r['one_tok_s']} | {r['chat_py_tok_s']} | "
              f"{r['c4_tok_s']} | {r['c8_tok_s']} | {r['one_cpu_ms']}, {r['c4_cpu_ms']}, {r['chat_py_cpu_ms']} | "
              f"{r['equal_alone']}/8 | {r['bad_4xx']} | "
              f"{', '.join(map(str, r['rss_mb']))} |")


if __name__ == "__main__":
    main()
