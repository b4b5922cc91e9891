"""Run folders: one run at a time, no leftovers, no silent overwrite, and one line for each fault.

A run folder (train.py's --out_dir) holds a run's checkpoint, token files and metrics. A
script holds it for its whole life:

    with hold_run_folder(out_dir, "train.py", fresh=True, overwrite=False):
        ...                                   # train, writing into out_dir

Taking the folder, before any work, checks in this order (each failure is one RunFolderError line):
  writable   the folder, or the nearest existing folder above it, can be written (check_writable):
             a read-only mount or a file in the way is found now, not at the first checkpoint
  lock       out_dir/run.lock is locked with flock(2) and names its holder (process id, host, script);
             a second run on the folder stops at once naming that process. The kernel releases
             the lock when its holder dies, even by kill -9, so a stale lock is taken over silently,
             and flock works across the machines of an NFS mount.
  overwrite  a fresh run (not a resume) into a folder that holds a checkpoint stops, naming
             --init_from=resume and --overwrite=true; with overwrite the old checkpoint is removed
             first, so the folder never mixes the old run's checkpoint with the new run's data
  leftovers  temporary files of atomic_write (gpt/safetensors.py) that a killed process left in
             the folder or below it are removed: the lock proves no live writer owns them
When the body raises, a folder that this call created and that holds neither a checkpoint nor a
logged metric is removed again (a failed start leaves nothing behind, while a run that failed after
it began keeps its metrics.jsonl, the record of what went wrong), and the lock is always released. Under mpiexec rank
0 takes the folder and every rank stops with its one line if that fails.

A full disk is found by the writers (atomic_write, and append_line here for the metrics log):
the partial file is removed and DiskFullError names the folder and the bytes it needed.

Left out: locking on systems without fcntl.flock (Windows), where the folder is not locked;
waiting for a lock to be freed.
"""
import contextlib
import json
import os
import shutil
import socket
import time

from nanograd import distributed

from .checkpoint import FILENAME
from .safetensors import DISK_FULL, TEMPORARY, DiskFullError, no_space_message

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK = "run.lock"
METRICS = "metrics.jsonl"  # the log train.py appends to: a run that wrote a row has begun


class RunFolderError(ValueError):
    """A run folder that cannot be used now; the message names the folder and what to do."""


def check_writable(path, option, folder=True):
    """RunFolderError, naming `option`, unless `path` can be written: a folder (`folder`), or a
    file, which is created or replaced. A missing folder is fine if the nearest existing folder
    above it is writable (it will be created); a file's own folder must exist."""
    shown, path = os.fspath(path), os.path.abspath(path)
    target = path if folder else os.path.dirname(path)
    if not folder and not os.path.exists(target):
        raise RunFolderError(f"{option}={shown}: its folder {target} does not exist: create it or choose another path")
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise RunFolderError(f"{option}={shown}: {existing} is a file, not a folder: choose another {option}")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "on a read-only file system" if _read_only(existing) else "not writable by this user"
        raise RunFolderError(f"{option}={shown}: {existing} is {why}: choose another {option}")
    if not folder and os.path.isdir(path):
        raise RunFolderError(f"{option}={shown} is a folder: give a file name")


def _read_only(path):
    return hasattr(os, "statvfs") and bool(os.statvfs(path).f_flag & os.ST_RDONLY)


@contextlib.contextmanager
def hold_run_folder(out_dir, what, fresh=False, overwrite=False, world=None, option="--out_dir"):
    """Hold `out_dir` for the body (see the module docstring): checked, created, locked, cleaned.

    `what` names the holder in the lock ("train.py"); `fresh` marks a run that starts anew and
    must not replace a checkpoint unless `overwrite`; `option` is the script's name for out_dir.
    `world` (nanograd.distributed) makes rank 0 the holder; every rank raises the same error
    if rank 0 cannot take the folder.
    """
    world = world or distributed.World()
    folder, error = None, None
    if world.is_main:
        try:
            folder = _RunFolder(out_dir, what, option)
            folder.prepare(fresh, overwrite)
        except RunFolderError as e:
            error = e.args[0]
    error = world.broadcast(error, "rank 0 to take the run folder")
    if error:
        raise distributed.on_every_rank(RunFolderError(error))
    try:
        yield
    except BaseException:
        if folder is not None:
            folder.remove_if_unused()
        raise
    finally:
        if folder is not None:
            folder.release()


