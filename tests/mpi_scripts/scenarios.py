"""Scenarios for tests/test_distributed.py, run under mpiexec (or alone: the
single-process reference). ``python scenarios.py MODE OUTDIR [distributed]``.

early   validation split, EarlyStopping (restore best), ReduceLROnPlateau, Checkpoint
resume  2 epochs with a Checkpoint of the trainer, load it on every rank, 2 more epochs
fail    rank 1 raises in the middle of an epoch: every rank must end, non-zero, at once
"""
import json
import os
import sys

import numpy as np

import fastopt as fo

mode, outdir = sys.argv[1], sys.argv[2]
distributed = "distributed" in sys.argv[3:]
comm = None
if distributed:
    from fastopt.distributed import world
    comm = world()
rank = 0 if comm is None else comm.rank

rng = np.random.default_rng(1)
X = rng.normal(size=(157, 12))
y = (X[:, 0] - X[:, 1] + 0.3 * rng.normal(size=157) > 0).astype(int)


def make_trainer(callbacks=()):
    model = fo.Sequential([fo.Dense(16, use_bias=False), fo.BatchNorm(), fo.Activation("relu"),
                           fo.Dropout(0.25), fo.Dense(2)], input_dim=12, dtype="float64",
                          seed=rank * 11)   # the broadcast makes every rank rank 0's
    return fo.Trainer(model, loss="softmax_cross_entropy", optimizer=fo.optim.Adam(lr=3e-2),
                      metrics=["accuracy"], callbacks=list(callbacks), comm=comm)


def dump(name, trainer, history, **extra):
    every = [trainer.model.arena.data.tobytes()] if comm is None else \
        comm.allgather(trainer.model.arena.data.tobytes())
    if rank == 0:
        np.savez(os.path.join(outdir, name), params=trainer.model.arena.data)
        with open(os.path.join(outdir, name + ".json"), "w") as f:
            json.dump({"epochs": history.epoch, "history": history.history,
                       "identical": len(set(every)) == 1, "step_count": trainer.step_count,
                       "restored": history.restored_epoch, **extra}, f)


if mode == "early":
    ckpt = fo.Checkpoint(os.path.join(outdir, "best.npz"), save_best_only=True)
    trainer = make_trainer([fo.EarlyStopping(patience=2), fo.ReduceLROnPlateau(patience=1),
                            ckpt])
    h = trainer.fit(X, y, epochs=40, batch_size=32, validation_split=0.25, seed=5, verbose=0)
    saved = [len(ckpt.saved)] if comm is None else comm.allgather(len(ckpt.saved))
    dump("early", trainer, h, saved=saved)
elif mode == "resume":
    path = os.path.join(outdir, "trainer.npz")
    trainer = make_trainer([fo.Checkpoint(path)])
    trainer.fit(X, y, epochs=2, batch_size=24, seed=2, verbose=0)
    if comm is not None:
        from fastopt.distributed import load
        trainer = load(path, comm)
    else:
        trainer = fo.load(path)
    h = trainer.fit(X, y, epochs=2, batch_size=24, seed=2, verbose=0)
    dump("resume", trainer, h)
elif mode == "fail":
    class Boom(fo.callbacks.Callback):
        def on_batch_end(self, trainer, step, logs):
            if rank == 1 and step == 3:
                raise RuntimeError("deliberate failure on rank 1")
    trainer = make_trainer([Boom()])
    trainer.fit(X, y, epochs=50, batch_size=8, seed=0, verbose=0)
    print("rank", rank, "finished: the failure did not end it", flush=True)
elif mode == "interrupt":
    class Started(fo.callbacks.Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 1:
                print("rank", rank, "training", flush=True)
    trainer = make_trainer([Started()])
    h = trainer.fit(X, y, epochs=100000, batch_size=8, seed=0, verbose=0)
    every = [trainer.step_count] if comm is None else comm.allgather(trainer.step_count)
    with open(os.path.join(outdir, f"interrupt-{rank}.json"), "w") as f:
        json.dump({"interrupted": h.interrupted, "steps": every}, f)
elif mode == "threads":
    trainer = make_trainer()
    with open(os.path.join(outdir, f"threads-{rank}.json"), "w") as f:
        json.dump({"threads": fo.get_num_threads()}, f)
