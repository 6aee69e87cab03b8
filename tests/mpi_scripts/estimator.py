"""fastopt.sklearn with comm=: each rank fits on its own shard of the rows; the result is
the single-process fit on all rows. ``python estimator.py OUT [distributed]``."""
import sys

import numpy as np

from fastopt.sklearn import MLPClassifier

out = sys.argv[1]
rng = np.random.default_rng(4)
X = rng.normal(size=(230, 6))
y = np.where(X[:, 0] + X[:, 1] ** 2 > 0.8, "yes", "no")
comm = None
if "distributed" in sys.argv[2:]:
    from fastopt.distributed import share_of, world
    comm = world()
    lo, hi = share_of(len(X), comm.size, comm.rank)
    X, y = X[lo:hi], y[lo:hi]          # this rank's shard only
clf = MLPClassifier(hidden_layer_sizes=(16,), batch_norm=True, dropout=0.1, max_iter=15,
                    batch_size=32, random_state=0, dtype="float64", early_stopping=True)
clf.fit(X, y, comm=comm)
if comm is None or comm.rank == 0:
    np.savez(out, proba=clf.predict_proba(rng.normal(size=(50, 6))),
             curve=np.array(clf.loss_curve_), n_iter=clf.n_iter_,
             classes=np.array(clf.classes_))
