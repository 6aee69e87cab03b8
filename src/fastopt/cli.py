"""``fastopt`` command line: train a network on the bundled digits or on your own data.

    fastopt train                                  # MLP on the UCI digits, held-out accuracy
    fastopt train --data data.csv --target price   # your CSV (header row) or .npz (X, y)
    fastopt train --hidden 256,128 --batch-norm --dropout 0.2 --validation-split 0.1 \\
                  --early-stopping 5 --save model.npz
    fastopt predict model.npz --data new.csv --out predictions.csv
    fastopt info model.npz
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


def _positive(kind, description):
    """An argparse type: text parsed by ``kind`` that must be > 0."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value
    return parse


_positive_int = _positive(int, "a positive integer")
_positive_float = _positive(float, "a positive number")


_SCHEDULES = ("constant", "step", "exponential", "inverse_time", "polynomial", "cosine",
              "warmup_cosine", "plateau")


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
    train.add_argument("--batch-norm", action="store_true",
                       help="BatchNorm after each hidden Dense (Dense → BN → activation)")
    train.add_argument("--dropout", type=float, default=0.0, help="dropout rate after each hidden block")
    train.add_argument("--optimizer", choices=sorted(optim.OPTIMIZERS), default="adam")
    train.add_argument("--lr", type=_positive_float, default=None,
                       help="learning rate (default: 0.1 for sgd, the optimizer's own otherwise)")
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--schedule", choices=_SCHEDULES, default="constant",
                       help="learning-rate schedule over the epochs (plateau: reduce on "
                            "validation loss)")
    train.add_argument("--epochs", type=_positive_int, default=30)
    train.add_argument("--batch-size", type=_positive_int, default=32)
    train.add_argument("--validation-split", type=float, default=0.0,
                       help="fraction of the training rows held out for validation")
    train.add_argument("--early-stopping", type=_positive_int, default=None, metavar="PATIENCE",
                       help="stop after PATIENCE epochs without validation-loss improvement "
                            "(needs --validation-split; restores the best weights)")
    train.add_argument("--test-fraction", type=float, default=0.2)
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    train.add_argument("--save", metavar="PATH", help="save the trained model (.npz)")
    train.add_argument("--threads", type=_positive_int, default=None)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines")

    predict = sub.add_parser("predict", help="predict with a saved model")
    predict.add_argument("model", help="a model saved by `fastopt train --save`")
    predict.add_argument("--data", required=True, help="a .csv (header row) or .npz with array X")
    predict.add_argument("--out", required=True, help="output .csv (one prediction per row)")
    predict.add_argument("--proba", action="store_true", help="write class probabilities")

    info = sub.add_parser("info", help="describe a saved model")
    info.add_argument("model")
    return parser


def _read_table(path):
    """Header (column names) and rows of string cells from a CSV file."""
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if not rows:
        raise UserError(f"{path} is empty")
    has_header = not all(_is_number(c) for c in rows[0])
    header = [c.strip() for c in rows[0]] if has_header else [str(i) for i in range(len(rows[0]))]
    body = rows[1:] if has_header else rows
    if not body:
        raise UserError(f"{path} has a header but no data rows")
    for line, row in enumerate(body, start=2 if has_header else 1):
        if len(row) != len(header):
            raise UserError(f"{path}, line {line}: {len(row)} fields, expected {len(header)}")
    return header, body


def _is_number(cell):
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _numeric_columns(path, header, body, columns):
    features = []
    for j in columns:
        try:
            features.append([float(row[j]) if row[j].strip() else np.nan for row in body])
        except ValueError:
            raise UserError(f"column {header[j]!r} of {path} is not numeric") from None
    return np.array(features, dtype=np.float64).T.reshape(len(body), len(columns))


def _read_csv(path, target):
    header, body = _read_table(path)
    width = len(header)
    if target is None:
        col = width - 1
    elif target in header:
        col = header.index(target)
    elif target.lstrip("-").isdigit() and -width <= int(target) < width:
        col = int(target) % width
    else:
        raise UserError(f"--target {target!r} is not a column of {path} (columns: {', '.join(header)})")
    X = _numeric_columns(path, header, body, [j for j in range(width) if j != col])
    raw = [row[col].strip() for row in body]
    y = np.array([float(v) for v in raw]) if all(_is_number(v) for v in raw) else np.array(raw)
    return X, y, [h for j, h in enumerate(header) if j != col], header[col]


