"""Summing gradients across processes: a few large buckets, each all-reduced in one call.

Data-parallel training (nanograd/distributed.py) ends every backward pass with the same
question: what is the sum over all ranks of each parameter's gradient? Asking once per
parameter would pay the network's latency a hundred times a step (GPT-2 has 148 parameter
tensors, many of a few KB). So, as PyTorch's DistributedDataParallel does, the gradients
are packed into buckets of about BUCKET_BYTES, and each bucket is summed in one call:

    bucket = [g_1.ravel(), g_2.ravel(), ...]         (n,) one flat buffer, copied in
    bucket <- sum over ranks r of bucket_r           the all-reduce, in place
    g_i    <- bucket[o_i : o_i + n_i].reshape(s_i)    views, no copy out

After `sum_(params)` every rank holds the same summed gradients (the ranks' sums are
bit-identical: MPI's and NCCL's reductions hand every rank the one result), so every
rank's optimizer makes the same step. The gradients are left as views into the buckets
until the next call overwrites them; that is safe because the optimizers and
`clip_grad_norm_` only read or rebind `.grad` (tensor.py's invariant), and `zero_grad`
drops them before the next backward.

Two ways to run the sum, chosen by nanograd/distributed.py:
  MPISum    MPI_Allreduce (mpi4py) on host memory; a CuPy bucket goes through the host.
  NCCLSum   NVIDIA's NCCL all-reduce (cupy.cuda.nccl) on the GPU, in the current stream.

Left out: overlapping the all-reduce with the backward pass (each bucket could start as
soon as its last gradient is final; DDP does this with autograd hooks, nanograd has none),
gradient compression, reduce-scatter for sharded optimizers (ZeRO).
"""
import time

import numpy as np

from . import backend

BUCKET_BYTES = 25 << 20  # PyTorch DDP's default bucket_cap_mb=25: a few buckets even for GPT-2 (124M: 20)


def plan_buckets(params, bucket_bytes=BUCKET_BYTES):
    """Group params (in order) into buckets: lists of parameters whose gradients together
    fill about bucket_bytes, with one dtype per bucket. A gradient larger than bucket_bytes
    gets a bucket of its own."""
    buckets, size = [], 0
    for p in params:
        nbytes = p.grad.nbytes
        if not buckets or size + nbytes > bucket_bytes or p.grad.dtype != buckets[-1][0].grad.dtype:
            buckets.append([])
            size = 0
        buckets[-1].append(p)
        size += nbytes
    return [b for b in buckets if b]


class GradientBuckets:
    """Sums gradients over the ranks with `reducer` (MPISum or NCCLSum), bucket by bucket.

    The flat buffers are allocated on the first call and reused while the set of
    parameters with a gradient (and their shapes) stays the same.
    """

    def __init__(self, reducer, bucket_bytes=BUCKET_BYTES):
        self.reducer, self.bucket_bytes = reducer, bucket_bytes
        self._key, self._buffers, self._plan = None, [], []
        self.seconds = 0.0  # time spent in the all-reduce calls themselves (for benchmarks)
        self.bytes_per_call = []  # each bucket's size in bytes, as last used

    def sum_(self, params):
        """Replace every p.grad by its sum over all ranks (params without a gradient are skipped)."""
        params = [p for p in params if p.grad is not None]
        self._prepare(params)
        for members, flat in zip(self._plan, self._buffers):
            offset = 0
            for p in members:                               # copy in: flat[o:o+n] = g.ravel()
                n = p.grad.size
                flat[offset:offset + n] = p.grad.reshape(-1)
                offset += n
            start = time.perf_counter()
            self.reducer(flat)                              # flat <- sum over ranks, in place
            self.seconds += time.perf_counter() - start
            offset = 0
            for p in members:                               # views out: g = flat[o:o+n].reshape(s)
                n = p.grad.size
                p.grad = flat[offset:offset + n].reshape(p.grad.shape)
                offset += n

    def _prepare(self, params):
        """(Re)build the plan and the flat buffers if the parameters or their shapes changed."""
        key = tuple((id(p), p.grad.shape, p.grad.dtype.str, backend.device_of(p.grad)) for p in params)
        if key == self._key:
            return
        self._plan = plan_buckets(params, self.bucket_bytes)
        self._buffers = [backend.get_array_module(b[0].grad).empty(sum(p.grad.size for p in b), b[0].grad.dtype)
                         for b in self._plan]
        self.bytes_per_call = [int(f.nbytes) for f in self._buffers]
        self._key = key


class MPISum:
    """flat <- the sum of every rank's flat, with MPI_Allreduce on host memory.

    A CuPy array is copied to the host and back: the fallback when NCCL is missing.
    """

    def __init__(self, comm):
        from mpi4py import MPI
        self.comm, self.in_place = comm, MPI.IN_PLACE

    def __call__(self, flat):
        if isinstance(flat, np.ndarray):
            self.comm.Allreduce(self.in_place, flat)
            return
        host = backend.to_device(flat, "cpu")               # CuPy -> NumPy
        self.comm.Allreduce(self.in_place, host)
        flat.set(host)


class NCCLSum:
    """flat <- the sum of every rank's flat, with NCCL on the GPU.

    NCCL needs every rank to join one communicator, named by a unique id that rank 0
    draws and MPI broadcasts. The all-reduce is queued on the current CUDA stream; we wait
    for it, so that a rank that died shows up as a wait the watchdog (distributed.py) ends.
    """

    def __init__(self, comm):
        from cupy.cuda import nccl
        uid = comm.bcast(nccl.get_unique_id() if comm.rank == 0 else None, root=0)
        self.nccl = nccl
        self.comm = nccl.NcclCommunicator(comm.size, uid, comm.rank)
        self.types = {np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.float32): nccl.NCCL_FLOAT32,
                      np.dtype(np.float64): nccl.NCCL_FLOAT64}

    def __call__(self, flat):
        import cupy
        stream = cupy.cuda.get_current_stream()
        self.comm.allReduce(flat.data.ptr, flat.data.ptr, flat.size, self.types[flat.dtype], self.nccl.NCCL_SUM,
                            stream.ptr)
        stream.synchronize()


def nccl_available():
    """True when CuPy was built with NCCL (cupy.cuda.nccl imports and says it is available)."""
    try:
        from cupy.cuda import nccl
    except ImportError:
        return False
    return bool(getattr(nccl, "available", True))
