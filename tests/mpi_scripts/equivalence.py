"""Run under mpiexec (or alone, as the single-process reference): train the mnist-style
BN + Dropout + Adam model for a few steps and write the parameters (rank 0) to OUT.

    python equivalence.py OUT DTYPE ROWS BATCH STEPS [distributed]
"""
import sys
import zlib

import numpy as np

import fastopt as fo

out, dtype, rows, batch, steps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
distributed = len(sys.argv) > 6 and sys.argv[6] == "distributed"
weighted = "weighted" in sys.argv[6:]
BIAS = "bias" in sys.argv[6:]

rng = np.random.default_rng(0)
X = rng.normal(size=(rows, 20))
y = (X[:, :3].sum(axis=1) > 0).astype(int) + (X[:, 3] > 0.5)


def build(seed):
    if "nobn" in sys.argv[6:]:     # no batch norm: the one-call step with a row offset
        layers = [fo.Dense(32, activation="relu"), fo.Dropout(0.2),
                  fo.Dense(16, activation="tanh"), fo.Dropout(0.1), fo.Dense(3)]
    else:
        layers = [fo.Dense(32, use_bias=BIAS), fo.BatchNorm(), fo.Activation("relu"),
                  fo.Dropout(0.2), fo.Dense(16, activation="relu"), fo.Dropout(0.1),
                  fo.Dense(3)]
    return fo.Sequential(layers, input_dim=20, dtype=dtype, seed=seed)


comm = None
seed = 0
if distributed:
    from fastopt.distributed import world
    comm = world()
    seed = comm.rank * 7      # every rank different: the broadcast must fix it


class Identical(fo.callbacks.Callback):
    """All ranks hold bitwise-identical parameters after every step."""
    def on_batch_end(self, trainer, step, logs):
        if comm is None:
            return
        crc = zlib.crc32(trainer.model.arena.data.tobytes())
        for layer in trainer.model.layers:
            for buf in layer.buffers.values():
                crc = zlib.crc32(buf.tobytes(), crc)
        every = comm.allgather(crc)
        assert len(set(every)) == 1, f"ranks differ at step {step}: {every}"


model = build(seed if distributed else 0)
if distributed:
    # the reference starts from seed 0's weights: make rank 0's the same
    if comm.rank == 0:
        model.arena.data[:] = build(0).arena.data
trainer = fo.Trainer(model, loss="softmax_cross_entropy", optimizer=(fo.optim.SGD(lr=1e-1) if __import__("os").environ.get("OPT") == "sgd" else fo.optim.Adam(lr=1e-2)),
                     metrics=["accuracy"], callbacks=[Identical()], comm=comm)
sw = (np.arange(rows) % 3 + 0.5) if weighted else None
epochs = -(-steps // -(-rows // batch))
h = trainer.fit(X, y, epochs=epochs, batch_size=batch, seed=3, verbose=0,
                steps_per_epoch=None, sample_weight=sw)
if comm is None or comm.rank == 0:
    running = [b for layer in model.layers for b in layer.buffers.values()]
    np.savez(out, params=model.arena.data, running=np.concatenate(running) if running else np.zeros(1),
             loss=np.array(h["loss"]), acc=np.array(h["accuracy"]), steps=trainer.step_count)