def _load_data(path, target):
    if not os.path.exists(path):
        raise UserError(f"no such file: {path}")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            y_key = target or "y"
            missing = [k for k in ("X", y_key) if k not in data.files]
            if missing:
                raise UserError(f"{path} lacks array(s) {missing}; it has {data.files}")
            X, y = data["X"], data[y_key]
        return X, y, None, y_key
    if path.endswith((".csv", ".txt")):
        return _read_csv(path, target)
    raise UserError(f"{path}: expected a .csv or .npz file")


def _is_classification(y, task):
    if task != "auto":
        return task == "classification"
    if y.dtype.kind in "USOb" or y.dtype.kind in "iu":
        return True
    return bool(np.all(y == np.round(y)) and len(np.unique(y)) <= max(2, min(50, len(y) // 5)))


def _make_schedule(name, epochs):
    from . import schedules

    if name == "constant":
        return None
    if name == "step":
        return schedules.StepDecay(step_size=max(1, epochs // 3), gamma=0.1)
    if name == "exponential":
        return schedules.ExponentialDecay(gamma=0.01 ** (1 / max(1, epochs)))
    if name == "inverse_time":
        return schedules.InverseTimeDecay(k=0.1)
    if name == "polynomial":
        return schedules.PolynomialDecay(T=epochs, power=1.0)
    if name == "cosine":
        return schedules.CosineDecay(T=epochs)
    if name == "warmup_cosine":
        warm = max(1, epochs // 10)
        return schedules.Warmup(schedules.CosineDecay(T=max(1, epochs - warm)), warmup=warm)
    return schedules.ReduceOnPlateau(factor=0.5, patience=3, monitor="val_loss")


def _train(args):
    from . import (Activation, BatchNorm, Dense, Dropout, EarlyStopping, Sequential, Standardize,
                   Trainer, optim, save, threads)
    from .datasets import load_digits, train_test_split

    if args.data is None:
        X, y = load_digits()
        features, target, source = [f"pixel_{i}" for i in range(64)], "digit", \
            "UCI handwritten digits (bundled, 1797 x 64)"
    else:
        X, y, features, target = _load_data(args.data, args.target)
        source = args.data
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] == 0:
        raise UserError(f"{source}: need at least one feature column, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise UserError(f"{source}: the features contain missing, NaN or infinite values")
    if not 0.0 < args.test_fraction < 1.0:
        raise UserError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if not 0.0 <= args.validation_split < 1.0:
        raise UserError(f"--validation-split must be in [0, 1), got {args.validation_split}")
    if not 0.0 <= args.dropout < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.early_stopping and not args.validation_split:
        raise UserError("--early-stopping needs --validation-split (it watches validation loss)")
    if args.schedule == "plateau" and not args.validation_split:
        raise UserError("--schedule plateau needs --validation-split (it watches validation loss)")
    classify = _is_classification(y, args.task)
    if classify:
        classes, y = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise UserError(f"{source}: the target has a single class ({classes[0]!r})")
    else:
        y = y.astype(np.float64)
    X_train, X_test, y_train, y_test = train_test_split(X, y, args.test_fraction, seed=args.seed,
                                                        stratify=classify)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    n_out = len(classes) if classify else 1
    # The training split's statistics become the model's first layer: a saved model then
    # takes raw features.
    layers = [Standardize(X_train.mean(axis=0), std)]
    for width in args.hidden:
        if args.batch_norm:
            layers += [Dense(width), BatchNorm(), Activation(args.activation)]
        else:
            layers.append(Dense(width, activation=args.activation))
        if args.dropout:
            layers.append(Dropout(args.dropout))
    layers.append(Dense(n_out))
    if not classify:
        y_mean, y_std = float(y_train.mean()), float(y_train.std() or 1.0)
        y_train = (y_train - y_mean) / y_std
    metadata = {"task": "classification" if classify else "regression", "features": features,
                "target": target, "source": source}
    if classify:
        metadata["classes"] = classes.tolist()
    else:
        metadata["target_mean"], metadata["target_scale"] = y_mean, y_std
    model = Sequential(layers, input_dim=X.shape[1], dtype=args.dtype, seed=args.seed,
                       metadata=metadata)
    lr = args.lr if args.lr is not None else _DEFAULT_LR.get(args.optimizer)
    kwargs = {} if lr is None else {"lr": lr}
    if args.weight_decay:
        kwargs["weight_decay"] = args.weight_decay
    opt = optim.get_optimizer(args.optimizer, **kwargs)
    callbacks = [EarlyStopping(patience=args.early_stopping)] if args.early_stopping else []
    trainer = Trainer(model, loss="softmax_cross_entropy" if classify else "mse", optimizer=opt,
                      schedule=_make_schedule(args.schedule, args.epochs),
                      metrics=["accuracy"] if classify else ["r2"], callbacks=callbacks)
    print(f"fastopt: {source}: {len(X_train)} train / {len(X_test)} test rows, "
          f"{'%d classes' % n_out if classify else 'regression'}; model "
          f"{X.shape[1]}-{'-'.join(map(str, args.hidden))}-{n_out} {args.activation}"
          f"{' +BN' if args.batch_norm else ''}{f' +dropout {args.dropout}' if args.dropout else ''}, "
          f"{args.optimizer} lr={opt.lr}, {model.n_params} parameters")
    with threads(args.threads or threads_default()):
        start = time.perf_counter()
        trainer.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                    validation_split=args.validation_split or None, seed=args.seed,
                    verbose=0 if args.quiet else 1,
                    drop_last=args.batch_norm and len(X_train) % args.batch_size == 1)
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
    if args.save:
        save(model, args.save)
        print(f"saved the model to {args.save}")
    return 0


def _load_model(path):
    from .io import load
    from .model import Sequential

    if not os.path.exists(path):
        raise UserError(f"no such file: {path}")
    obj = load(path)
    return obj if isinstance(obj, Sequential) else obj.model


def _predict(args):
    from scipy.special import softmax

    model = _load_model(args.model)
    meta = model.metadata
    if not os.path.exists(args.data):
        raise UserError(f"no such file: {args.data}")
    if args.data.endswith(".npz"):
        with np.load(args.data, allow_pickle=False) as data:
            if "X" not in data.files:
                raise UserError(f"{args.data} has no array X; it has {data.files}")
            X = data["X"]
    else:
        header, body = _read_table(args.data)
        names = meta.get("features")
        if names and set(names) <= set(header):
            columns = [header.index(n) for n in names]
        else:
            columns = [j for j, h in enumerate(header) if h != meta.get("target")]
        X = _numeric_columns(args.data, header, body, columns)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != model.input_dim:
        raise UserError(f"{args.data} has {X.shape[-1] if X.ndim else 0} feature columns; the "
                        f"model expects {model.input_dim}")
    if not np.isfinite(X).all():
        raise UserError(f"{args.data}: the features contain missing, NaN or infinite values")
    out = model.predict(X).astype(np.float64)
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        if meta.get("task") == "classification":
            classes = meta.get("classes") or list(range(model.output_dim))
            if args.proba:
                writer.writerow([f"p_{c}" for c in classes])
                writer.writerows(softmax(out, axis=1).tolist())
            else:
                writer.writerow([meta.get("target", "prediction")])
                writer.writerows([[classes[i]] for i in out.argmax(axis=1)])
        else:
            if args.proba:
                raise UserError("--proba needs a classification model")
            values = out * meta.get("target_scale", 1.0) + meta.get("target_mean", 0.0)
            writer.writerow([meta.get("target", f"output_{k}") if model.output_dim == 1
                             else f"output_{k}" for k in range(model.output_dim)])
            writer.writerows(values.tolist())
    print(f"wrote {len(out)} predictions to {args.out}")
    return 0


def _info(args):
    model = _load_model(args.model)
    print(f"{args.model}: fastopt model, {model.n_params} parameters, {model.dtype.name}, "
          f"{model.input_dim} inputs -> {model.output_dim} outputs")
    for key in ("task", "target", "source", "classes"):
        if key in model.metadata:
            print(f"  {key}: {model.metadata[key]}")
    print(repr(model))
    return 0


def threads_default():
    from .threads import get_num_threads
    return get_num_threads()


def main(argv=None):
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return {"train": _train, "predict": _predict, "info": _info}[args.command](args)
    except (UserError, ValueError, TypeError, FloatingPointError, OSError) as exc:
        print(f"fastopt: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
