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

Handing work to a thread that sleeps costs 30-300 us on a virtual machine, where an idle CPU
is halted and must be woken. So, like OpenMP runtimes, the workers spin between calls: after
a task a worker waits for the next on a spin lock (in C, with the GIL released), and a
watchdog thread sends it back to sleep once no call has come for SPIN_SECONDS. Workers spin
only when there are no more threads than CPUs; otherwise a spinning worker would take a core
that somebody needs. A call interrupted while it hands out or collects work (Ctrl-C) lets its
workers go, and the next call starts new ones; Ctrl-C while a thread spin-waits takes effect
once the kernel it waits for has finished.

Kernels may call matmul. While the workers are up, OpenBLAS is told to use one thread per
call (its own threads would otherwise compete with ours for the same cores, which measured
1.7x slower on attention); when they sleep, its threading is restored.

Spinning pays only while the cores are ours. When another process wants them too (a second
training, the test suite, a notebook), a spinning thread holds a core that the thread it waits
for needs: two trainings sharing two cores ran 8.6x slower each instead of 2x. So every
CHECK_SECONDS the calling thread reads how long it waited for a CPU (Linux's
/proc/thread-self/schedstat). Waiting more than SHARED_WAIT of the time means the cores are
shared: then every call runs in the calling thread, the workers sleep and OpenBLAS keeps one
thread, so the process asks for one core. It cannot see from one thread whether a second core
has become free, so after PROBE_SECONDS[0] of not waiting it tries all its threads again; if
the wait comes back at once, the next try waits twice as long (up to PROBE_SECONDS[1]).
(OpenMP runtimes bound the spin instead and then sleep; from Python, every try of a bounded
spin would take the GIL back from the thread doing the work, and a bound does not tell
OpenBLAS's threads to yield. Reading the wait is one small file every 0.1 s.)

Left out: process pools, NUMA placement, work stealing (rows are split evenly).
"""
import ctypes
import ctypes.util
import os
import queue
import re
import threading
import time

import numpy as np

BLOCK_BYTES = 1 << 20  # bytes of the first array per block: about one L2 cache (1 MB beat 256 KB, 2, 4 MB and 1 GB)
MIN_SPLIT_BYTES = 512 << 10  # below this, handing work to another thread costs more than it saves
SPIN_SECONDS = 0.02  # after a call, workers spin this long for the next before they sleep (0: never spin)
CHECK_SECONDS = 0.1  # how often the calling thread measures its wait for a CPU
SHARED_WAIT = 0.1  # waiting for a CPU more than this fraction of the time: the cores are shared (None: never back off)
PROBE_SECONDS = (0.5, 8.0)  # shared: try all threads again after this long without waiting, doubling to the max
_num_threads = None
_workers = []  # the worker threads (_Worker), started on first use
_watchdog = []  # its thread, started with the first worker
_busy = threading.Lock()  # held while a map_blocks call is spread over the workers, or they are sent to sleep
_openblas = []  # [(get_num_threads, set_num_threads) or None], looked up once
_spin_functions = []  # [glibc's pthread_spin_* or None], looked up once
_hot = threading.Event()  # set by a split call, cleared when the watchdog sends the workers to sleep
_blas_before = []  # OpenBLAS's own thread count, while we hold it at one
_last_call = 0.0  # time.perf_counter() when the last split call ended


def get_num_threads():
    """Threads for kernels: set_num_threads(n), else $NANOGRAD_NUM_THREADS, else the CPUs we may use."""
    global _num_threads
    if _num_threads is None:
        env = os.environ.get("NANOGRAD_NUM_THREADS")
        _num_threads = int(env) if env else _cpus()
    return _num_threads


def _cpus():
    """How many CPUs this process may run on."""
    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) or 1


def set_num_threads(n):
    """Use n threads (the caller's plus n - 1 workers) for kernels; 1 turns splitting off."""
    global _num_threads
    if int(n) < 1:
        raise ValueError(f"set_num_threads: need at least 1 thread, got {n}")
    with _busy:
        _num_threads = int(n)
        _sleep_workers()
        for worker in _workers:
            worker.tasks.put(None)  # the worker returns
        _workers.clear()


def _retire_workers():
    """Let every worker go: each returns once its current task, if any, is done, and the next
    call starts new ones. After an interrupted hand-off no caller is left to wait for them."""
    for worker in _workers:
        worker.spinning, worker.task = False, None
        worker.go.release()  # a spinning worker wakes to task None
        worker.tasks.put(None)  # a sleeping one (or one that sleeps next) reads None
    _workers.clear()


def sleep_workers():
    """Send spinning workers to sleep now, and give OpenBLAS back its threads (the watchdog
    does this SPIN_SECONDS after the last call anyway)."""
    with _busy:
        _sleep_workers()


def _forget_workers():
    """In a forked child: none of the parent's threads exist here, and a lock one of them held
    at the fork would stay held; start afresh."""
    global _busy, _hot, _sharing
    _workers.clear()
    _watchdog.clear()
    _release_blas()  # forked while the parent held it
    _sharing = _CoreShare()  # the child measures its own wait
    _busy, _hot = threading.Lock(), threading.Event()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)


class _Worker:
    """A worker thread and its hand-offs: a queue it sleeps on, and a spin lock it waits on
    between calls (the module's docstring says why). Spinning replaced a tenth of a small
    model's training step spent waking threads; OpenMP runtimes do the same (KMP_BLOCKTIME).
    """

    def __init__(self, name):
        self.tasks = queue.SimpleQueue()  # the sleeping worker's hand-off
        self.go, self.done = _held_lock(), _held_lock()  # released to hand over a task, a result
        self.task = self.result = None
        self.spinning = False  # where the worker waits after its task: on go (True) or on tasks
        threading.Thread(target=self._serve, daemon=True, name=name).start()

    def submit(self, task, spin):
        """Hand over task(); afterwards the worker spins on go (spin) or sleeps on tasks."""
        was_spinning, self.spinning, self.task = self.spinning, spin, task
        if was_spinning:
            self.go.release()
        else:
            self.tasks.put(task)

    def join(self):
        """(True, what task() returned) or (False, the exception it raised)."""
        self.done.acquire()
        result, self.result = self.result, None  # keep no array of the call alive
        return result

    def _serve(self):
        task = self.tasks.get()
        while task is not None:  # None: stop
            try:
                self.result = (True, task())
            except BaseException as e:  # re-raised in the caller's thread
                self.result = (False, e)
            task = self.task = None  # keep no array of the call alive
            spin = self.spinning  # read before the caller may submit again (it reads the same value then)
            self.done.release()
            if spin:
                self.go.acquire()
                task = self.task
            else:
                task = self.tasks.get()


def _start_workers(n):
    """n worker threads, and the watchdog that puts them to sleep when calls stop coming."""
    if not _watchdog:
        _watchdog.append(threading.Thread(target=_watch, daemon=True, name="nanograd-watchdog"))
        _watchdog[0].start()
    while len(_workers) < n:
        _workers.append(_Worker(f"nanograd-{len(_workers)}"))
    return _workers


def _watch():
    """The watchdog: once no split call has come for SPIN_SECONDS, the spinning workers sleep."""
    while True:
        _hot.wait()
        time.sleep(max(SPIN_SECONDS, 1e-3))
        if _busy.acquire(blocking=False):
            try:
                if time.perf_counter() - _last_call > SPIN_SECONDS:
                    _sleep_workers()
            finally:
                _busy.release()


def _sleep_workers():
    """Send spinning workers to sleep (an empty task with spin=False) and restore OpenBLAS.
    The caller holds _busy (so calling this, set_num_threads or sleep_workers from a kernel would deadlock)."""
    for worker in _workers:
        if worker.spinning:
            worker.submit(lambda: None, spin=False)
            worker.join()
    if not _sharing.shared:
        _release_blas()
    _hot.clear()


def _heat_up():
    """A split call starts: OpenBLAS goes to one thread per call until the workers sleep again,
    as its own threads would fight ours for the cores (measured 1.7x slower on attention)."""
    if not _hot.is_set():
        _hold_blas()
        _hot.set()


def _hold_blas():
    """OpenBLAS to one thread per call, its own count kept to give back."""
    blas = _find_openblas()
    if blas and not _blas_before:
        _blas_before.append(blas[0]())
        blas[1](1)


def _release_blas():
    """OpenBLAS back to the thread count it had before _hold_blas."""
    blas = _find_openblas()
    if blas and _blas_before:
        blas[1](_blas_before.pop())


class _CoreShare:
    """Whether the cores are shared with another process, from how long one thread waits for a CPU.

    update(now, waited) takes the time and the thread's total wait so far (seconds) and
    returns True while the cores are shared. The module's docstring gives the policy; it
    lives here apart from the clock and /proc, so that tests can drive it with made-up times.
    """

    def __init__(self):
        self.shared = False
        self.thread = self.since = None  # whose wait is measured, and (time, wait) when the window began
        self.until = 0.0  # shared: try all threads again at this time, unless a wait pushes it later
        self.backoff = PROBE_SECONDS[0]
        self.probed = -float("inf")  # when the last try with all threads began

    def update(self, now, waited, thread=None):
        if self.since is None or thread != self.thread:
            self.thread, self.since = thread, (now, waited)
            return self.shared
        t0, w0 = self.since
        if now - t0 < CHECK_SECONDS:
            return self.shared
        self.since = (now, waited)
        waits = (waited - w0) / (now - t0) > SHARED_WAIT
        if self.shared and waits:
            self.until = now + self.backoff
        elif self.shared and now >= self.until:
            self.shared, self.probed = False, now
        elif not self.shared and waits:
            failed_try = now - self.probed <= 2 * CHECK_SECONDS  # the wait came back as soon as we tried
            self.backoff = min(2 * self.backoff, PROBE_SECONDS[1]) if failed_try else PROBE_SECONDS[0]
            self.shared, self.until = True, now + self.backoff
        return self.shared


_sharing = _CoreShare()


def _cores_shared():
    """True while the cores are shared (then calls run in the calling thread).

    Reads this thread's wait for a CPU at most every CHECK_SECONDS; switching sends the
    workers to sleep and holds OpenBLAS at one thread, or gives OpenBLAS its threads back.
    """
    if SHARED_WAIT is None:
        return False
    if time.perf_counter() - (_sharing.since or (0.0,))[0] < CHECK_SECONDS:
        return _sharing.shared
    waited = _cpu_wait()
    if waited is None or not _busy.acquire(blocking=False):  # no schedstat, or another call is under way
        return _sharing.shared
    try:
        was = _sharing.shared
        if _sharing.update(time.perf_counter(), waited, threading.get_ident()) != was:
            if _sharing.shared:
                _sleep_workers()
                _hold_blas()
            elif not _hot.is_set():
                _release_blas()
        return _sharing.shared
    finally:
        _busy.release()


def _cpu_wait():
    """Seconds this thread has spent runnable but waiting for a CPU, or None where Linux's
    schedstat is missing. Its second field is the run-queue wait in nanoseconds."""
    try:
        with open("/proc/thread-self/schedstat") as fh:
            return int(fh.read().split()[1]) * 1e-9
    except (OSError, IndexError, ValueError):
        return None


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
    global _last_call
    first = arrays[0]
    n = first.shape[0] if first.ndim else 1
    shared_cores = _cores_shared()  # measured on every call: it also holds OpenBLAS at one thread
    threads = get_num_threads()
    if blocks is None:
        blocks = threads * -(-first.nbytes // (threads * BLOCK_BYTES)) if first.nbytes >= MIN_SPLIT_BYTES else 1
    blocks = min(n, blocks)
    if threads <= 1 or blocks <= 1 or not isinstance(first, np.ndarray):
        return [kernel(*arrays, **shared)]
    cuts = [None if a is None else [b * len(a) // blocks for b in range(blocks + 1)] for a in arrays]
    run = lambda part: [kernel(*(a if c is None else a[c[b]:c[b + 1]] for a, c in zip(arrays, cuts)), **shared)
                        for b in part]
    # Shared cores, a kernel calling map_blocks, or another thread's call: the same blocks, one after
    # another in this thread. The blocks never depend on who runs them, so neither do the numbers
    # (a matmul's rounding depends on its shape, and partial sums on where the rows were cut).
    if shared_cores or not _busy.acquire(blocking=False):
        return run(range(blocks))
    try:
        threads = min(threads, blocks)
        parts = [range(j * blocks // threads, (j + 1) * blocks // threads) for j in range(threads)]
        workers = _start_workers(threads - 1)[:threads - 1]
        _heat_up()
        spin = SPIN_SECONDS > 0 and threads <= _cpus()
        try:
            for worker, part in zip(workers, parts[1:]):
                worker.submit(lambda part=part: run(part), spin)
        except BaseException:  # Ctrl-C while handing out work: some workers have a task, some not
            _retire_workers()
            raise
        try:
            results = run(parts[0])  # this thread takes the first share
        finally:
            try:
                done = [worker.join() for worker in workers]  # every worker, even if ours failed
            except BaseException:  # Ctrl-C between two joins: a worker is out of step with its caller
                _retire_workers()
                raise
        for ok, value in done:
            if not ok:
                raise value
            results += value
        return results
    finally:
        _last_call = time.perf_counter()
        _busy.release()


def _held_lock():
    """A lock, already acquired, that another thread releases to hand something over.

    A pthread spin lock where glibc has one: acquire() busy-waits in C, and ctypes drops the
    GIL around the call, so a waiting thread holds a core but not the interpreter. Elsewhere a
    threading.Semaphore(0), whose acquire() sleeps: slower hand-offs, same answers. Neither
    minds a release with nobody waiting (a retired worker's last one).
    """
    if _libc_spin() is None:
        return threading.Semaphore(0)
    lock = _SpinLock()
    lock.acquire()
    return lock


class _SpinLock:
    """pthread_spinlock_t (an int on Linux) with acquire() and release()."""

    def __init__(self):
        init, self._lock, self._unlock = _libc_spin()
        self._int = ctypes.c_int(0)
        self._ref = ctypes.byref(self._int)
        init(self._ref, 0)

    def acquire(self):
        self._lock(self._ref)

    def release(self):
        self._unlock(self._ref)


def _libc_spin():
    """glibc's (pthread_spin_init, pthread_spin_lock, pthread_spin_unlock), or None."""
    if not _spin_functions:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _spin_functions.append((libc.pthread_spin_init, libc.pthread_spin_lock, libc.pthread_spin_unlock))
        except (OSError, AttributeError):  # no glibc (macOS, Windows)
            _spin_functions.append(None)
    return _spin_functions[0]


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
