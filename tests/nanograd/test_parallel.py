"""nanograd.parallel: kernels split over blocks of rows and threads give the unsplit answer.

The test arrays are tiny, so `split` shrinks the block size to a few bytes and uses three
threads (an odd count, so shares are uneven); the fused ops that run through map_blocks
are then gradchecked in float64 and compared with their unsplit results in float32.
Attention's causal tiles are shrunk the same way (TILE = 2), so a 7-step sequence is cut
into tiles 2, 2, 2, 1 and the tiled forward and backward are checked too.
"""
import os
import threading
import time

import numpy as np
import pytest

import nanograd as ng
from nanograd import attention, parallel
from nanograd import functional as F


@pytest.fixture
def split(monkeypatch):
    """Every array of more than a few bytes is split into blocks over three threads."""
    monkeypatch.setattr(parallel, "BLOCK_BYTES", 16)
    monkeypatch.setattr(parallel, "MIN_SPLIT_BYTES", 0)
    monkeypatch.setattr(attention, "TILE", 2)
    monkeypatch.setattr(parallel, "SHARED_WAIT", None)  # split even when other work keeps this machine busy
    monkeypatch.setattr(parallel, "_sharing", parallel._CoreShare())
    before = parallel.get_num_threads()
    parallel.set_num_threads(3)
    yield
    parallel.set_num_threads(before)


def test_blocks_cover_the_rows_in_order_and_return_in_order(split):
    x = np.arange(40.0).reshape(10, 4)
    y = np.zeros_like(x)
    seen = []

    def kernel(x, y, scale):
        time.sleep(0.002)  # releases the GIL: long enough for the workers to claim blocks too
        y[...] = x * scale
        seen.append(threading.get_ident())
        return x[:, 0].copy()

    firsts = parallel.map_blocks(kernel, x, y, scale=2.0)
    np.testing.assert_array_equal(y, 2 * x)
    np.testing.assert_array_equal(np.concatenate(firsts), x[:, 0])  # every row once, in row order
    assert len(firsts) == 10 and len(set(seen)) > 1  # 16-byte blocks: one row each, on several threads


def test_blocks_argument_and_small_arrays(split, monkeypatch):
    x = np.ones((7, 3))
    assert len(parallel.map_blocks(lambda x: len(x), x, blocks=2)) == 2
    assert sum(parallel.map_blocks(lambda x: len(x), x, blocks=100)) == 7  # at most one block per row
    monkeypatch.setattr(parallel, "MIN_SPLIT_BYTES", x.nbytes + 1)
    assert parallel.map_blocks(lambda x: len(x), x) == [7]  # too small to be worth a thread


def test_none_reaches_every_block_as_none(split):
    assert parallel.map_blocks(lambda x, nothing: nothing, np.ones((5, 2)), None) == [None] * 5


def test_split_linear_computes_only_the_gradients_asked_for(split):
    rng = np.random.default_rng(5)
    x = ng.Tensor(rng.standard_normal((7, 4)))  # a constant input: no dx
    w, b = ng.Tensor(rng.standard_normal((3, 4)), requires_grad=True), ng.Tensor(rng.standard_normal(3))
    g = rng.standard_normal((7, 3))
    F.linear(x, w, b).backward(g)
    np.testing.assert_allclose(w.grad, g.T @ x.data, rtol=1e-12)
    assert x.grad is None and b.grad is None


def test_one_thread_is_one_call(split):
    parallel.set_num_threads(1)
    assert parallel.map_blocks(lambda x: len(x), np.ones((9, 2))) == [9]


def test_nested_map_blocks_runs_serially_instead_of_deadlocking(split):
    x = np.ones((6, 2))
    inner = lambda x: sum(parallel.map_blocks(lambda r: len(r), x))
    assert sum(parallel.map_blocks(inner, x)) == 6


def test_a_failing_block_raises_after_every_block_finished(split):
    x = np.arange(12.0).reshape(6, 2)
    done = []

    def kernel(x):
        if x[0, 0] == 10:  # the last row, a worker's block
            raise ValueError("bad block")
        done.append(len(x))

    with pytest.raises(ValueError, match="bad block"):
        parallel.map_blocks(kernel, x)
    assert sum(done) == 5


@pytest.fixture
def spin(monkeypatch):
    """Workers spin between calls even with more threads than CPUs (they do not, normally)."""
    monkeypatch.setattr(parallel, "_cpus", lambda: 64)


def test_more_threads_than_cpus_never_spin(split, monkeypatch):
    monkeypatch.setattr(parallel, "_cpus", lambda: 2)
    parallel.map_blocks(lambda a: a * 2, np.ones((8, 8)))  # three threads
    assert parallel._workers and not any(w.spinning for w in parallel._workers)


