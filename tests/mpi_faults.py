"""train.py with a fault planted on one rank, for tests/test_distributed.py (not a test itself).

    mpiexec -n 2 python tests/mpi_faults.py FAULT RANK ITERATION [train.py options]

FAULT is one of
  nan      that rank's loss becomes NaN from ITERATION on (its forward pass returns loss * nan)
  raise    that rank raises RuntimeError at ITERATION, in its training step
  drift    that rank's first weight is nudged at ITERATION, so the replicas differ
  hang     that rank sleeps forever at ITERATION, leaving the others waiting in a collective
Every other rank, and every iteration before ITERATION, runs train.py unchanged.
"""
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import train  # noqa: E402
from gpt.cli import run_main  # noqa: E402

FAULT, RANK, ITERATION = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def plant(trainer_cls):
    """Wrap Trainer.train_step so that on rank RANK, from iteration ITERATION, the fault happens."""
    step = trainer_cls.train_step

    def faulty_step(self):
        if self.world.rank == RANK and self.iter_num >= ITERATION:
            if FAULT == "raise":
                raise RuntimeError(f"planted fault at iteration {self.iter_num}")
            while FAULT == "hang":
                time.sleep(1)
            if FAULT == "drift":
                self.model.parameters()[0].data[...] += 1e-3
            if FAULT == "nan" and "forward" not in vars(self.model):
                forward = self.model.forward
                self.model.forward = lambda *a, **k: (lambda out: (out[0], out[1] * float("nan")))(forward(*a, **k))
        return step(self)

    trainer_cls.train_step = faulty_step


plant(train.Trainer)
run_main(train.main, sys.argv[4:])
