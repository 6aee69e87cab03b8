"""Tables as practitioners have them: CSV (numpy and the standard library only) or
Parquet (where ``pyarrow`` is installed), mixed numeric and string columns, missing cells.

``read_table(path)`` reads a file (``"-"``: CSV on stdin) into a ``Table`` of named
columns; ``TabularEncoder`` turns chosen columns into a float matrix:

- a column whose every present cell is a number is **numeric** (``categorical=`` forces
  one to be categorical, e.g. zip codes); any other is **categorical** and is one-hot
  encoded over the categories seen by ``fit``, sorted; at ``transform`` an unseen category
  becomes an all-zero row and a ``UnseenCategoryWarning`` (``unseen="warn"``) or a
  ``ValueError`` (``unseen="error"``);
- missing cells (``NA_VALUES``: empty, NA, N/A, NaN, nan, null, NULL, ?; a null in Parquet)
  are refused by default, naming the columns and lines; ``impute="mean"`` / ``"median"``
  / ``"most_frequent"`` fills numeric columns with that statistic of the fitted rows and
  categorical columns with their most frequent category (mean and median have no
  meaning for categories);
- ``to_config()`` is plain JSON (names, kinds, categories, fill values), which
  ``fastopt train`` stores in ``model.metadata["tabular"]`` and ``fastopt predict`` and
  the ONNX export read back: no pickle. Standardization is not the encoder's job: the CLI
  puts ``scaling(X)``'s statistics in a ``Standardize`` layer, where the model carries them.
"""

import csv
import os
import sys
import warnings

import numpy as np

__all__ = ["NA_VALUES", "Table", "TabularEncoder", "UnseenCategoryWarning", "read_csv",
           "read_parquet", "read_table", "MissingValuesError"]

NA_VALUES = ("", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "?")
_IMPUTE = ("mean", "median", "most_frequent")
_SHOW = 5   # lines named in a message before "and n more"


class UnseenCategoryWarning(UserWarning):
    """A category that training did not see was encoded as an all-zero row."""


class MissingValuesError(ValueError):
    """Missing cells where the encoding does not impute (the message names them)."""


class Table:
    """Named columns of one length. ``columns[name]`` is a 1-D array: float64 (NaN for
    missing) for typed numeric data (Parquet), else strings (stripped CSV cells).
    ``locations`` turns row indices into what a message should name ("lines 3, 7")."""

    def __init__(self, names, columns, source="table", first_line=None):
        self.names = list(names)
        self.columns = dict(columns)
        self.source = source
        self.first_line = first_line      # CSV line of row 0 (None: rows are counted from 1)
        lengths = {len(self.columns[n]) for n in self.names}
        if len(lengths) > 1:
            raise ValueError(f"{source}: columns of different lengths {sorted(lengths)}")
        self.n_rows = lengths.pop() if lengths else 0
        self.rows = None                  # original row numbers after take()

    def __len__(self):
        return self.n_rows

    def take(self, rows):
        rows = np.asarray(rows)
        out = Table(self.names, {n: c[rows] for n, c in self.columns.items()}, self.source,
                    self.first_line)
        out.rows = rows if self.rows is None else self.rows[rows]
        return out

    def column(self, name):
        if name not in self.columns:
            raise ValueError(f"{self.source} has no column {name!r} (columns: "
                             f"{', '.join(self.names)})")
        return self.columns[name]

    def locations(self, rows):
        rows = np.asarray(rows)
        if self.rows is not None:
            rows = self.rows[rows]
        if self.first_line is not None:
            word, numbers = "line", rows + self.first_line
        else:
            word, numbers = "row", rows + 1
        shown = ", ".join(str(int(v)) for v in numbers[:_SHOW])
        more = f" and {len(numbers) - _SHOW} more" if len(numbers) > _SHOW else ""
        return f"{word}{'s' if len(numbers) > 1 else ''} {shown}{more}"


# ---- reading ----

def _is_number(cell):
    try:
        float(cell)
        return True
    except ValueError:
        return False