class _RunFolder:
    """The folder rank 0 holds: checked, created if missing (remembering what it created), locked."""

    def __init__(self, out_dir, what, option):
        check_writable(out_dir, option)
        self.out_dir, self.lock = out_dir, None
        self.created = _top_missing(os.path.abspath(out_dir))  # the outermost folder made here, or None
        try:
            os.makedirs(out_dir, exist_ok=True)
            self.lock = _take_lock(os.path.join(out_dir, LOCK), what, option)
        except BaseException as e:
            self.remove_if_unused()
            if isinstance(e, OSError):  # what check_writable cannot foresee: /proc, /sys, a full inode table
                raise RunFolderError(f"{option}={out_dir}: cannot write there ({e.strerror}: {e.filename}): "
                                     f"choose another {option}") from None
            raise

    def prepare(self, fresh, overwrite):
        """Refuse (or, with `overwrite`, remove) an old checkpoint when `fresh`; remove leftovers."""
        try:
            checkpoint = os.path.join(self.out_dir, FILENAME)
            if fresh and os.path.exists(checkpoint):
                if not overwrite:
                    raise RunFolderError(
                        f"{self.out_dir} already holds a checkpoint ({FILENAME}): continue that run with "
                        "--init_from=resume, or start over with --overwrite=true (the old run is replaced)")
                os.unlink(checkpoint)
                print(f"--overwrite=true: removed the old run's {checkpoint}")
            removed = remove_leftovers(self.out_dir)
            if removed:
                print(f"removed {len(removed)} temporary file(s) that interrupted runs left in {self.out_dir}")
        except BaseException:
            self.release()
            raise

    def remove_if_unused(self):
        """Remove the folders this run created, unless the run got as far as a checkpoint or a
        logged metric (a non-empty metrics.jsonl) in them."""
        metrics = os.path.join(self.out_dir, METRICS)
        began = os.path.exists(os.path.join(self.out_dir, FILENAME)) or \
            (os.path.exists(metrics) and os.path.getsize(metrics) > 0)
        if self.created and not began:
            self.release()
            shutil.rmtree(self.created, ignore_errors=True)

    def release(self):
        """Delete the lock file, then unlock it (in this order, see _take_lock)."""
        if self.lock is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.out_dir, LOCK))
            os.close(self.lock)
            self.lock = None


def _top_missing(path):
    """The outermost missing folder on the way to `path` (os.makedirs creates it and all below), or None."""
    top = None
    while not os.path.exists(path):
        top, path = path, os.path.dirname(path)
    return top


def _take_lock(path, what, option):
    """An open, flock-ed descriptor of `path`, now naming this process; RunFolderError if a live process
    holds it. A lock file unlinked by its holder between our open and flock is retried."""
    if fcntl is None:
        return None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunFolderError(f"{os.path.dirname(path)} is in use by {_holder(path)}: wait for that run to end "
                                 f"or stop it, or choose another {option}") from None
        except BaseException:
            os.close(fd)
            raise
        if os.path.exists(path) and os.path.samestat(os.fstat(fd), os.stat(path)):
            break
        os.close(fd)  # the holder released and removed it meanwhile: lock the new file
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(holder) + "\n").encode())
    return fd


def _holder(path):
    """'train.py (process 1234 on host, since ...)', read from a lock file its holder is writing."""
    for _ in range(20):  # the holder writes its line just after locking: give it a moment
        with contextlib.suppress(OSError, ValueError):
            with open(path) as fh:
                h = json.loads(fh.read())
            return f"{h['what']} (process {h['pid']} on {h['host']}, since {h['since']})"
        time.sleep(0.05)
    return "another process (its lock file names none)"


def remove_leftovers(out_dir):
    """Remove the temporary files (TEMPORARY) that killed writers left in `out_dir` and the folders
    under it; returns their paths. Only for the holder of the folder's lock: a live writer's
    temporary file would go too. A folder below holding a lock file of its own is another run's."""
    removed = []
    for folder, subfolders, names in os.walk(out_dir):
        subfolders[:] = [d for d in sorted(subfolders) if not os.path.exists(os.path.join(folder, d, LOCK))]
        for name in sorted(names):
            if TEMPORARY.search(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
                    removed.append(os.path.join(folder, name))
    return removed


def append_line(path, line):
    """Append `line` and a newline to `path`; on a full disk the file is cut back to where it was
    (no partial line) and DiskFullError is raised, naming the folder and the bytes needed."""
    data = memoryview((line + "\n").encode())
    size = len(data)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError as e:
            if e.errno not in DISK_FULL:
                raise
            os.ftruncate(fd, start)
            raise DiskFullError(no_space_message(path, size)) from None
    finally:
        os.close(fd)
