"""Decoding for the web server: replies stream out token by token while others decode beside them.

    engine = Engine(model, max_batch=8)              # starts its thread
    job = engine.submit(Job(prompt_ids, 64, end_id=end, temperature=0))
    while (event := job.events.get())[0] == "token": ...   # ("token", id) ... then ("done", reason)

One thread owns the model. Requests join and leave a shared decoding batch between steps
(continuous batching, as serving systems do): a new job's prompt is run alone into its own
KV cache (the prefill), which gives its first token; from then on every step feeds the
newest token of each running job through the model together, one row per job. Each row
keeps its own KVCache, because the rows are at different lengths (the model's KVCache holds
one length for a whole batch): the matrix products (attention projections, MLP, output
layer) run once for all rows, and attention once over the rows' keys laid side by side,
each row masked to its own (ragged_attention). A job leaves the batch when it emits its end
token ("end"), reaches max_new_tokens ("length"), or is cancelled ("stopped"); before each
step the thread asks every job whether its client is still there (Job's `alive`) and drops
those cancelled or gone, so a client that goes away costs at most the step under way.
max_batch=1 is a plain queue: one reply at a time, the others waiting
(benchmarks/web_batching.py compares the two). Other work on the model (the page's look
inside) runs on the same thread between two steps, through `call`: hooks and no_grad are
the model's and nanograd's global state, not the thread's.

Tokens are chosen as gpt/generate.py chooses them (its logits processors, then argmax or a
draw from the job's own generator). A job decoding alone runs exactly generate's KV-cache
arithmetic, so its reply is model.generate's token for token. Several decoding together
compute the same function with their sums in another order (few_rows_linear, and the
attention's tiles over padded keys), which can move a logit in its last bit: their replies
equal lone ones unless two candidate tokens tie to within float32 rounding (tests/test_web.py
and benchmarks/web_batching.py compare them). The prompt plus max_new_tokens must fit
block_size (the caller checks): the context window never slides.

Left out: prefill in chunks interleaved with decoding, paged KV memory, beam search and
repetition penalties, priorities between jobs.
"""
import collections
import queue
import threading

import numpy as np

import nanograd as ng
from nanograd import backend
from nanograd import functional as F
from gpt.generate import apply_temperature, inference_mode, sample, top_k_filter, top_p_filter


class Job:
    """One reply: its prompt, how its tokens are chosen, and the queue its events go to.

    events receives ("token", id) for each generated token, then ("done", reason) with
    reason "end", "length" or "stopped", or ("error", message) if decoding failed.
    """

    def __init__(self, prompt, max_new_tokens, end_id=None, temperature=0.0, top_k=None, top_p=None, seed=None,
                 alive=None):
        """alive: None, or a function the decoding thread calls before each step; False cancels the job
        (the server passes one that looks whether the client is still connected)."""
        self.prompt = np.asarray(prompt, dtype=np.int64)  # (T,)
        self.alive = alive
        self.max_new_tokens, self.end_id = max_new_tokens, end_id
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.rng = np.random.default_rng(seed)  # seed None: fresh entropy
        self.events = queue.SimpleQueue()  # put without a Python-level lock: the decoding thread never waits
        self.cancelled = threading.Event()
        self.cache = None  # its KVCache, while it decodes
        self.last = None  # its newest token, the next step's input
        self.n_new = 0

    def cancel(self):
        """Stop before the next step (safe from any thread)."""
        self.cancelled.set()

    def stopped(self):
        """Whether it is cancelled, or its client has gone (then it is cancelled now)."""
        if self.alive is not None and not self.cancelled.is_set() and not self.alive():
            self.cancel()
        return self.cancelled.is_set()

    def choose(self, logits):
        """The next token id from logits (1, V), as gpt.generate chooses it."""
        if self.temperature == 0:
            return int(logits.argmax(axis=-1)[0])
        logits = top_p_filter(top_k_filter(apply_temperature(logits, self.temperature), self.top_k), self.top_p)
        return int(sample(logits, self.rng)[0])

    def emit(self, token):
        """Record and send `token`; return the reason the job ends with it, or None if it goes on."""
        self.last, self.n_new = token, self.n_new + 1
        self.events.put(("token", token))
        if token == self.end_id:
            return "end"
        return "length" if self.n_new >= self.max_new_tokens else None

    def finish(self, reason):
        self.cache = None  # its memory goes now, not when the client's thread lets go of the job
        self.events.put(("done", reason))


