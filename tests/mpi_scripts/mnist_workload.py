"""The mnist workload's model (784→256→128→10, Dense-BN-relu-Dropout(0.2) blocks, Adam
lr 1e-3, batch 128) for 20 steps on random data; rank 0 writes the parameters.
``python mnist_workload.py OUT DTYPE [distributed]``. The Dense layers before a BatchNorm
have no bias (its gradient is zero in exact arithmetic: its values would be noise)."""
import sys

import numpy as np

import fastopt as fo

out, dtype = sys.argv[1], sys.argv[2]
comm = None
if "distributed" in sys.argv[3:]:
    from fastopt.distributed import world
    comm = world()
rng = np.random.default_rng(1)
X = rng.random((20 * 128, 784), dtype=np.float32).astype(dtype)
y = rng.integers(0, 10, 20 * 128)
layers = []
for units in (256, 128):
    layers += [fo.Dense(units, use_bias=False), fo.BatchNorm(), fo.Activation("relu"),
               fo.Dropout(0.2)]
model = fo.Sequential(layers + [fo.Dense(10)], input_dim=784, dtype=dtype,
                      seed=0 if comm is None else comm.rank)
trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.Adam(lr=1e-3), comm=comm)
trainer.fit(X, y, epochs=1, batch_size=128, seed=0, verbose=0)
if comm is None or comm.rank == 0:
    np.savez(out, params=model.arena.data, steps=trainer.step_count)
