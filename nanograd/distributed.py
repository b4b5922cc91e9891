"""Data-parallel training over several processes: who I am, what we agree on, how we fail.

    mpiexec -n 4 python train.py ...     # 4 ranks, each with a full copy of the model

Each rank draws every micro-batch of an iteration from the same data stream but runs
forward and backward only on its own share (`World.owns`), so N ranks see exactly the
batches one process would. Their gradients are then summed across ranks
(nanograd/allreduce.py): with the loss of micro-batch k scaled by 1/K, as in gradient
accumulation,

    g = sum over ranks r of sum over k owned by r of grad(loss_k / K)
      = sum over k of grad(loss_k) / K           the one-process gradient, up to float order

and every rank applies the same optimizer step to the same weights. A `World` holds the
rank's place (rank, size, local rank on its machine) and the few collective operations the
training loop needs. Without an MPI launcher (or with one process) `init` returns a World of
size 1 whose methods do nothing and never import mpi4py.

Faults. A rank that raises ends the whole job: `fail_together` prints one line naming the
rank and leaves with os._exit, and the launcher (MPICH's mpiexec, Open MPI's mpirun) kills
the others, which are waiting in a collective. An error every rank raises together
(`on_every_rank`: a non-finite loss, weights that drifted apart) is printed once, by rank 0.
A rank killed by a signal (kill -9, the out-of-memory killer) can say nothing, and MPICH's
mpiexec SIGKILLs every other rank within milliseconds, so none of them can either: a small
witness process beside each rank (`_start_witness`) prints the one line naming it. For
launchers that leave the others running (`mpiexec -disable-auto-cleanup` after a rank's
error exit, `srun` without --kill-on-bad-exit) a watchdog thread ends a rank whose collective
has waited more than TIMEOUT seconds, with one line. Only rank 0 prints to stdout; the
others' stdout is discarded.

Left out: elastic membership (a lost rank is not replaced), model or pipeline parallelism,
sharded optimizer states (ZeRO), overlapping communication with the backward pass.
"""
import atexit
import contextlib
import hashlib
import math
import os
import socket
import subprocess
import sys
import threading
import time
import traceback

import numpy as np

from . import backend, parallel
from .allreduce import GradientBuckets, MPISum, NCCLSum, nccl_available

TIMEOUT = float(os.environ.get("NANOGRAD_DIST_TIMEOUT", 30))  # seconds a collective may wait for the others
LONG_TIMEOUT = 600.0  # for the wait while rank 0 writes a checkpoint
# The variables MPI launchers set in each process: MPICH/Intel MPI (PMI), Open MPI, PMIx (Slurm, Open MPI 5).
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
MPI_HINT = "pip install -e '.[mpi]' (or: pip install mpi4py mpich)"
# The witness of one rank (see _start_witness), run as `python -c _WITNESS PARENT LINE CHECKPOINT`:
# it waits until its parent rank has gone, then prints LINE (and that CHECKPOINT is intact).
_WITNESS = """\
import os, signal, sys, time
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(sig, signal.SIG_IGN)  # what the launcher forwards to the ranks is for them
parent, line, checkpoint = int(sys.argv[1]), sys.argv[2], sys.argv[3]
while os.getppid() == parent:
    time.sleep(0.05)
if checkpoint and os.path.exists(checkpoint):
    line += f" The last checkpoint, {checkpoint}, is intact."
os.write(2, (line + "\\n").encode())
"""
_witness = None  # this rank's witness (a subprocess.Popen) while the rank runs


class LaunchError(ValueError):
    """A launch that cannot work (the launcher's MPI is not mpi4py's); the message says the fix."""


class ReplicaError(ValueError):
    """The ranks' copies of the weights differ: a bug or a hardware fault, never expected."""


def on_every_rank(error):
    """Mark `error` as raised by every rank at the same point of the program (the ranks agreed
    on it through a collective), so `fail_together` prints it once and ends the job cleanly."""
    error.on_every_rank = True
    return error


def launched_size():
    """The number of processes an MPI launcher started (from its environment variables); 1 if none."""
    if not any(v in os.environ for v in _RANK_VARS):
        return 1
    for var in _SIZE_VARS:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 2  # launched, size unknown (PMIx): assume several, so mpi4py is imported and asked