def test_blas_threads_are_restored_when_the_workers_sleep(split, spin):
    blas = parallel._find_openblas()
    if blas is None:
        pytest.skip("NumPy's BLAS here is not OpenBLAS")
    before = blas[0]()
    parallel.map_blocks(lambda a: a @ a.T, np.ones((8, 8)))
    assert all(w.spinning for w in parallel._workers) and blas[0]() == 1  # hot: one BLAS thread per call
    parallel.sleep_workers()
    assert not any(w.spinning for w in parallel._workers) and blas[0]() == before


def test_the_watchdog_sends_idle_workers_to_sleep(split, spin, monkeypatch):
    monkeypatch.setattr(parallel, "SPIN_SECONDS", 0.005)
    parallel.map_blocks(lambda a: a * 2, np.ones((8, 8)))
    assert any(w.spinning for w in parallel._workers)
    deadline = time.monotonic() + 5
    while parallel._hot.is_set() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not any(w.spinning for w in parallel._workers) and not parallel._hot.is_set()
    x = np.ones((8, 8))  # sleeping workers are woken through their queues
    assert sum(parallel.map_blocks(lambda a: len(a), x)) == 8


def test_calls_racing_the_watchdog_all_complete(split, spin, monkeypatch):
    """Workers go to sleep and wake again hundreds of times: no hand-off is lost."""
    monkeypatch.setattr(parallel, "SPIN_SECONDS", 1e-4)  # the watchdog looks every millisecond
    x = np.arange(24.0).reshape(12, 2)
    pauses = np.random.default_rng(0).uniform(0, 2e-3, 300)
    for pause in pauses:
        assert np.concatenate(parallel.map_blocks(lambda a: a[:, 0] * 2, x)).tolist() == (x[:, 0] * 2).tolist()
        time.sleep(pause)


def test_workers_that_never_spin_give_the_same_answers(split, monkeypatch):
    monkeypatch.setattr(parallel, "SPIN_SECONDS", 0)
    x = np.arange(24.0).reshape(12, 2)
    for _ in range(3):
        assert np.concatenate(parallel.map_blocks(lambda a: a[:, 0] * 2, x)).tolist() == (x[:, 0] * 2).tolist()
    assert not any(w.spinning for w in parallel._workers)


def test_core_share_backs_off_while_the_wait_persists_and_doubles_after_a_failed_try(monkeypatch):
    monkeypatch.setattr(parallel, "CHECK_SECONDS", 1)  # whole seconds keep the arithmetic exact
    monkeypatch.setattr(parallel, "SHARED_WAIT", 0.1)
    monkeypatch.setattr(parallel, "PROBE_SECONDS", (5, 20))
    share = parallel._CoreShare()
    assert share.update(0, 0.0) is False  # the first reading starts the window
    assert share.update(0.5, 0.5) is False and share.since == (0, 0.0)  # under CHECK_SECONDS: no verdict yet
    waited = 0.0

    def window(now, wait_fraction):  # one second that waited for a CPU this fraction of the time
        nonlocal waited
        waited += wait_fraction
        return share.update(now, waited)

    share = parallel._CoreShare()
    share.update(0, 0.0)
    assert window(1, 0.02) is False  # 2% of the time waiting: the cores are ours
    assert window(2, 0.5) is True and share.until == 7  # waits: shared, try again in 5 s
    assert window(3, 0.5) is True and share.until == 8  # still waiting: pushed on
    assert [window(t, 0.0) for t in (4, 5, 6, 7)] == [True] * 4
    assert window(8, 0.0) is False  # 5 s without waiting: try all threads
    assert window(9, 0.5) is True and share.backoff == 10  # the wait came back at once: twice as long
    assert [window(t, 0.0) for t in (10, 15, 18)] == [True] * 3 and window(19, 0.0) is False
    assert window(20, 0.4) is True and share.backoff == 20
    assert window(40, 0.0) is False and window(41, 0.4) is True and share.backoff == 20  # capped
    assert window(61, 0.0) is False and window(70, 0.0) is False  # the try held
    assert window(71, 0.4) is True and share.backoff == 5  # a new episode starts from the shortest


def test_a_window_measured_on_another_thread_starts_over():
    share = parallel._CoreShare()
    share.update(0.0, 0.0, thread=1)
    assert share.update(1.0, 0.9, thread=2) is False and share.since == (1.0, 0.9)


