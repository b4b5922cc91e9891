"""Work on every CPU core: one kernel run over blocks of rows, in threads.

NumPy's ufuncs run on one core: `np.tanh` over a large array uses one core while the
others wait. NumPy releases the GIL inside every ufunc and every matmul, though, so plain
Python threads can run the same kernel on different rows of an array at the same time.
Each thread takes its share of the blocks (BLOCK_BYTES of the first array each). Blocks
about the size of a core's L2 cache keep a kernel's chain of in-place passes in cache;
much smaller ones lose more to the GIL, which every NumPy call hands back and forth
between the threads.

    y = np.empty_like(x)
    map_blocks(lambda x, y: np.tanh(x, out=y), x, y)   # y = tanh(x), on all cores

A kernel receives row blocks (views) of the arrays it is given, writes its results into
the output blocks, and may return a value per block (a partial sum), which map_blocks
returns in row order. On CuPy arrays, with one thread, or for arrays under
MIN_SPLIT_BYTES, it is a single call `kernel(*arrays)`: the same code, just not split.

Kernels may call matmul. While they run in threads, OpenBLAS is told to use one thread
per call (its own threads would otherwise compete with ours for the same cores, which
measured 1.7x slower on attention); outside, its threading is left as it was.

Left out: process pools, NUMA placement, work stealing (rows are split evenly).
"""
import contextlib
import ctypes
import os
import queue
import re
import threading

import numpy as np

BLOCK_BYTES = 1 << 20  # bytes of the first array per block: about one L2 cache (1 MB beat 256 KB, 2, 4 MB and 1 GB)
MIN_SPLIT_BYTES = 512 << 10  # below this, handing work to another thread costs more than it saves
_num_threads = None
_workers = []  # one (tasks, results) pair of queues per worker thread
_busy = threading.Lock()  # held while a map_blocks call is spread over the workers
_openblas = []  # [(get_num_threads, set_num_threads) or None], looked up once


def get_num_threads():
    """Threads for kernels: set_num_threads(n), else $NANOGRAD_NUM_THREADS, else the CPUs we may use."""
    global _num_threads
    if _num_threads is None:
        env = os.environ.get("NANOGRAD_NUM_THREADS")
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        _num_threads = int(env) if env else cpus or 1
    return _num_threads


def set_num_threads(n):
    """Use n threads (the caller's plus n - 1 workers) for kernels; 1 turns splitting off."""
    global _num_threads
    if int(n) < 1:
        raise ValueError(f"set_num_threads: need at least 1 thread, got {n}")
    with _busy:
        _num_threads = int(n)
        for tasks, _ in _workers:
            tasks.put(None)  # the worker returns
        _workers.clear()


if hasattr(os, "register_at_fork"):  # a forked child has none of our threads: start afresh there
    os.register_at_fork(after_in_child=_workers.clear)


def _serve(tasks, results):
    """A worker thread: run each task it is handed, hand back (ok, value or exception)."""
    while (task := tasks.get()) is not None:
        try:
            results.put((True, task()))
        except BaseException as e:  # re-raised in the caller's thread
            results.put((False, e))


def _start_workers(n):
    """n worker threads, each fed through its own queue (a queue.SimpleQueue hand-off costs ~15 us)."""
    while len(_workers) < n:
        queues = queue.SimpleQueue(), queue.SimpleQueue()
        threading.Thread(target=_serve, args=queues, daemon=True, name=f"nanograd-{len(_workers)}").start()
        _workers.append(queues)
    return _workers


def map_blocks(kernel, *arrays, blocks=None, **shared):
    """[kernel(*blocks, **shared) for each block of rows], the blocks spread evenly over the threads.

    arrays: each is cut along its first axis into the same number of blocks, block b of an
    array of N rows holding rows b N / blocks up to (b + 1) N / blocks. Arrays of equal
    length are cut alike, so a kernel that is row-wise (elementwise, or a reduction along
    later axes) gives the same numbers however the rows are split; arrays of different
    lengths let one call split two things at once (linear's dx by rows, dW by units). A
    None among them (an output nobody needs) reaches every block as None.
    `shared` goes whole to every call (a weight vector, a constant). blocks: how many; by
    default enough for each block of the first array to be about BLOCK_BYTES, rounded to a
    multiple of the threads, and none (one call) when the first array is under
    MIN_SPLIT_BYTES.
    """
    first = arrays[0]
    n = first.shape[0] if first.ndim else 1
    threads = get_num_threads()
    if blocks is None:
        blocks = threads * -(-first.nbytes // (threads * BLOCK_BYTES)) if first.nbytes >= MIN_SPLIT_BYTES else 1
    blocks = min(n, blocks)
    if threads <= 1 or blocks <= 1 or not isinstance(first, np.ndarray):
        return [kernel(*arrays, **shared)]
    if not _busy.acquire(blocking=False):  # a kernel calling map_blocks, or another thread's call: run here
        return [kernel(*arrays, **shared)]
    try:
        threads = min(threads, blocks)
        cuts = [None if a is None else [b * len(a) // blocks for b in range(blocks + 1)] for a in arrays]
        run = lambda part: [kernel(*(a if c is None else a[c[b]:c[b + 1]] for a, c in zip(arrays, cuts)), **shared)
                            for b in part]
        parts = [range(j * blocks // threads, (j + 1) * blocks // threads) for j in range(threads)]
        workers = _start_workers(threads - 1)[:threads - 1]
        with _one_blas_thread():
            for (tasks, _), part in zip(workers, parts[1:]):
                tasks.put(lambda part=part: run(part))
            try:
                results = run(parts[0])  # this thread takes the first share
            finally:
                done = [results_queue.get() for _, results_queue in workers]  # every worker, even if ours failed
        for ok, value in done:
            if not ok:
                raise value
            results += value
        return results
    finally:
        _busy.release()


@contextlib.contextmanager
def _one_blas_thread():
    """OpenBLAS on one thread per call inside the block; a no-op for other BLAS libraries."""
    blas = _find_openblas()
    if blas is None:
        yield
        return
    get, set_ = blas
    before = get()
    set_(1)
    try:
        yield
    finally:
        set_(before)


def _find_openblas():
    """(get_num_threads, set_num_threads) of the OpenBLAS that NumPy loaded, or None.

    NumPy's wheels bundle OpenBLAS with prefixed names (scipy_openblas_..._64_); we look for
    it among the libraries mapped into this process (Linux's /proc/self/maps).
    """
    if not _openblas:
        _openblas.append(None)
        try:
            with open("/proc/self/maps") as fh:
                paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", fh.read())))
        except OSError:  # not Linux
            paths = []
        for path in paths:
            lib = ctypes.CDLL(path)
            for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", ""), ("openblas", "64_")):
                names = (f"{prefix}_get_num_threads{suffix}", f"{prefix}_set_num_threads{suffix}")
                if all(hasattr(lib, n) for n in names):
                    _openblas[0] = tuple(getattr(lib, n) for n in names)
                    break
            if _openblas[0]:
                break
    return _openblas[0]