def read_csv(source, delimiter=",", name=None):
    """A CSV file (path, ``"-"`` for stdin, or a text file object) with a header row.

    A first row made only of numbers is taken as data, the columns then named "0", "1",
    … Cells are stripped of surrounding spaces; blank lines are skipped."""
    if hasattr(source, "read"):
        name = name or getattr(source, "name", "<stream>")
        rows = [row for row in csv.reader(source, delimiter=delimiter) if row]
    elif source == "-":
        name = name or "<stdin>"
        rows = [row for row in csv.reader(sys.stdin, delimiter=delimiter) if row]
    else:
        name = name or os.fspath(source)
        with open(source, newline="") as f:
            rows = [row for row in csv.reader(f, delimiter=delimiter) if row]
    if not rows:
        raise ValueError(f"{name} is empty")
    has_header = not all(_is_number(c) for c in rows[0])
    header = [c.strip() for c in rows[0]] if has_header else [str(i) for i in range(len(rows[0]))]
    body = rows[1:] if has_header else rows
    if not body:
        raise ValueError(f"{name} has a header but no data rows")
    width = len(header)
    for line, row in enumerate(body, start=2 if has_header else 1):
        if len(row) != width:
            raise ValueError(f"{name}, line {line}: {len(row)} fields, expected {width}")
    seen = set()
    for h in header:
        if h in seen:
            raise ValueError(f"{name}: two columns are named {h!r}")
        seen.add(h)
    cells = np.char.strip(np.array(body, dtype=str).reshape(len(body), width))
    columns = {h: np.ascontiguousarray(cells[:, j]) for j, h in enumerate(header)}
    return Table(header, columns, name, first_line=2 if has_header else 1)


def read_parquet(path):
    """A Parquet file (needs ``pyarrow``): numeric columns as float64 (null → NaN), any
    other column as strings (null → the empty string, i.e. missing)."""
    try:
        import pyarrow.parquet as pq
        import pyarrow.types as pat
    except ImportError:
        raise ImportError("reading Parquet needs pyarrow: pip install 'fastopt[parquet]' "
                          "(or pip install pyarrow)") from None
    table = pq.read_table(path)
    names, columns = [], {}
    for field, col in zip(table.schema, table.columns):
        values = col.to_pylist()
        if pat.is_integer(field.type) or pat.is_floating(field.type) \
                or pat.is_decimal(field.type):
            arr = np.array([np.nan if v is None else float(v) for v in values], np.float64)
        else:
            arr = np.array(["" if v is None else str(v) for v in values], dtype=str)
            arr = np.char.strip(arr) if arr.size else arr
        names.append(field.name)
        columns[field.name] = arr
    return Table(names, columns, os.fspath(path))


def read_table(path, delimiter=","):
    """``.parquet`` / ``.pq`` via pyarrow; anything else (and ``"-"``, stdin) as CSV."""
    if path != "-" and str(path).lower().endswith((".parquet", ".pq")):
        return read_parquet(path)
    return read_csv(path, delimiter=delimiter)


# ---- column helpers ----

def missing_mask(values, na_values=NA_VALUES):
    values = np.asarray(values)
    if values.dtype.kind == "f":
        return np.isnan(values)
    return np.isin(values, list(na_values))