class Engine:
    """The decoding thread: admits submitted jobs into the running batch and steps them together."""

    def __init__(self, model, max_batch=8):
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be >= 1 (1 decodes one reply at a time)")
        self.model, self.max_batch = model, max_batch
        self.waiting = collections.deque()
        self.running = []
        self.calls = collections.deque()  # (fn, reply queue) to run between steps
        self.wake = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="decoder", daemon=True)
        self.thread.start()

    def submit(self, job):
        """Queue `job`; its events start arriving once it is admitted. Returns the job."""
        with self.wake:
            if self.closed:
                raise RuntimeError("the decoding engine is closed")
            self.waiting.append(job)
            self.wake.notify()
        return job

    def call(self, fn):
        """fn() run on the decoding thread between two steps; returns its value or raises its exception."""
        reply = queue.Queue()
        with self.wake:
            if self.closed:
                raise RuntimeError("the decoding engine is closed")
            self.calls.append((fn, reply))
            self.wake.notify()
        ok, value = reply.get()
        if not ok:
            raise value
        return value

    def close(self):
        """Stop the thread; jobs still waiting or running end with "stopped"."""
        with self.wake:
            self.closed = True
            self.wake.notify()
        self.thread.join()

    def busy(self):
        """(running, waiting) job counts."""
        with self.wake:
            return len(self.running), len(self.waiting)

    def _loop(self):
        while self._wait_for_work():
            with inference_mode(self.model):  # no_grad is global: held while there is work, never while idle
                while self._has_work():
                    self._run_calls()
                    try:
                        self._admit()
                        self._step()
                    except Exception as e:  # a bug: fail the jobs in hand, keep serving the next ones
                        for job in self.running:
                            job.events.put(("error", f"decoding failed: {type(e).__name__}: {e}"))
                        self.running = []
        for job in self.running + list(self.waiting):
            job.finish("stopped")
        for _, reply in self.calls:
            reply.put((False, RuntimeError("the decoding engine is closed")))

    def _wait_for_work(self):
        """Block until a job runs or waits or a call waits; False once closed."""
        with self.wake:
            while not (self._has_work() or self.closed):
                self.wake.wait()
            return not self.closed

    def _has_work(self):
        return bool(self.running or self.waiting or self.calls) and not self.closed

    def _run_calls(self):
        while True:
            with self.wake:
                if not self.calls:
                    return
                fn, reply = self.calls.popleft()
            try:
                reply.put((True, fn()))
            except Exception as e:  # the caller raises it
                reply.put((False, e))

    def _admit(self):
        """Drop stopped jobs; prefill waiting ones while the batch has room (each emits its first token)."""
        self._leave([job for job in self.running if job.stopped()], "stopped")
        while len(self.running) < self.max_batch:
            with self.wake:
                if not self.waiting:
                    return
                job = self.waiting.popleft()
            if job.stopped():
                job.finish("stopped")
                continue
            job.cache = self.model.new_cache(1)
            h = self.model.hidden_states(job.prompt[None], job.cache)  # (1, T, C)
            self.running.append(job)
            self._take(job, self.model.lm_head(h[:, -1]).numpy())  # (1, V)

    def _step(self):
        """One token for every running job, from one batched pass over their newest tokens."""
        if not self.running:
            return
        logits = ragged_step(self.model, [job.last for job in self.running], [job.cache for job in self.running])
        for job, row in zip(list(self.running), logits):  # row (V,)
            self._take(job, row[None])

    def _take(self, job, logits):
        """Choose, emit, and let the job leave if that token ends it."""
        reason = job.emit(job.choose(logits))
        if reason is not None:
            self._leave([job], reason)

    def _leave(self, jobs, reason):
        for job in jobs:
            self.running.remove(job)
            job.finish(reason)