def test_shared_cores_run_every_call_in_the_caller_and_hold_blas_at_one(split, spin, monkeypatch):
    monkeypatch.setattr(parallel, "SHARED_WAIT", 0.1)
    monkeypatch.setattr(parallel, "CHECK_SECONDS", 0.0)
    monkeypatch.setattr(parallel, "_sharing", parallel._CoreShare())
    clock = {"wait": 0.0}
    monkeypatch.setattr(parallel, "_cpu_wait", lambda: clock["wait"])
    blas = parallel._find_openblas()
    before = blas[0]() if blas else None
    whose = lambda x: [threading.get_ident()] * len(x)
    x = np.ones((6, 2))
    parallel.map_blocks(whose, x)  # starts the window
    spread = parallel.map_blocks(whose, x)
    assert len(set(sum(spread, []))) > 1  # no wait: split over the threads
    clock["wait"] += 1.0  # waited for a CPU all the time since
    here = parallel.map_blocks(whose, x)  # the same blocks, all run here, so the same numbers
    assert [len(b) for b in here] == [len(b) for b in spread] and set(sum(here, [])) == {threading.get_ident()}
    assert not any(w.spinning for w in parallel._workers)
    if blas:
        assert blas[0]() == 1
    parallel._sharing.until = 0.0  # the back-off is over and no wait was seen: all threads again
    assert len(set(sum(parallel.map_blocks(whose, x), []))) > 1
    parallel.sleep_workers()
    if blas:
        assert blas[0]() == before


def test_set_num_threads_rejects_zero():
    with pytest.raises(ValueError, match="at least 1"):
        parallel.set_num_threads(0)


_rng = np.random.default_rng(0)
SEGMENTS = np.array([[0, 0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]])  # (3, 7) packed rows
FUSED = {  # ops that run through map_blocks, with inputs that split into several blocks
    "gelu": (F.gelu, [_rng.standard_normal((5, 3))]),
    "layer_norm": (F.layer_norm, [_rng.standard_normal((2, 5, 4)), _rng.standard_normal(4), _rng.standard_normal(4)]),
    "layer_norm_no_affine": (F.layer_norm, [_rng.standard_normal((5, 4))]),
    "linear": (F.linear, [_rng.standard_normal((2, 5, 4)), _rng.standard_normal((3, 4)), _rng.standard_normal(3)]),
    "linear_no_bias": (F.linear, [_rng.standard_normal((5, 4)), _rng.standard_normal((3, 4))]),
    "attention_causal_tiled": (F.scaled_dot_product_attention,
                               [_rng.standard_normal((3, 2, 7, 3)) for _ in range(3)]),
    "attention_kv_cache_tiled": (F.scaled_dot_product_attention,  # 5 new queries over 8 keys
                                 [_rng.standard_normal((3, 2, 5, 3)), *(_rng.standard_normal((3, 2, 8, 3)) for _ in range(2))]),
    "cross_entropy": (lambda z: F.cross_entropy(z, np.array([1, -1, 4, 0, 2, 2])), [_rng.standard_normal((6, 5))]),
    "causal_self_attention_tiled": (lambda qkv: F.causal_self_attention(qkv, 2), [_rng.standard_normal((3, 7, 12))]),
    "attention_non_causal": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=False),
                             [_rng.standard_normal((3, 2, 7, 3)) for _ in range(3)]),
    "causal_self_attention_segments_tiled": (lambda qkv: F.causal_self_attention(qkv, 2, SEGMENTS),
                                             [_rng.standard_normal((3, 7, 12))]),
}


@pytest.mark.parametrize("name", FUSED)
def test_split_ops_pass_gradcheck(name, split):
    fn, arrays = FUSED[name]
    assert ng.gradcheck(fn, *[ng.Tensor(a, requires_grad=True) for a in arrays])


