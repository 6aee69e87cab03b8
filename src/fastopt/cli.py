"""``fastopt`` command line: train a network on the bundled digits or on your own data.

    fastopt train                                  # MLP on the UCI digits, held-out accuracy
    fastopt train --data data.csv --target price   # your CSV (header row), .parquet or .npz
    fastopt train --data data.csv --target churn --impute median --id customer --save m.npz
    fastopt train --hidden 256,128 --batch-norm --dropout 0.2 --validation-split 0.1 \\
                  --early-stopping 5 --save model.npz
    cat new.csv | fastopt predict m.npz --data - --proba --id customer > predictions.csv
    fastopt export m.npz --out m.onnx               # ONNX, with the table's encoding inside
    fastopt info model.npz

Tables (CSV, Parquet): string columns are one-hot encoded over the training file's
categories, numeric columns standardized (``--no-standardize``), missing cells refused
unless ``--impute mean|median|most_frequent``; the encoding lives in the saved model
(``metadata["tabular"]``, JSON) and ``predict`` / ``export`` apply it.
"""

import argparse
import contextlib
import csv
import os
import sys
import time
import warnings

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


def _parse_names(text):
    return [name.strip() for name in text.split(",") if name.strip()]
_positive_float = _positive(float, "a positive number")


_SCHEDULES = ("constant", "step", "exponential", "inverse_time", "polynomial", "cosine",
              "warmup_cosine", "plateau")


def _build_parser():
    from . import optim
    from .layers import ACTIVATIONS

    parser = argparse.ArgumentParser(prog="fastopt", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train an MLP and report held-out accuracy or R²")
    train.add_argument("--data", help="a .csv file (header row; '-' reads CSV from stdin), a "
                                      ".parquet file (needs pyarrow) or an .npz with arrays X "
                                      "and y; default: the bundled UCI handwritten digits")
    train.add_argument("--target", help="target column of the table (name or 0-based index; "
                                        "default: the last column), or the array name in the .npz")
    train.add_argument("--impute", choices=("mean", "median", "most_frequent"), default=None,
                       help="fill missing cells (numeric columns: that statistic of the "
                            "training split; categorical: the most frequent category); "
                            "default: refuse them, naming rows and columns")
    train.add_argument("--unseen", choices=("warn", "error"), default="warn",
                       help="a category unseen in training at predict time: an all-zero row "
                            "and a warning (default), or an error; stored in the model")
    train.add_argument("--categorical", type=_parse_names, default=[], metavar="COLS",
                       help="comma-separated columns to one-hot encode even if numeric")
    train.add_argument("--id", metavar="COL", help="an id column: not a feature; `predict` "
                                                  "carries it over to its output")
    train.add_argument("--no-standardize", action="store_true",
                       help="feed numeric features as they are (default: standardize them "
                            "with the training split's mean and standard deviation)")
    train.add_argument("--task", choices=("auto", "classification", "regression"), default="auto")
    train.add_argument("--hidden", type=_parse_hidden, default=[128, 64],
                       help="hidden layer sizes, e.g. 256,128 (default 128,64)")
    train.add_argument("--activation", choices=ACTIVATIONS, default="relu")
    train.add_argument("--batch-norm", action="store_true",
                       help="BatchNorm after each hidden Dense (Dense → BN → activation)")
    train.add_argument("--dropout", type=float, default=0.0,
                       help="dropout rate after each hidden block")
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
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over the ranks of `mpiexec -n N fastopt train "
                            "--distributed ...`: each rank reads the data and takes its share "
                            "of every batch (--batch-size is the global batch); rank 0 prints "
                            "and saves (pip install 'fastopt[mpi]')")

    predict = sub.add_parser("predict", help="predict with a saved model")
    predict.add_argument("model", help="a model saved by `fastopt train --save`")
    predict.add_argument("--data", required=True,
                         help="a .csv (header row; '-': stdin), .parquet or .npz with array X")
    predict.add_argument("--out", default="-",
                         help="output .csv, one prediction per row (default '-': stdout)")
    predict.add_argument("--proba", action="store_true",
                         help="write one probability column per class instead of the label")
    predict.add_argument("--id", metavar="COL",
                         help="copy this input column to the output's first column (default: "
                              "the model's --id column when the input has it)")
    predict.add_argument("--unseen", choices=("warn", "error"), default=None,
                         help="override the model's choice for categories unseen in training")

    export = sub.add_parser("export", help="export a saved model to ONNX (needs onnx)")
    export.add_argument("model", help="a model saved by `fastopt train --save` or fastopt.save")
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--opset", type=_positive_int, default=None,
                        help="ai.onnx opset (default 17; 13 or newer)")
    export.add_argument("--unseen", choices=("warn", "error"), default=None,
                        help="unseen categories: all-zero rows (warn) or a runtime error; "
                             "default: the model's choice")

    info = sub.add_parser("info", help="describe a saved model")
    info.add_argument("model")
    return parser