def ragged_step(model, tokens, caches):
    """Next-token logits (N, V) for N sequences, each one new token after its own KVCache.

    tokens: N ints; caches: N KVCaches of batch size 1, at any lengths (each advances by
    one). The position-wise parts (embeddings, LayerNorms, projections, MLP, output layer)
    run on all N rows at once, attention over each row's own keys and values (ragged_attention).
    One row (N = 1) runs the model's own layers, which is exactly generate's KV-cache step;
    several run their projections through few_rows_linear.
    """
    t, N = model.transformer, len(tokens)
    linear = (lambda layer, x: layer(x)) if N == 1 else few_rows_linear
    pos = np.array([c.length for c in caches])  # (N,) each row's position
    x = t.wte(np.asarray(tokens)[:, None]) + t.wpe(pos[:, None])  # (N, 1, C)
    C = x.shape[-1]
    for block in t.h:
        attn = block.attn
        H = attn.n_head
        qkv = linear(attn.c_attn, block.ln_1(x)).reshape(N, 1, 3, H, C // H)  # (N, 1, 3, H, D)
        qkv = qkv.transpose(2, 0, 3, 1, 4)  # (3, N, H, 1, D)
        keys = [cache.store(attn.layer, qkv[1][i:i + 1].data, qkv[2][i:i + 1].data) for i, cache in enumerate(caches)]
        y = ragged_attention(qkv[0], keys)  # (N, H, 1, D)
        x = x + linear(attn.c_proj, y.transpose(0, 2, 1, 3).reshape(N, 1, C))  # (N, 1, C)
        if hasattr(block, "mlp"):
            x = x + linear(block.mlp.c_proj, F.gelu(linear(block.mlp.c_fc, block.ln_2(x))))
    for cache in caches:
        cache.advance(1)
    return model.lm_head(t.ln_f(x)[:, -1]).numpy()  # (N, V)


def ragged_attention(q, keys):
    """The attention output (N, H, 1, D) of one new query per row over that row's own keys and values.

    q: Tensor (N, H, 1, D); keys: N pairs of arrays (1, H, L_i, D), the rows' cached keys and
    values (the new one last). One row is the fused op's KV-cache call as the model makes it.
    Several are laid right-aligned into one (N, H, max L_i, D) batch, the padding before each
    row's keys in a segment of its own, so one call of the fused op attends each query to its
    own keys alone (its segment mask gives the padding zero weight).
    """
    if len(keys) == 1:
        return F.scaled_dot_product_attention(q, ng.Tensor(keys[0][0]), ng.Tensor(keys[0][1]), causal=True)
    xp = backend.get_array_module(q.data)
    N, H, _, D = q.shape
    L = max(k.shape[2] for k, _ in keys)
    k_all, v_all = (xp.zeros((N, H, L, D), q.dtype) for _ in range(2))  # (N, H, L, D) each
    segments = np.zeros((N, L), np.int64)  # 1 on the padding, 0 on each row's keys
    for i, (k, v) in enumerate(keys):
        pad = L - k.shape[2]
        k_all[i, :, pad:], v_all[i, :, pad:] = k[0], v[0]
        segments[i, :pad] = 1
    return F.scaled_dot_product_attention(q, ng.Tensor(k_all), ng.Tensor(v_all), causal=True,
                                          segments=xp.asarray(segments))


def few_rows_linear(layer, x):
    """layer(x) for a Linear and a few rows x (N, 1, in) -> (N, 1, out), as (W x^T)^T + b.

    The same function as nanograd's linear (x W^T + b), in the order that suits a handful of
    rows: OpenBLAS multiplies a weight matrix by a few columns (W x^T) 2-3x faster than a few
    rows by a transposed matrix (x W^T) at our sizes (benchmarks/web_batching.py, docs/web.md).
    The sums run in another order, so logits may differ from one row's in the last bit.
    """
    N = x.shape[0]
    y = (layer.weight.data @ x.data.reshape(N, -1).T).T  # (out, in) @ (in, N) -> (N, out)
    if layer.bias is not None:
        y = y + layer.bias.data
    return ng.Tensor(y.reshape(N, 1, -1))