def _launched_rank():
    return next(int(os.environ[v]) for v in _RANK_VARS if os.environ.get(v, "").isdigit())


def init(device="cpu", micro_batches=1, checkpoint=None):
    """The World of this process: size 1 without a launcher, else MPI's COMM_WORLD.

    Checks, with one line each naming the fix: mpi4py missing, `micro_batches` (the global
    gradient_accumulation_steps) not divisible by the world size, more ranks on a machine
    than it has GPUs. Rank 0 prints the line and every rank exits with status 2.
    Under MPI it also gives each rank its share of the machine's cores and, for
    device='cuda', its own GPU (the local rank) and an NCCL communicator, and starts the
    rank's witness, whose line names `checkpoint` (the file rank 0 saves to) if it exists.
    """
    size = launched_size()
    if size == 1:
        return World()
    _start_witness(_launched_rank(), checkpoint)
    try:
        from mpi4py import MPI
    except ImportError:
        _fail_launch(_launched_rank(), None, f"this was started by an MPI launcher ({size} processes) but "
                                             f"mpi4py is not installed: {MPI_HINT}, or run without mpiexec")
    comm = MPI.COMM_WORLD
    if comm.size == 1 and size > 1 and any(v in os.environ for v in _SIZE_VARS):
        raise LaunchError(f"the launcher started {size} processes but MPI sees each alone: mpi4py's MPI is not the "
                          "launcher's; use the mpiexec of the MPI that mpi4py was built with (pip's mpich: the "
                          "mpiexec beside python)")
    if comm.size == 1:
        return World()
    if micro_batches % comm.size:
        nearest = comm.size * max(1, micro_batches // comm.size)
        _fail_launch(comm.rank, comm, f"gradient_accumulation_steps={micro_batches} (the micro-batches per "
                                      f"iteration, over all ranks) is not divisible by the {comm.size} ranks: set it "
                                      f"to a multiple of {comm.size}, e.g. --gradient_accumulation_steps={nearest}")
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks on this machine
    local_rank, local_size = local.rank, local.size
    local.Free()
    _share_cores(local_size)
    reducer = MPISum(comm)
    if device == "cuda":
        reducer = _use_gpu(comm, local_rank, local_size) or reducer
    if comm.rank > 0:
        sys.stdout = open(os.devnull, "w")  # rank 0 alone prints
    return World(comm, local_rank, reducer)


def _fail_launch(rank, comm, message):
    """Rank 0 prints `error: message` (as gpt/cli.py would); every rank leaves with status 2.

    Rank 0 must have printed before any rank leaves, because the launcher ends the job as soon
    as one process exits with an error: with MPI running a barrier orders that; without it (no
    mpi4py) the other ranks wait for the launcher to end them once rank 0 has left.
    """
    _dismiss_witness()
    if rank == 0:
        print(f"error: {message}", file=sys.stderr, flush=True)
    if comm is not None:
        comm.Barrier()
    elif rank != 0:
        time.sleep(30)
    os._exit(2)


def _start_witness(rank, checkpoint):
    """Start this rank's witness: a small process that prints one line if the rank dies unheard.

    A rank killed by a signal cannot speak, and MPICH's mpiexec answers its death by sending
    SIGKILL to the process group of every other rank within milliseconds (measured: 0-4 ms;
    the survivors get no SIGTERM first), so none of them can speak either. The witness
    (_WITNESS) outlives its rank, and three facts make its line the only one:
      - it holds copies of the rank's stdout, stderr and (MPICH) PMI connection, the pipes
        through which MPICH's launcher sees a death, so the launcher learns of it only when
        the witness has spoken and exited (or when another rank's output wakes it, and then
        it kills the others' process groups but not the dead rank's: measured, see
        docs/distributed.md);
      - it stays in the rank's process group, so the witnesses of the ranks the launcher
        kills die with them, unheard;
      - a rank that leaves on purpose (an error it printed, or the end of training)
        dismisses its witness first (_dismiss_witness).
    It starts before MPI does, so no MPI state is copied into it.
    """
    global _witness
    if os.name != "posix":  # it relies on POSIX process groups
        return
    line = (f"error: rank {rank} ({socket.gethostname()}) died without a word (killed by a signal: kill -9, "
            "the out-of-memory killer?); the job stops.")
    pmi = [int(fd) for fd in [os.environ.get("PMI_FD", "")] if fd.isdigit()]
    _witness = subprocess.Popen([sys.executable, "-I", "-S", "-c", _WITNESS, str(os.getpid()), line, checkpoint or ""],
                                stdin=subprocess.DEVNULL, pass_fds=pmi)
    atexit.register(_dismiss_witness)


def _dismiss_witness():
    """This rank leaves on purpose (having said why, if it failed): end its witness, unheard."""
    if _witness is not None:
        _witness.kill()
        _witness.wait()


def _share_cores(local_size):
    """Give each of the local_size ranks on this machine its share of the cores, unless the user
    chose (NANOGRAD_NUM_THREADS for nanograd's kernels, OPENBLAS_NUM_THREADS for matmul)."""
    threads = max(1, len(os.sched_getaffinity(0)) // local_size) if hasattr(os, "sched_getaffinity") else 1
    if "NANOGRAD_NUM_THREADS" not in os.environ:
        parallel.set_num_threads(threads)
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        with contextlib.suppress(ImportError):  # threadpoolctl comes with the [mpi] extra
            from threadpoolctl import threadpool_limits
            threadpool_limits(threads, user_api="blas")


def _use_gpu(comm, local_rank, local_size):
    """Select GPU `local_rank`; return an NCCLSum, or None (MPI through the host) without NCCL."""
    import cupy
    count = cupy.cuda.runtime.getDeviceCount()
    problem = (f"{local_size} ranks on {socket.gethostname()} but it has {count} GPU(s): start at most {count} per "
               f"machine (mpiexec -n {count}, or -ppn {count} with a hostfile), or use --device=cpu"
               if local_size > count else None)
    problem = next((p for p in comm.allgather(problem) if p), None)  # machines may differ: all must agree
    if problem:
        _fail_launch(comm.rank, comm, problem)
    cupy.cuda.Device(local_rank).use()
    if nccl_available():
        return NCCLSum(comm)
    if comm.rank == 0:
        print("NCCL is missing from this CuPy: gradients are summed through host memory with MPI (slower)")
    return None


class World:
    """This rank's place among `size` processes, and the collectives the training loop uses.

    With comm=None it is a single process: rank 0 of 1, and every method is trivial.
    """

    def __init__(self, comm=None, local_rank=0, reducer=None):
        self.comm = comm
        self.rank, self.size = (comm.rank, comm.size) if comm is not None else (0, 1)
        self.local_rank = local_rank
        self.is_main = self.rank == 0
        self.buckets = GradientBuckets(reducer) if reducer is not None else None
        self._waiting = None  # (what, since, timeout) while inside a collective
        if comm is not None:
            threading.Thread(target=self._watch, daemon=True, name="nanograd-watchdog").start()

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"

    # ---- who does what ---------------------------------------------------------------------------
    def owner(self, k, n):
        """The rank that runs item k of n (micro-batches, evaluation batches): contiguous blocks,
        rank r taking k in [r n / size, (r + 1) n / size)."""
        return k * self.size // n

    def owns(self, k, n):
        return self.owner(k, n) == self.rank

    # ---- collectives -----------------------------------------------------------------------------
    def gather_in_order(self, values):
        """Every rank's list `values` (its items, in order), concatenated by rank, on every rank.

        With contiguous ownership (owner) this is the items in their original order k = 0..n-1.
        """
        if self.size == 1:
            return list(values)
        with self._collective("gathering the losses"):
            return [v for part in self.comm.allgather(list(values)) for v in part]

    def first(self, value):
        """The first not-None `value` over the ranks (by rank), or None: e.g. the signal any rank got."""
        if self.size == 1:
            return value
        with self._collective("agreeing whether to stop"):
            return next((v for v in self.comm.allgather(value) if v is not None), None)

    def broadcast(self, value, what="rank 0's work"):
        """Rank 0's `value` on every rank (others pass anything); waits as long as rank 0 takes
        (preparing a dataset may take hours; if rank 0 dies, the launcher ends the job)."""
        if self.size == 1:
            return value
        with self._collective(f"waiting for {what}", math.inf):
            return self.comm.bcast(value, root=0)

    def barrier(self, what="rank 0's work"):
        """Wait until every rank gets here (up to LONG_TIMEOUT: after rank 0 wrote a checkpoint)."""
        if self.size > 1:
            with self._collective(f"waiting for {what}", LONG_TIMEOUT):
                self.comm.Barrier()

    def sum_gradients(self, params):
        """p.grad <- sum over ranks of p.grad, for every parameter, in a few buckets (allreduce.py)."""
        if self.size > 1:
            with self._collective("the gradient all-reduce"):
                self.buckets.sum_(params)

    def check_replicas(self, params, iteration):
        """Raise ReplicaError (on every rank) unless all ranks hold bit-identical parameters."""
        if self.size == 1:
            return
        digest = hashlib.sha256()
        for p in params:
            digest.update(np.ascontiguousarray(backend.to_device(p.data, "cpu")).reshape(-1).view(np.uint8))
        with self._collective("comparing parameter checksums"):
            digests = self.comm.allgather(digest.hexdigest())
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            raise on_every_rank(ReplicaError(
                f"at iteration {iteration} the weights of rank(s) {differ} differ from rank 0's (sha256 "
                f"{digests[differ[0]][:12]} vs {digests[0][:12]}): the replicas drifted apart; resume from the "
                "last checkpoint (--init_from=resume) and report this"))

    # ---- random streams --------------------------------------------------------------------------
    def seed(self, seed, *more):
        """An integer seed for this rank's random stream, derived from (seed, rank, *more)."""
        return int(np.random.SeedSequence([seed, self.rank, *more]).generate_state(1)[0])

    def gather_states(self, state):
        """Every rank's `state` (a JSON-able dict, e.g. its random generator's), as a list on every rank."""
        if self.size == 1:
            return [state]
        with self._collective("gathering the random streams"):
            return self.comm.allgather(state)

    # ---- faults ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def fail_together(self, expected=(ValueError,)):
        """Run the body; if it raises on this rank, end the whole job with one line and no hang.

        An error marked on_every_rank is printed by rank 0 only ("error: ..."); any other is
        printed as "error: rank R: ..." (after its traceback unless it is one of `expected`,
        the errors that describe bad input). Either way the rank leaves at once with os._exit:
        a normal exit would wait in MPI_Finalize for ranks that still wait for this one.
        """
        if self.size == 1:
            yield
            return
        try:
            yield
        except (Exception, KeyboardInterrupt) as e:
            message = e.args[0] if e.args and isinstance(e.args[0], str) else (str(e) or type(e).__name__)
            if getattr(e, "on_every_rank", False):
                line = f"error: {message}" if self.is_main else None
            else:
                if not isinstance(e, expected):
                    traceback.print_exc()
                    message = f"{type(e).__name__}: {message}"
                line = f"error: rank {self.rank} ({socket.gethostname()}): {message}"
            self._leave(line, 130 if isinstance(e, KeyboardInterrupt) else 2)

    @staticmethod
    def _leave(line, status):
        """Print `line` (if any) on stderr, flush everything, and end this process now."""
        _dismiss_witness()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            if line:
                print(line, file=sys.stderr, flush=True)
        os._exit(status)

    @contextlib.contextmanager
    def _collective(self, what, timeout=None):
        """Mark the body as a wait on the other ranks, for the watchdog."""
        self._waiting = (what, time.monotonic(), TIMEOUT if timeout is None else timeout)
        try:
            yield
        finally:
            self._waiting = None

    def _watch(self):
        """The watchdog thread: end this rank if a collective has waited longer than its timeout.

        mpi4py and CuPy release the GIL while they wait, so this thread runs meanwhile.
        """
        while True:
            time.sleep(1.0)
            waiting = self._waiting
            if waiting is not None and time.monotonic() - waiting[1] > waiting[2]:
                self._leave(f"error: rank {self.rank} ({socket.gethostname()}): no answer from the other ranks for "
                            f"{waiting[2]:.0f} s in {waiting[0]}: one of them died or hangs (see its messages); "
                            "the last checkpoint is intact", 3)