def _read_user_table(path):
    from .datasets.tabular import read_table

    if path != "-" and not os.path.exists(path):
        raise UserError(f"no such file: {path}")
    if path != "-" and not path.lower().endswith((".csv", ".txt", ".parquet", ".pq", ".tsv")):
        raise UserError(f"{path}: expected a .csv, .parquet or .npz file (or '-' for CSV on stdin)")
    return read_table(path, delimiter="\t" if path.lower().endswith(".tsv") else ",")


def _column_name(table, text, what):
    """A column named by ``text`` (its name, or a 0-based index)."""
    width = len(table.names)
    if text in table.names:
        return text
    if text.lstrip("-").isdigit() and -width <= int(text) < width:
        return table.names[int(text) % width]
    raise UserError(f"{what} {text!r} is not a column of {table.source} "
                    f"(columns: {', '.join(table.names)})")


def _load_npz(path, target):
    if not os.path.exists(path):
        raise UserError(f"no such file: {path}")
    data = _read_data_npz(path)
    y_key = target or "y"
    missing = [k for k in ("X", y_key) if k not in data]
    if missing:
        raise UserError(f"{path} lacks array(s) {missing}; it has {sorted(data)}")
    return data["X"], data[y_key]


def _read_data_npz(path):
    """A data file's arrays with fastopt.load's checks (no pickles, sizes checked before
    inflating, at most fastopt.io.MAX_BYTES)."""
    from .io import read_npz

    try:
        return read_npz(path)
    except ValueError as exc:
        raise UserError(str(exc)) from None


