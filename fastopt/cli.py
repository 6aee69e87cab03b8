"""``fastopt`` command line: train a network on the bundled digits or on your own data.

    fastopt train                                  # MLP on the UCI digits, held-out accuracy
    fastopt train --data data.csv --target price   # your CSV (header row) or .npz (X, y)
"""

import argparse
import csv
import os
import sys
import time

import numpy as np

__all__ = ["main"]


# Learning rates that suit standardised tabular data better than the optimizers' own
# defaults (plain SGD's 0.01 is slow for the job's 30 epochs).
_DEFAULT_LR = {"sgd": 0.1}


class UserError(Exception):
    """A mistake in the command's input: reported in one line, no traceback."""


def _parse_hidden(text):
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden wants comma-separated integers, got {text!r}")
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"--hidden sizes must be >= 1, got {text!r}")
    return sizes


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _build_parser():
    from . import optim
    from .layers import ACTIVATIONS

    parser = argparse.ArgumentParser(prog="fastopt", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train an MLP and report held-out accuracy or R²")
    train.add_argument("--data", help="a .csv file (header row) or an .npz with arrays X and y; "
                                      "default: the bundled UCI handwritten digits")
    train.add_argument("--target", help="target column of the CSV (name or 0-based index; "
                                        "default: the last column), or the array name in the .npz")
    train.add_argument("--task", choices=("auto", "classification", "regression"), default="auto")
    train.add_argument("--hidden", type=_parse_hidden, default=[128, 64],
                       help="hidden layer sizes, e.g. 256,128 (default 128,64)")
    train.add_argument("--activation", choices=ACTIVATIONS, default="relu")
    train.add_argument("--optimizer", choices=sorted(optim.OPTIMIZERS), default="sgd")
    train.add_argument("--lr", type=float, default=None, help="learning rate (default: 0.1 for sgd, the optimizer's own otherwise)")
    train.add_argument("--epochs", type=_positive_int, default=30)
    train.add_argument("--batch-size", type=_positive_int, default=32)
    train.add_argument("--test-fraction", type=float, default=0.2)
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    train.add_argument("--threads", type=_positive_int, default=None)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return parser


def _read_csv(path, target):
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if not rows:
        raise UserError(f"{path} is empty")

    def numeric(cell):
        try:
            float(cell)
            return True
        except ValueError:
            return False

    has_header = not all(numeric(c) for c in rows[0])
    header = [c.strip() for c in rows[0]] if has_header else [str(i) for i in range(len(rows[0]))]
    body = rows[1:] if has_header else rows
    if not body:
        raise UserError(f"{path} has a header but no data rows")
    width = len(header)
    for line, row in enumerate(body, start=2 if has_header else 1):
        if len(row) != width:
            raise UserError(f"{path}, line {line}: {len(row)} fields, expected {width}")
    if target is None:
        col = width - 1
    elif target in header:
        col = header.index(target)
    elif target.lstrip("-").isdigit() and -width <= int(target) < width:
        col = int(target) % width
    else:
        raise UserError(f"--target {target!r} is not a column of {path} (columns: {', '.join(header)})")
    columns = list(zip(*body))
    features = []
    for j, values in enumerate(columns):
        if j == col:
            continue
        try:
            features.append(np.array([float(v) if v.strip() else np.nan for v in values]))
        except ValueError:
            raise UserError(f"column {header[j]!r} of {path} is not numeric")
    X = np.column_stack(features) if features else np.empty((len(body), 0))
    raw = [v.strip() for v in columns[col]]
    y = np.array([float(v) for v in raw]) if all(numeric(v) for v in raw) else np.array(raw)
    return X, y


def _load_data(path, target):
    if not os.path.exists(path):
        raise UserError(f"no such file: {path}")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            y_key = target or "y"
            missing = [k for k in ("X", y_key) if k not in data.files]
            if missing:
                raise UserError(f"{path} lacks array(s) {missing}; it has {data.files}")
            return data["X"], data[y_key]
    if path.endswith(".csv") or path.endswith(".txt"):
        return _read_csv(path, target)
    raise UserError(f"{path}: expected a .csv or .npz file")


def _is_classification(y, task):
    if task != "auto":
        return task == "classification"
    if y.dtype.kind in "USO" or y.dtype.kind in "iub":
        return True
    return bool(np.all(y == np.round(y)) and len(np.unique(y)) <= max(2, min(50, len(y) // 5)))


def _train(args):
    from . import Dense, Sequential, Trainer, optim, threads
    from .datasets import load_digits, train_test_split

    if args.data is None:
        X, y = load_digits()
        source = "UCI handwritten digits (bundled, 1797 x 64)"
    else:
        X, y = _load_data(args.data, args.target)
        source = args.data
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] == 0:
        raise UserError(f"{source}: need at least one feature column, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise UserError(f"{source}: the features contain missing, NaN or infinite values")
    if not 0.0 < args.test_fraction < 1.0:
        raise UserError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    classify = _is_classification(y, args.task)
    if classify:
        classes, y = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise UserError(f"{source}: the target has a single class ({classes[0]!r})")
    else:
        y = y.astype(np.float64)
    X_train, X_test, y_train, y_test = train_test_split(X, y, args.test_fraction, seed=args.seed,
                                                        stratify=classify)
    # Standardise with the training split's statistics only.
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    std[std == 0] = 1.0
    X_train, X_test = (X_train - mean) / std, (X_test - mean) / std
    if not classify:
        y_mean, y_std = y_train.mean(), y_train.std() or 1.0
        y_train_scaled = (y_train - y_mean) / y_std

    n_out = len(classes) if classify else 1
    layers = [Dense(h, activation=args.activation) for h in args.hidden] + [Dense(n_out)]
    model = Sequential(layers, input_dim=X.shape[1], dtype=args.dtype, seed=args.seed)
    opt_class = optim.OPTIMIZERS[args.optimizer]
    lr = args.lr if args.lr is not None else _DEFAULT_LR.get(args.optimizer)
    opt = opt_class() if lr is None else opt_class(lr=lr)
    trainer = Trainer(model, loss="softmax_cross_entropy" if classify else "mse", optimizer=opt)
    print(f"fastopt: {source}: {len(X_train)} train / {len(X_test)} test rows, "
          f"{'%d classes' % n_out if classify else 'regression'}; "
          f"model {X.shape[1]}-{'-'.join(map(str, args.hidden))}-{n_out} {args.activation}, "
          f"{args.optimizer} lr={opt.lr}, {model.n_params} parameters")
    with threads(args.threads or threads_default()):
        start = time.perf_counter()
        trainer.fit(X_train, y_train if classify else y_train_scaled, epochs=args.epochs,
                    batch_size=args.batch_size, seed=args.seed, verbose=not args.quiet)
        elapsed = time.perf_counter() - start
    if classify:
        acc = trainer.evaluate(X_test, y_test)["accuracy"]
        print(f"held-out accuracy: {acc:.4f} on {len(X_test)} samples "
              f"(trained in {elapsed:.2f} s)")
    else:
        pred = model.predict(X_test)[:, 0] * y_std + y_mean
        ss_res = float(np.sum((y_test - pred) ** 2))
        ss_tot = float(np.sum((y_test - y_test.mean()) ** 2)) or 1.0
        print(f"held-out R^2: {1 - ss_res / ss_tot:.4f}, RMSE {np.sqrt(ss_res / len(y_test)):.4g} "
              f"on {len(X_test)} samples (trained in {elapsed:.2f} s)")
    return 0


def threads_default():
    from .threads import get_num_threads
    return get_num_threads()


def main(argv=None):
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
    except (UserError, ValueError, TypeError, FloatingPointError, OSError) as exc:
        print(f"fastopt: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
