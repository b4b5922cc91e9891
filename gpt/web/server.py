"""The HTTP server of the chat page: the page itself, a streaming chat API, and a look inside the model.

    server = make_server(ServedModel.load("out-chat"), "127.0.0.1", 8000)
    server.serve_forever()

The contract (docs/web.md has it with examples):

    GET  /              the page (static/index.html: one file, no outside resources)
    GET  /api/health    {"model", "n_params", "block_size", "chat", "n_layer", "n_head", "vocab_size",
                         "heads": {"previous_token": [[layer, head], ...], "induction": [...]},
                         "max_new_tokens": the largest a request may ask}
    POST /api/chat      {"messages", "temperature", "top_k", "top_p", "max_new_tokens", "seed"}
                        -> text/event-stream: `data: {"token": text}` per generated token, then
                        `data: {"done": true, "reason": "end" | "length" | "stopped"}`; the
                        header X-Reply-Id names the reply for /api/stop
    POST /api/stop      {"id"} -> {"stopped": bool}: the reply ends with reason "stopped"
    POST /api/inspect   {"messages"} -> ServedModel.inspect's JSON

Every bad request (unreadable or oversized body, invalid JSON, a wrong field or type,
messages the chat format refuses, a prompt or max_new_tokens over the limits, an unknown
path or method) gets a 4xx status and a one-line JSON body {"error": "..."}; the server
goes on serving. Only the page's own paths are static: there is no file system lookup,
so no path (`/../`, encoded or not) reaches another file. A client that disconnects
mid-reply is noticed by the decoding thread before its next step (the job's `alive` looks
at the socket) and by the client's own thread before its next write; its job is cancelled.

It is the standard library's ThreadingHTTPServer (one thread per connection, each waiting
on its job's events) in front of one decoding thread (engine.py): the page is one file, the
API four routes, and streaming is writing lines to a socket, so a web framework would add
an event loop and packages to a runtime of numpy and regex without doing more here.

Left out: TLS, authentication, HTTP keep-alive (each response closes its connection),
compression, CORS.
"""
import http.server
import json
import math
import os
import queue
import secrets
import select
import socket
import threading
import time

from .engine import Engine, Job

MAX_BODY = 1 << 20  # bytes: a longer request body is refused with 413
DRAIN = 4 * MAX_BODY  # bytes of a refused body read before answering
POLL_S = 0.25  # how often a waiting stream checks that its client is still there
GATHER_S = 0.01  # a stream sends at most this often after its first token (100 writes a second)
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "index.html")
CHAT_FIELDS = {"messages", "temperature", "top_k", "top_p", "max_new_tokens", "seed"}