@pytest.mark.parametrize("name", FUSED)
def test_split_ops_match_the_unsplit_result(name, split, monkeypatch):
    fn, arrays = FUSED[name]

    def run():
        inputs = [ng.Tensor(a.astype(np.float32), requires_grad=True) for a in arrays]
        out = fn(*inputs)
        out.backward(np.cos(np.arange(out.data.size, dtype=np.float32)).reshape(out.shape))
        return [out.data] + [x.grad for x in inputs]

    split_result = run()
    parallel.set_num_threads(1)
    monkeypatch.setattr(attention, "TILE", 1 << 30)
    for a, b in zip(split_result, run()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_adamw_split_matches_unsplit(split, monkeypatch):
    rng = np.random.default_rng(1)
    p0, grads = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((3, 6, 4)).astype(np.float32)

    def train():
        p = ng.Tensor(p0.copy(), requires_grad=True)
        opt = ng.optim.AdamW([p], lr=0.1, weight_decay=0.1)
        for g in grads:
            p.grad = g
            opt.step()
        return p.data

    split_result = train()
    parallel.set_num_threads(1)
    np.testing.assert_array_equal(split_result, train())  # elementwise: identical however split


@pytest.mark.parametrize("tile", [2, 1 << 30])
def test_packed_attention_is_split_heads_then_attention_bit_for_bit(tile, split, monkeypatch):
    """causal_self_attention(qkv) == merge(sdpa(split(qkv))), forward and backward, exactly."""
    monkeypatch.setattr(attention, "TILE", tile)
    B, T, H, D = 3, 7, 2, 4
    qkv = _rng.standard_normal((B, T, 3 * H * D)).astype(np.float32)
    g = _rng.standard_normal((B, T, H * D)).astype(np.float32)

    def unfused(x):
        q, k, v = x.reshape(B, T, 3, H, D).transpose(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v).transpose(0, 2, 1, 3).reshape(B, T, H * D)

    results = []
    for fn in (lambda x: F.causal_self_attention(x, H), unfused):
        x = ng.Tensor(qkv, requires_grad=True)
        y = fn(x)
        y.backward(g)
        results.append((y.data, x.grad))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_workers(split):
    x, y = np.ones((6, 2)), np.zeros((6, 2))
    parallel.map_blocks(lambda a, b: np.multiply(a, 2, out=b), x, y)  # the parent's workers exist now
    pid = os.fork()
    if pid == 0:  # the child: without fresh workers this call would wait forever
        _child(lambda: parallel.map_blocks(lambda a, b: np.multiply(a, 3, out=b), x, y) and (y == 3).all())
    assert _exit_status(pid) == 0


def _child(check):
    """In a forked child: exit 0 if check() is true, 1 if false or it raised (never return to pytest)."""
    try:
        os._exit(0 if check() else 1)
    finally:
        os._exit(1)


def _exit_status(pid, timeout=30):
    """The child's exit status; fails the test (instead of hanging it) if the child hangs."""
    deadline = time.monotonic() + timeout
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.01)
    return os.WEXITSTATUS(done[1])


def test_without_spin_locks_semaphores_hand_over_the_work(split, spin, monkeypatch):
    monkeypatch.setattr(parallel, "_spin_functions", [None])  # as where glibc is missing
    parallel.set_num_threads(3)  # the next call starts fresh workers, built on semaphores
    x = np.arange(24.0).reshape(12, 2)
    for _ in range(3):  # the first call wakes them through their queues, the next through go
        assert np.concatenate(parallel.map_blocks(lambda a: a[:, 0] * 2, x)).tolist() == (x[:, 0] * 2).tolist()
    assert all(isinstance(w.go, threading.Semaphore) for w in parallel._workers)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_a_call_held_the_lock_is_not_stuck(split):
    x, y = np.ones((6, 2)), np.zeros((6, 2))
    parallel.map_blocks(lambda a, b: np.multiply(a, 2, out=b), x, y)
    with parallel._busy:  # as if a call (or the watchdog) were in flight in another thread at the fork
        pid = os.fork()
        if pid == 0:  # the child: with the inherited, held lock this would wait forever
            _child(lambda: parallel.set_num_threads(3) or parallel.map_blocks(
                lambda a, b: np.multiply(a, 3, out=b), x, y) and (y == 3).all())
    assert _exit_status(pid) == 0


def test_an_interrupted_join_retires_the_workers_and_later_calls_are_right(split, spin, monkeypatch):
    x = np.arange(24.0).reshape(12, 2)
    parallel.map_blocks(lambda a: a * 2, x)
    first = parallel._workers[0]
    real_join = parallel._Worker.join

    def interrupted(self):  # Ctrl-C lands between two joins
        monkeypatch.setattr(parallel._Worker, "join", real_join)
        raise KeyboardInterrupt

    monkeypatch.setattr(parallel._Worker, "join", interrupted)
    with pytest.raises(KeyboardInterrupt):
        parallel.map_blocks(lambda a: a * 2, x)
    assert first not in parallel._workers  # the old workers are let go, new ones start
    for k in range(50):
        assert np.concatenate(parallel.map_blocks(lambda a: a[:, 0] + k, x)).tolist() == (x[:, 0] + k).tolist()


def test_ctrl_c_in_the_callers_share_waits_for_the_workers(split, spin):
    x = np.arange(24.0).reshape(12, 2)
    main = threading.get_ident()

    def kernel(a):
        if threading.get_ident() == main:
            raise KeyboardInterrupt
        time.sleep(0.01)
        return a[:, 0] * 2

    with pytest.raises(KeyboardInterrupt):
        parallel.map_blocks(kernel, x)
    for k in range(20):
        assert np.concatenate(parallel.map_blocks(lambda a: a[:, 0] + k, x)).tolist() == (x[:, 0] + k).tolist()


def test_a_worker_keeps_no_array_of_the_last_call(split, spin):
    import weakref
    x = np.ones((12, 2))
    ref = weakref.ref(x)
    parallel.map_blocks(lambda a: a.sum(), x)
    del x
    assert ref() is None