def as_numbers(values, na_values=NA_VALUES):
    """float64 with NaN for missing cells, or None when some present cell is not a number."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        return values.astype(np.float64)
    if values.dtype.kind in "iub":
        return values.astype(np.float64)
    missing = missing_mask(values, na_values)
    out = np.full(values.shape, np.nan)
    try:
        out[~missing] = values[~missing].astype(np.float64)
    except ValueError:
        return None
    return out


def _as_strings(values):
    values = np.asarray(values)
    if values.dtype.kind == "f":   # a typed numeric column forced categorical
        return np.array(["" if np.isnan(v) else (str(int(v)) if v == int(v) else repr(float(v)))
                         for v in values], dtype=str)
    return values.astype(str)


def target_values(table, name, na_values=NA_VALUES):
    """The target column: float64 when every cell is a number, else strings. Missing
    targets are an error naming their lines."""
    raw = table.column(name)
    missing = missing_mask(raw, na_values)
    if missing.any():
        raise MissingValuesError(f"{table.source}: the target column {name!r} is missing at "
                                 f"{table.locations(np.flatnonzero(missing))}; drop those rows")
    numbers = as_numbers(raw, na_values)
    return numbers if numbers is not None else _as_strings(raw)


# ---- the encoder ----

class TabularEncoder:
    """One-hot encoding of categorical columns, imputation, in a JSON-able form.

    Parameters
    ----------
    impute : None, "mean", "median" or "most_frequent"
        None refuses missing cells. Categorical columns impute their most frequent
        category under any strategy.
    unseen : "warn" or "error"
        What ``transform`` does with a category ``fit`` did not see (default for
        ``transform(unseen=None)``).
    categorical : iterable of column names
        Columns to treat as categorical even when every cell is a number.
    na_values : iterable of str
        Cells that mean "missing" in string columns.
    """

    def __init__(self, impute=None, unseen="warn", categorical=(), na_values=NA_VALUES):
        if impute not in (None,) + _IMPUTE:
            raise ValueError(f"impute must be None or one of {_IMPUTE}, got {impute!r}")
        if unseen not in ("warn", "error"):
            raise ValueError(f"unseen must be 'warn' or 'error', got {unseen!r}")
        self.impute = impute
        self.unseen = unseen
        self.categorical = list(categorical)
        self.na_values = [str(v) for v in na_values]
        self.columns = None

    # -- fit --

    def fit(self, table, names, rows=None):
        """Learn each column's kind and categories from ``table``'s rows and its fill
        value from ``rows`` of them (default: all; the CLI passes its training split)."""
        unknown = [c for c in self.categorical if c not in names]
        if unknown:
            raise ValueError(f"categorical column(s) {unknown} are not feature columns of "
                             f"{table.source} (features: {', '.join(names)})")
        if not names:
            raise ValueError(f"{table.source}: no feature columns")
        specs = []
        for name in names:
            raw = table.column(name)
            missing = missing_mask(raw, self.na_values)
            numbers = None if name in self.categorical else as_numbers(raw, self.na_values)
            if missing.all():
                raise ValueError(f"{table.source}: column {name!r} has no values (every cell "
                                 "is missing)")
            part = np.zeros(len(raw), bool)
            part[np.arange(len(raw)) if rows is None else np.asarray(rows)] = True
            if not (part & ~missing).any():
                raise ValueError(f"{table.source}: column {name!r} has no values in the "
                                 "training rows")
            if numbers is not None:
                spec = {"name": name, "kind": "numeric", "fill": None}
                present = numbers[~missing]
                if not np.isfinite(present).all():
                    bad = np.flatnonzero(~missing & ~np.isfinite(numbers))
                    raise ValueError(f"{table.source}: column {name!r} has infinite values at "
                                     f"{table.locations(bad)}")
                train = numbers[part & ~missing]
                if self.impute == "mean":
                    spec["fill"] = float(train.mean())
                elif self.impute == "median":
                    spec["fill"] = float(np.median(train))
                elif self.impute == "most_frequent":
                    values, counts = np.unique(train, return_counts=True)
                    spec["fill"] = float(values[np.argmax(counts)])
            else:
                strings = _as_strings(raw)
                values, counts = np.unique(strings[~missing], return_counts=True)
                spec = {"name": name, "kind": "categorical",
                        "categories": values.tolist(), "fill": None}
                if self.impute is not None:
                    train, counts = np.unique(strings[part & ~missing], return_counts=True)
                    spec["fill"] = str(train[np.argmax(counts)])  # ties: the first sorted
            specs.append(spec)
        self.columns = specs
        self._check_missing(table)
        return self

    def fit_transform(self, table, names):
        return self.fit(table, names).transform(table)

    # -- transform --

    @property
    def n_features(self):
        return sum(1 if c["kind"] == "numeric" else len(c["categories"]) for c in self.columns)

    def feature_names(self):
        names = []
        for c in self.columns:
            if c["kind"] == "numeric":
                names.append(c["name"])
            else:
                names += [f"{c['name']}={v}" for v in c["categories"]]
        return names

    def numeric_features(self):
        """Boolean mask over ``feature_names()``: True for numeric columns' features."""
        mask = []
        for c in self.columns:
            mask += [True] if c["kind"] == "numeric" else [False] * len(c["categories"])
        return np.array(mask, bool)

    def scaling(self, X):
        """Standardization statistics of X's rows: mean and standard deviation of numeric
        features (1 where constant); 0 and 1 for one-hot features (left as they are)."""
        X = np.asarray(X, np.float64)
        numeric = self.numeric_features()
        mean = np.where(numeric, X.mean(axis=0), 0.0)
        std = np.where(numeric, X.std(axis=0), 1.0)
        std[~(std > 0)] = 1.0
        return mean, std

    def _check_missing(self, table):
        problems, rows_hit = [], set()
        for c in self.columns:
            if c["fill"] is not None:
                continue
            miss = np.flatnonzero(missing_mask(table.column(c["name"]), self.na_values))
            if miss.size:
                problems.append(f"column {c['name']!r} at {table.locations(miss)}")
                rows_hit.update(miss.tolist())
        if problems:
            raise MissingValuesError(
                f"{table.source}: missing values in {len(rows_hit)} row(s) (refused: choose "
                f"an imputation, --impute mean|median|most_frequent): " + "; ".join(problems))

    def transform(self, table, unseen=None):
        """The float64 matrix of the fitted columns of ``table`` (other columns ignored)."""
        if self.columns is None:
            raise RuntimeError("TabularEncoder.transform before fit")
        unseen = unseen or self.unseen
        if unseen not in ("warn", "error"):
            raise ValueError(f"unseen must be 'warn' or 'error', got {unseen!r}")
        absent = [c["name"] for c in self.columns if c["name"] not in table.columns]
        if absent:
            raise ValueError(f"{table.source} lacks the column(s) {absent} the model was "
                             f"trained on (it has: {', '.join(table.names)})")
        self._check_missing(table)
        n = len(table)
        X = np.zeros((n, self.n_features), np.float64)
        j = 0
        for c in self.columns:
            raw = table.column(c["name"])
            missing = missing_mask(raw, self.na_values)
            if c["kind"] == "numeric":
                numbers = as_numbers(raw, self.na_values)
                if numbers is None:
                    bad = [i for i in np.flatnonzero(~missing) if not _is_number(raw[i])]
                    raise ValueError(f"{table.source}: column {c['name']!r} is numeric in the "
                                     f"model but has text at {table.locations(bad)} "
                                     f"(e.g. {raw[bad[0]]!r})")
                if c["fill"] is not None:
                    numbers[missing] = c["fill"]
                X[:, j] = numbers
                j += 1
                continue
            strings = _as_strings(raw).astype(object)
            if c["fill"] is not None:
                strings[missing] = c["fill"]
            k = len(c["categories"])
            index = {v: i for i, v in enumerate(c["categories"])}
            codes = np.fromiter((index.get(v, -1) for v in strings), np.int64, count=n)
            new = np.flatnonzero(codes < 0)
            if new.size:
                values = sorted(set(strings[new].tolist()))
                shown = ", ".join(repr(v) for v in values[:_SHOW]) + \
                    (f" and {len(values) - _SHOW} more" if len(values) > _SHOW else "")
                message = (f"{table.source}: column {c['name']!r} has categories not seen in "
                           f"training ({shown}) at {table.locations(new)}")
                if unseen == "error":
                    raise ValueError(message)
                warnings.warn(message + ": encoded as all-zero rows", UnseenCategoryWarning,
                              stacklevel=2)
            hit = codes >= 0
            X[np.flatnonzero(hit), j + codes[hit]] = 1.0
            j += k
        return X

    # -- JSON --

    def to_config(self):
        return {"version": 1, "columns": [dict(c) for c in self.columns],
                "impute": self.impute, "unseen": self.unseen, "na_values": list(self.na_values)}

    @classmethod
    def from_config(cls, config):
        if not isinstance(config, dict) or config.get("version") != 1:
            raise ValueError(f"unknown tabular encoding format: {str(config)[:80]}")
        enc = cls(impute=config.get("impute"), unseen=config.get("unseen", "warn"),
                  na_values=config.get("na_values", NA_VALUES))
        enc.columns = [dict(c) for c in config["columns"]]
        for c in enc.columns:
            if c.get("kind") not in ("numeric", "categorical"):
                raise ValueError(f"column {c.get('name')!r} has unknown kind {c.get('kind')!r}")
        return enc