class BadRequest(ValueError):
    """A request the server refuses: status and a one-line message."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


class WebServer(http.server.ThreadingHTTPServer):
    """The listening socket, the served model, its decoding engine and the replies under way."""

    daemon_threads = True

    def __init__(self, served, host, port, max_new_tokens=256, max_batch=8, quiet=False):
        super().__init__((host, port), Handler)
        self.served, self.max_new_tokens, self.quiet = served, max_new_tokens, quiet
        self.engine = Engine(served.model, max_batch)
        with open(PAGE, "rb") as fh:
            self.page = fh.read()
        self.replies = {}  # reply id -> Job, while it streams
        self.lock = threading.Lock()

    def server_close(self):
        super().server_close()
        self.engine.close()


def make_server(served, host="127.0.0.1", port=8000, **options):
    """A WebServer bound to host:port (port 0: a free one, see server.server_address)."""
    return WebServer(served, host, port, **options)


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "nanograd-gpt"

    def do_GET(self):
        self._route({"/": self._page, "/index.html": self._page, "/api/health": self._health})

    def do_POST(self):
        self._route({"/api/chat": self._chat, "/api/inspect": self._inspect, "/api/stop": self._stop})

    def _route(self, routes):
        path = self.path.split("?", 1)[0]
        try:
            if path not in routes:
                raise BadRequest(f"no such path: {path[:80]}; the API is /api/health, /api/chat, /api/inspect, "
                                 "/api/stop", 404)
            routes[path]()
        except BadRequest as e:
            self._send_json({"error": str(e)}, e.status)
        except ValueError as e:  # the model refuses the messages (chat format, tokenizer, context)
            self._send_json({"error": str(e)}, 400)

    # ---- routes -------------------------------------------------------------------------
    def _page(self):
        self._send(200, "text/html; charset=utf-8", self.server.page)

    def _health(self):
        self._send_json({**self.server.served.health(), "max_new_tokens": self.server.max_new_tokens})

    def _chat(self):
        job = self._job(self._body(CHAT_FIELDS, required={"messages"}))
        reply_id = secrets.token_hex(8)  # not guessable: only the client that holds it can stop its reply
        with self.server.lock:
            self.server.replies[reply_id] = job
        try:
            self.server.engine.submit(job)
            self.send_response(200)
            for key, value in (("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"),
                               ("X-Reply-Id", reply_id), ("Connection", "close")):
                self.send_header(key, value)
            self.end_headers()
            self._stream(job)
        finally:
            with self.server.lock:
                del self.server.replies[reply_id]

    def _inspect(self):
        body = self._body({"messages"}, required={"messages"})
        served = self.server.served
        self._send_json(self.server.engine.call(lambda: served.inspect(body["messages"])))

    def _stop(self):
        reply_id = self._body({"id"}, required={"id"})["id"]
        with self.server.lock:
            job = self.server.replies.get(str(reply_id))
        if job is not None:
            job.cancel()
        self._send_json({"stopped": job is not None})

    # ---- chat ---------------------------------------------------------------------------
    def _job(self, body):
        """The Job for a chat request, its fields checked (BadRequest) and its prompt built (ValueError)."""
        limit = self.server.max_new_tokens
        max_new_tokens = number(body, "max_new_tokens", min(64, limit), int, 1, limit)
        temperature = number(body, "temperature", 0.0, float, 0, 100)
        top_k = number(body, "top_k", None, int, 1, math.inf)
        top_p = number(body, "top_p", None, float, 0, 1)
        seed = number(body, "seed", None, int, 0, 2 ** 63 - 1)
        served = self.server.served
        prompt = served.prompt(body["messages"], max_new_tokens)
        return Job(prompt, max_new_tokens, served.end_id(), temperature, top_k, top_p if top_p != 1 else None, seed,
                   alive=lambda: not self._client_gone())

    def _stream(self, job):
        """Write the job's tokens as events until it is done; cancel it if the client goes away.

        Each wake-up sends every event that has arrived since the last in one write, then the
        thread sleeps GATHER_S before looking again: the first token goes out at once, later
        ones in groups, so that N clients cost the decoding thread a few wake-ups of their
        threads per GATHER_S rather than N per token (waking a thread takes the GIL from it).
        """
        text = self.server.served.reply_text()
        while True:
            try:
                events = [job.events.get(timeout=POLL_S)]
            except queue.Empty:
                if self._client_gone():
                    return job.cancel()
                continue
            while not job.events.empty():
                events.append(job.events.get())
            chunk = [event_json(kind, value, text) for kind, value in events]
            if self._client_gone() or not self._write(b"".join(chunk)):
                return job.cancel()
            if events[-1][0] != "token":
                return None
            time.sleep(GATHER_S)

    def _write(self, data):
        """Send bytes of the stream; False if the client has gone."""
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except OSError:
            return False

    def _client_gone(self):
        """True once the client has closed its side (it sends nothing more after its request)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

    # ---- reading and writing ---------------------------------------------------------------
    def _body(self, fields, required):
        """The request's JSON object, holding only `fields` and all of `required` (BadRequest otherwise)."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise BadRequest("the request needs a Content-Length header with the size of its JSON body", 411) from None
        if not 0 <= length <= MAX_BODY:
            self._discard(length)
            raise BadRequest(f"the body is {length} bytes; at most {MAX_BODY} are accepted", 413)
        try:
            body = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"the body is not valid JSON: {str(e)[:80]}") from None
        if not isinstance(body, dict):
            raise BadRequest(f"the body must be a JSON object with {sorted(fields)}, got {type(body).__name__}")
        unknown = sorted(set(body) - fields)
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r:.40}; the fields are {', '.join(sorted(fields))}")
        missing = sorted(required - set(body))
        if missing:
            raise BadRequest(f"missing field {missing[0]!r}")
        return body

    def _discard(self, length):
        """Read and drop a refused body of up to DRAIN bytes, so that a client still sending it reads the
        refusal instead of a reset connection; a longer one is cut off when the connection closes."""
        left = min(max(length, 0), DRAIN)
        while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
            left -= len(chunk)

    def _send_json(self, obj, status=200):
        self._send(status, "application/json", json.dumps(obj).encode())

    def _send(self, status, content_type, data):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:  # the client left before its answer: nothing to do
            pass

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (a malformed request line or header, an unknown method) as JSON."""
        code = 405 if code == 501 else code  # 501 is what http.server says for a method it lacks
        self.close_connection = True
        self._send_json({"error": message or http.HTTPStatus(code).phrase}, code)

    def log_message(self, format, *args):
        if not self.server.quiet:
            super().log_message(format, *args)


def event_json(kind, value, text):
    """The server-sent event(s) of one job event: ("token", id) through `text` (a ReplyText), ("done",
    reason) after what `text` still holds (an unfinished character at the very end, as U+FFFD)."""
    if kind == "token":
        events = [{"token": text.push(value)}]
    elif kind == "done":
        rest = text.flush()
        events = ([{"token": rest}] if rest else []) + [{"done": True, "reason": value}]
    else:
        events = [{"error": value}]
    return b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events)


def number(body, key, default, kind, low, high):
    """body[key] as an int or float in [low, high], default if absent or null; BadRequest otherwise."""
    value = body.get(key)
    if value is None:
        return default
    ok_type = isinstance(value, int) if kind is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not low <= value <= high:
        what = "an integer" if kind is int else "a number"
        raise BadRequest(f"{key}={json.dumps(value)[:40]} must be {what} in [{low}, {high}]")
    return kind(value)