@contextlib.contextmanager
def _warnings_to_stderr():
    """Warnings (unseen categories) as one ``fastopt: warning:`` line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                print(f"fastopt: warning: {w.message}", file=sys.stderr)


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
    if not getattr(args, "distributed", False):
        return _train_on(args, None)
    from .distributed import world

    if args.data == "-":
        raise UserError("--distributed needs a file for --data (stdin reaches rank 0 only)")
    comm = world()
    stdout = sys.stdout
    if comm.rank != 0:
        sys.stdout = open(os.devnull, "w")
    try:
        return _train_on(args, comm)
    except BaseException as exc:
        if comm.size == 1:
            raise
        # one rank's error must not leave the others waiting in a collective
        print(f"fastopt: error on rank {comm.rank} of {comm.size}: {exc}", file=sys.stderr,
              flush=True)
        comm.Abort(2)
        raise
    finally:
        if sys.stdout is not stdout:
            sys.stdout.close()
            sys.stdout = stdout


def _train_on(args, comm):
    from . import EarlyStopping, Sequential, Standardize, Trainer, optim, save, threads
    from .layers import mlp_layers
    from .datasets import load_digits, train_test_split

    for flag, value in (("--test-fraction", args.test_fraction),):
        if not 0.0 < value < 1.0:
            raise UserError(f"{flag} must be in (0, 1), got {value}")
    if not 0.0 <= args.validation_split < 1.0:
        raise UserError(f"--validation-split must be in [0, 1), got {args.validation_split}")
    if not 0.0 <= args.dropout < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.early_stopping and not args.validation_split:
        raise UserError("--early-stopping needs --validation-split (it watches validation loss)")
    if args.schedule == "plateau" and not args.validation_split:
        raise UserError("--schedule plateau needs --validation-split (it watches validation loss)")
    table = encoder = None
    id_column = None
    if args.data is None:
        X, y = load_digits()
        features, target, source = [f"pixel_{i}" for i in range(64)], "digit", \
            "UCI handwritten digits (bundled, 1797 x 64)"
    elif args.data.endswith(".npz"):
        X, y = _load_npz(args.data, args.target)
        features, target, source = None, args.target or "y", args.data
    else:
        from .datasets.tabular import TabularEncoder, target_values

        table = _read_user_table(args.data)
        source = table.source
        target = _column_name(table, args.target, "--target") if args.target is not None \
            else table.names[-1]
        if args.id is not None:
            id_column = _column_name(table, args.id, "--id")
            if id_column == target:
                raise UserError(f"--id {args.id!r} is the target column")
        columns = [n for n in table.names if n not in (target, id_column)]
        y = target_values(table, target)
        encoder = TabularEncoder(impute=args.impute, unseen=args.unseen,
                                 categorical=args.categorical)
        X = None
    if args.data is not None and table is None and (args.impute or args.categorical):
        raise UserError("--impute and --categorical apply to tables (.csv, .parquet), "
                        "not to .npz arrays")
    classify = _is_classification(np.asarray(y), args.task)
    if classify:
        classes, y = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise UserError(f"{source}: the target has a single class ({classes[0]!r})")
        if classes.dtype.kind == "f" and np.all(classes == np.round(classes)):
            classes = classes.astype(np.int64)   # labels 0/1, not 0.0/1.0
    else:
        y = np.asarray(y).astype(np.float64)
    if table is not None:
        rows = np.arange(len(table))
        train_rows, test_rows, y_train, y_test = train_test_split(
            rows, y, args.test_fraction, seed=args.seed, stratify=classify)
        # Kinds and categories from the whole file; fill values and scaling from the
        # training split only.
        encoder.fit(table, columns, rows=train_rows)
        X_train = encoder.transform(table.take(train_rows))
        X_test = encoder.transform(table.take(test_rows))
        features = encoder.feature_names()
    else:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] == 0:
            raise UserError(f"{source}: need at least one feature column, got shape {X.shape}")
        if not np.isfinite(X).all():
            raise UserError(f"{source}: the features contain missing, NaN or infinite values")
        X_train, X_test, y_train, y_test = train_test_split(X, y, args.test_fraction,
                                                            seed=args.seed, stratify=classify)
        if features is None:
            features = [f"x{j}" for j in range(X.shape[1])]
    n_inputs = X_train.shape[1]
    if encoder is not None:
        mean, std = encoder.scaling(X_train)
    else:
        mean, std = X_train.mean(axis=0), X_train.std(axis=0)
        std[~(std > 0)] = 1.0
    n_out = len(classes) if classify else 1
    # The training split's statistics become the model's first layer: a saved model then
    # takes raw features.
    layers = [] if args.no_standardize else [Standardize(mean, std)]
    layers += mlp_layers(args.hidden, n_out, args.activation, args.batch_norm, args.dropout)
    if not classify:
        y_mean, y_std = float(y_train.mean()), float(y_train.std() or 1.0)
        y_train = (y_train - y_mean) / y_std
    metadata = {"task": "classification" if classify else "regression", "features": features,
                "target": target, "source": source}
    if classify:
        metadata["classes"] = classes.tolist()
    else:
        metadata["target_mean"], metadata["target_scale"] = y_mean, y_std
    if encoder is not None:
        metadata["tabular"] = encoder.to_config()
    if id_column is not None:
        metadata["id"] = id_column
    model = Sequential(layers, input_dim=n_inputs, dtype=args.dtype, seed=args.seed,
                       metadata=metadata)
    lr = args.lr if args.lr is not None else _DEFAULT_LR.get(args.optimizer)
    kwargs = {} if lr is None else {"lr": lr}
    if args.weight_decay:
        kwargs["weight_decay"] = args.weight_decay
    opt = optim.get_optimizer(args.optimizer, **kwargs)
    callbacks = [EarlyStopping(patience=args.early_stopping)] if args.early_stopping else []
    trainer = Trainer(model, loss="softmax_cross_entropy" if classify else "mse", optimizer=opt,
                      schedule=_make_schedule(args.schedule, args.epochs),
                      metrics=["accuracy"] if classify else ["r2"], callbacks=callbacks,
                      comm=comm)
    print(f"fastopt: {source}: {len(X_train)} train / {len(X_test)} test rows, "
          f"{'%d classes' % n_out if classify else 'regression'}; model "
          f"{n_inputs}-{'-'.join(map(str, args.hidden))}-{n_out} {args.activation}"
          f"{' +BN' if args.batch_norm else ''}{f' +dropout {args.dropout}' if args.dropout else ''}, "
          f"{args.optimizer} lr={opt.lr}, {model.n_params} parameters")
    with threads(args.threads or threads_default()):
        start = time.perf_counter()
        history = trainer.fit(X_train, y_train, epochs=args.epochs,
                              batch_size=args.batch_size,
                              validation_split=args.validation_split or None, seed=args.seed,
                              verbose=0 if args.quiet else 1,
                              drop_last=args.batch_norm and len(X_train) % args.batch_size == 1)
        elapsed = time.perf_counter() - start
    if history.interrupted:
        print(f"fastopt: interrupted (Ctrl-C) after {trainer.epoch} epoch(s); the model is "
              "the one of the last finished step", file=sys.stderr)
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
    if args.save and (comm is None or comm.rank == 0):
        save(model, args.save)
        print(f"saved the model to {args.save}")
    return 130 if history.interrupted else 0   # 128 + SIGINT, as a shell reports it


def _load_model(path):
    from .io import load
    from .model import Sequential

    if not os.path.exists(path):
        raise UserError(f"no such file: {path}")
    obj = load(path)
    return obj if isinstance(obj, Sequential) else obj.model


def _predict(args):
    from .model import class_probabilities

    model = _load_model(args.model)
    meta = model.metadata
    ids = id_name = None
    if args.data.endswith(".npz"):
        if args.id is not None:
            raise UserError("--id needs a table (.csv, .parquet), not an .npz")
        if not os.path.exists(args.data):
            raise UserError(f"no such file: {args.data}")
        data = _read_data_npz(args.data)
        if "X" not in data:
            raise UserError(f"{args.data} has no array X; it has {sorted(data)}")
        X = data["X"]
    else:
        from .datasets.tabular import TabularEncoder, as_numbers

        table = _read_user_table(args.data)
        if args.id is not None:
            id_name = _column_name(table, args.id, "--id")
        elif meta.get("id") in table.columns:
            id_name = meta["id"]
        if id_name is not None:
            ids = table.column(id_name).tolist()
        if "tabular" in meta:
            encoder = TabularEncoder.from_config(meta["tabular"])
            with _warnings_to_stderr():
                X = encoder.transform(table, unseen=args.unseen)
        else:   # a model trained on numeric features only (an .npz, or before tables)
            names = meta.get("features")
            if names and set(names) <= set(table.names):
                columns = names
            else:
                columns = [h for h in table.names if h not in (meta.get("target"), id_name)]
            X = np.empty((len(table), len(columns)))
            for j, name in enumerate(columns):
                values = as_numbers(table.column(name))
                if values is None:
                    raise UserError(f"column {name!r} of {table.source} is not numeric")
                X[:, j] = values
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != model.input_dim:
        raise UserError(f"{args.data} has {X.shape[-1] if X.ndim else 0} feature columns; the "
                        f"model expects {model.input_dim}")
    if not np.isfinite(X).all():
        raise UserError(f"{args.data}: the features contain missing, NaN or infinite values")
    out = model.predict(X).astype(np.float64)
    if meta.get("task") == "classification":
        classes = meta.get("classes") or list(range(max(2, model.output_dim)))
        if args.proba:
            P = class_probabilities(out)
            header = [f"p_{c}" for c in (classes[1:] if model.output_dim == 1 else classes)]
            rows = P.tolist()
        else:
            index = (out[:, 0] > 0).astype(int) if model.output_dim == 1 else out.argmax(axis=1)
            header = [meta.get("target", "prediction")]
            rows = [[classes[i]] for i in index]
    else:
        if args.proba:
            raise UserError("--proba needs a classification model")
        values = out * meta.get("target_scale", 1.0) + meta.get("target_mean", 0.0)
        header = [meta.get("target", f"output_{k}") if model.output_dim == 1
                  else f"output_{k}" for k in range(model.output_dim)]
        rows = values.tolist()
    if ids is not None:
        header = [id_name] + header
        rows = [[i] + r for i, r in zip(ids, rows)]
    to_stdout = args.out == "-"
    with (contextlib.nullcontext(sys.stdout) if to_stdout
          else open(args.out, "w", newline="")) as f:
        writer = csv.writer(f, lineterminator="\n") if to_stdout else csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    print(f"wrote {len(out)} predictions to {'stdout' if to_stdout else args.out}",
          file=sys.stderr if to_stdout else sys.stdout)
    return 0


def _export(args):
    from .export import export_onnx

    model = _load_model(args.model)
    proto = export_onnx(model, args.out, opset=args.opset, unseen=args.unseen)

    def describe(values):
        return ", ".join(v.name for v in values)

    inputs = proto.graph.input
    shown = describe(inputs) if len(inputs) <= 8 else \
        f"{describe(inputs[:8])} and {len(inputs) - 8} more"
    print(f"wrote {args.out}: ONNX opset {proto.opset_import[0].version}, "
          f"{model.dtype.name}, inputs {shown}; outputs {describe(proto.graph.output)}")
    return 0


def _info(args):
    model = _load_model(args.model)
    print(f"{args.model}: fastopt model, {model.n_params} parameters, {model.dtype.name}, "
          f"{model.input_dim} inputs -> {model.output_dim} outputs")
    for key in ("task", "target", "source", "classes", "id"):
        if key in model.metadata:
            print(f"  {key}: {model.metadata[key]}")
    tab = model.metadata.get("tabular")
    if isinstance(tab, dict):
        for col in tab.get("columns", []):
            what = (f"categorical, {len(col.get('categories', []))} categories"
                    if col.get("kind") == "categorical" else "numeric")
            fill = f", missing -> {col['fill']!r}" if col.get("fill") is not None else ""
            print(f"  column {col.get('name')!r}: {what}{fill}")
        print(f"  unseen categories: {tab.get('unseen', 'warn')}")
    print(repr(model))
    return 0


def threads_default():
    from .threads import get_num_threads
    return get_num_threads()


def main(argv=None):
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return {"train": _train, "predict": _predict, "export": _export,
                "info": _info}[args.command](args)
    except BrokenPipeError:
        # The reader of a pipeline (`| head`) left: stop quietly, as shell tools do.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 1
    except (UserError, ValueError, TypeError, FloatingPointError, OSError, ImportError) as exc:
        print(f"fastopt: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
