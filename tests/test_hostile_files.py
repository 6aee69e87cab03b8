"""Files from strangers: fastopt.load, `fastopt info` and `fastopt predict` on crafted files.

Each hostile file must be refused with a ValueError that names the file and the problem,
before any large allocation (tracemalloc sees numpy's buffers), without running anything
(pickle payloads would create a marker file; a subprocess also watches Python's audit
events), and the process carries on.
"""

import io
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

import fastopt as fo
import fastopt.io as fio
from fastopt import cli

MB = 2 ** 20
PEAK_LIMIT = 8 * MB      # what refusing any of these files may allocate at most


class _Payload:
    """Pickles to "create the marker file": proof of execution if it ever appears."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _npy(arr, allow_pickle=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=allow_pickle)
    return buf.getvalue()


def _npy_raw_header(shape, descr="<f4", data=b""):
    """A .npy member whose header says whatever we like, followed by ``data``."""
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + data


def _write_zip(path, members, compression=zipfile.ZIP_STORED):
    """members: list of (name, bytes); duplicates allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", compression=compression) as z:
            for name, data in members:
                z.writestr(name, data)
    return path


def _good_parts(folder):
    """(meta, arrays) of a genuine trainer file."""
    model = fo.Sequential([fo.Dense(16, activation="relu"), fo.BatchNorm(), fo.Dense(3)],
                          input_dim=5, seed=1)
    trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.Adam(lr=1e-2),
                         schedule=fo.schedules.CosineDecay(T=10))
    rng = np.random.default_rng(0)
    trainer.fit(rng.standard_normal((40, 5)), rng.integers(0, 3, 40), epochs=1,
                batch_size=20, verbose=0)
    good = os.path.join(folder, "good.npz")
    fo.save(trainer, good)
    with zipfile.ZipFile(good) as z:
        raw = {n[:-4]: z.read(n) for n in z.namelist()}
    meta = json.loads(np.load(io.BytesIO(raw.pop(fio._META))).tobytes())
    arrays = {k: np.load(io.BytesIO(v)) for k, v in raw.items()}
    return good, meta, arrays


def _members(meta, arrays):
    blob = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return [(fio._META + ".npy", _npy(blob))] + [(k + ".npy", _npy(v, allow_pickle=v.dtype.hasobject))
                                                  for k, v in arrays.items()]


def _with_layer(meta, index, cls=None, **config):
    meta = json.loads(json.dumps(meta))
    spec = meta["model"]["layers"][index]
    if cls is not None:
        spec["class"] = cls
    spec["config"].update(config)
    return meta


def make_hostile_files(folder):
    """[(case, path, expected message regex, load kwargs)] — every hostile input tried."""
    folder = os.fspath(folder)
    good, meta, arrays = _good_parts(folder)
    marker = os.path.join(folder, "EXECUTED")
    cases = []

    def add(case, members, expect, kwargs=None, compression=zipfile.ZIP_STORED):
        path = os.path.join(folder, case + ".npz")
        _write_zip(path, members, compression)
        cases.append((case, path, expect, kwargs or {}))

    def add_meta(case, new_meta, expect, new_arrays=None):
        add(case, _members(new_meta, arrays if new_arrays is None else new_arrays), expect)

    params = arrays["model/parameters"]

    # -- pickles --
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    add("object_array", _members(meta, {**arrays, "model/parameters": evil}),
        "object array .*never unpickle")
    add("pickle_member", _members(meta, arrays) + [("payload.pkl", pickle.dumps(_Payload(marker)))],
        "unexpected member 'payload.pkl'")
    add("pickle_as_npy", [m if m[0] != "model/parameters.npy" else (m[0], pickle.dumps(_Payload(marker)))
                          for m in _members(meta, arrays)],
        "not a .npy array")
    add("object_description", [(fio._META + ".npy", _npy(evil, allow_pickle=True))],
        "object array")
    # -- classes that are not fastopt layers --
    add_meta("unknown_layer_class", _with_layer(meta, 0, "Conv2D"), "layer 0 has unknown class 'Conv2D'")
    add_meta("module_path_class", _with_layer(meta, 0, "os.system"), "unknown class 'os.system'")
    add_meta("import_class", _with_layer(meta, 0, "__import__"), "unknown class '__import__'")
    add_meta("dotted_fastopt_class", _with_layer(meta, 0, "fastopt.layers.Dense"),
             "unknown class 'fastopt.layers.Dense'")
    m = json.loads(json.dumps(meta))
    m["optimizer"]["class"] = "subprocess.Popen"
    add_meta("unknown_optimizer", m, "unknown optimizer class 'subprocess.Popen'")
    m = json.loads(json.dumps(meta))
    m["trainer"]["loss"]["name"] = "__import__"
    add_meta("unknown_loss", m, "unknown loss '__import__'")
    m = json.loads(json.dumps(meta))
    m["schedule"]["state"]["schedule"] = "os.system"
    add_meta("unknown_schedule", m, "unknown schedule")
    # -- sizes --
    add_meta("terabyte_dense", _with_layer(meta, 0, units=10 ** 12),
             r"units must be an integer in \[1, 2,147,483,647\], got 1000000000000")
    add_meta("twenty_gigabyte_dense", _with_layer(meta, 0, units=10 ** 9),
             "6,000,000,000 parameters, but the file stores .*refused before building")
    add_meta("terabyte_input", json.loads(json.dumps({**meta, "model": {**meta["model"], "input_dim": 10 ** 12}})),
             "input_dim must be an integer")
    add_meta("wide_input", json.loads(json.dumps({**meta, "model": {**meta["model"], "input_dim": 2 ** 30}})),
             "parameters, but the file stores")
    add_meta("negative_units", _with_layer(meta, 0, units=-5), "units must be an integer")
    add_meta("fractional_units", _with_layer(meta, 0, units=2.5), "units must be an integer")
    add_meta("string_units", _with_layer(meta, 0, units="16"), "units must be an integer")
    add_meta("bool_units", _with_layer(meta, 0, units=True), "units must be an integer")
    add_meta("unexpected_layer_argument", _with_layer(meta, 0, evil="x"),
             "incomplete or malformed .*unexpected keyword")
    add_meta("short_parameters", meta, "brings the model to 96 parameters, but the file stores 10",
             {**arrays, "model/parameters": params[:10]})
    add_meta("long_parameters", meta, "parameters of shape .* do not fit",
             {**arrays, "model/parameters": np.concatenate([params, params])})
    add_meta("matrix_parameters", meta, "not one-dimensional",
             {**arrays, "model/parameters": params.reshape(1, -1)})
    add_meta("wrong_optimizer_state", meta, "state buffer",
             {**arrays, "optimizer/state/exp_avg_sq": arrays["optimizer/state/exp_avg_sq"][:3]})
    add("header_claims_terabytes", [m if m[0] != "model/parameters.npy"
                                    else (m[0], _npy_raw_header((10 ** 12,), data=params.tobytes()))
                                    for m in _members(meta, arrays)],
        r"declares shape \(1000000000000,\) .* but its member holds")
    add("header_negative_shape", [m if m[0] != "model/parameters.npy"
                                  else (m[0], _npy_raw_header((-4,), data=params.tobytes()))
                                  for m in _members(meta, arrays)],
        r"declares a negative dimension \(-4,\)")
    add("string_dtype", _members(meta, {**arrays, "model/parameters": np.array(["a", "b"])}),
        "dtype <U1, not a plain number type")
    add("structured_dtype", _members(meta, {**arrays, "model/parameters": np.zeros(3, "f4,i4")}),
        "not a plain number type")
    # -- values --
    nan = params.copy()
    nan[7] = np.nan
    add_meta("nan_parameters", meta, "'model/parameters' holds 1 NaN or infinite",
             {**arrays, "model/parameters": nan})
    inf = arrays["optimizer/state/exp_avg"].copy()
    inf[0] = np.inf
    add_meta("inf_optimizer_state", meta, "'optimizer/state/exp_avg' holds 1 NaN or infinite",
             {**arrays, "optimizer/state/exp_avg": inf})
    # -- archives --
    bomb = os.path.join(folder, "zip_bomb.npz")
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, data in _members(meta, arrays):
            z.writestr(name, data)
        n = 256 * MB
        with z.open("filler.npy", "w", force_zip64=True) as w:
            head = _npy_raw_header((n,), "|u1")
            w.write(head)
            chunk = bytes(16 * MB)
            left = n
            while left:
                w.write(chunk[:min(left, len(chunk))])
                left -= min(left, len(chunk))
    cases.append(("zip_bomb", bomb, "would inflate to 268,.* over the limit of 67,108,864 .*zip bomb",
                  {"max_bytes": 64 * MB}))
    blob = open(good, "rb").read()
    for case, data in (("truncated_zip", blob[: len(blob) // 2]),
                       ("truncated_to_header", blob[:30]),
                       ("empty_file", b""),
                       ("text_file", b"hello, I am not a zip")):
        path = os.path.join(folder, case + ".npz")
        with open(path, "wb") as f:
            f.write(data)
        cases.append((case, path, "not a readable fastopt file", {}))
    flipped = bytearray(blob)
    for i in range(len(blob) // 2, len(blob) // 2 + 64):
        flipped[i] ^= 0xFF
    path = os.path.join(folder, "corrupted_bytes.npz")
    open(path, "wb").write(bytes(flipped))
    cases.append(("corrupted_bytes", path, "", {}))
    members = _members(meta, arrays)
    add("duplicate_member", members + [("model/parameters.npy", _npy(np.zeros_like(params)))],
        "member 'model/parameters.npy' more than once")
    add("duplicate_description", members + [members[0]], "more than once")
    add("extra_array", members + [("extra.npy", _npy(np.zeros(3)))],
        r"arrays the description does not name: \['extra'\]")
    add("traversal_name", members + [("../../etc/passwd", b"root")], "unexpected member")
    add("no_description", members[1:], "has no fastopt description")
    add("deflated_ok_but_missing_array", [m for m in members if m[0] != "model/parameters.npy"],
        "the parameter array is missing|named in the description is missing",
        compression=zipfile.ZIP_DEFLATED)
    # -- descriptions --
    def raw_description(case, text, expect):
        add(case, [(fio._META + ".npy", _npy(np.frombuffer(text.encode(), np.uint8)))]
            + members[1:], expect)

    raw_description("deep_json", "[" * 200_000 + "]" * 200_000, "description is corrupted")
    raw_description("not_json", "{'format': 'fastopt'}", "description is corrupted")
    raw_description("json_list", "[1, 2]", "not a fastopt file")
    newer = {**meta, "version": fio.VERSION + 1, "fastopt_version": "9.9.9"}
    add_meta("newer_version", newer, re.escape(f"was written by fastopt 9.9.9 (file format "
                                               f"{fio.VERSION + 1}); this is fastopt "
                                               f"{fo.__version__}"))
    add_meta("string_version", {**meta, "version": "1"}, "invalid format version '1'")
    m = json.loads(json.dumps(meta))
    del m["counters"]
    add_meta("missing_counters", m, "incomplete or malformed")
    m = json.loads(json.dumps(meta))
    m["counters"]["step_count"] = "many"
    add_meta("string_counter", m, "invalid literal")
    m = json.loads(json.dumps(meta))
    m["state"]["parameters"] = {"__array__": "nowhere"}
    add_meta("dangling_array_reference", m, r"does not name: \['model/parameters'\]")
    # -- not files --
    link = os.path.join(folder, "link.npz")
    os.symlink(good, link)
    cases.append(("symlink", link, "is a symbolic link .*does not follow links", {}))
    cases.append(("folder", folder, "is a folder", {}))
    if os.path.exists("/dev/zero"):
        cases.append(("device", "/dev/zero", "is a device", {}))
    fifo = os.path.join(folder, "fifo.npz")
    if hasattr(os, "mkfifo"):
        os.mkfifo(fifo)
        cases.append(("fifo", fifo, "is a FIFO", {}))
    return cases, marker


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return make_hostile_files(tmp_path_factory.mktemp("hostile"))




def test_every_hostile_file_is_refused_early_naming_the_file_and_the_problem(hostile):
    cases, marker = hostile
    assert len(cases) >= 50
    failures = []
    for case, path, expect, kwargs in cases:
        tracemalloc.start()
        try:
            fo.load(path, **kwargs)
        except ValueError as exc:
            message = str(exc)
            if not message.startswith(path):
                failures.append(f"{case}: message does not start with the path: {message}")
            elif not re.search(expect, message):
                failures.append(f"{case}: {message!r} does not match {expect!r}")
        except Exception as exc:  # noqa: BLE001 - the point is to see which
            failures.append(f"{case}: {type(exc).__name__} instead of ValueError: {exc}")
        else:
            failures.append(f"{case}: loaded without error")
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        if peak > PEAK_LIMIT:
            failures.append(f"{case}: allocated {peak / MB:.1f} MiB before refusing")
    assert not os.path.exists(marker), "a pickle payload ran"
    assert not failures, "\n".join(failures)


def test_the_default_limit_is_max_bytes(hostile, monkeypatch):
    cases, _ = hostile
    bomb = next(path for case, path, _, _ in cases if case == "zip_bomb")
    monkeypatch.setattr(fio, "MAX_BYTES", 64 * MB)
    with pytest.raises(ValueError, match="over the limit of 67,108,864"):
        fo.load(bomb)


def test_a_recompressed_genuine_file_still_loads(hostile, tmp_path):
    cases, _ = hostile
    good = os.path.join(os.path.dirname(cases[0][1]), "good.npz")
    squeezed = tmp_path / "deflated.npz"
    with zipfile.ZipFile(good) as z:
        _write_zip(squeezed, [(n, z.read(n)) for n in z.namelist()], zipfile.ZIP_DEFLATED)
    a, b = fo.load(good), fo.load(squeezed)
    np.testing.assert_array_equal(a.model.parameters, b.model.parameters)
    assert a.step_count == b.step_count


def test_read_npz_reads_data_files_with_the_same_checks(hostile, tmp_path):
    data = tmp_path / "data.npz"
    np.savez(data, X=np.arange(6.0).reshape(2, 3), y=np.array([0, 1]))
    arrays = fio.read_npz(data)
    np.testing.assert_array_equal(arrays["X"], np.arange(6.0).reshape(2, 3))
    cases, _ = hostile
    for case in ("zip_bomb", "object_array", "header_claims_terabytes", "symlink", "fifo"):
        path, kwargs = next((p, k) for c, p, _, k in cases if c == case)
        with pytest.raises(ValueError, match=re.escape(path)):
            fio.read_npz(path, **kwargs)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        fo.load(tmp_path / "missing.npz")


def test_the_genuine_file_still_loads_and_records_the_versions(hostile):
    cases, _ = hostile
    good = os.path.join(os.path.dirname(cases[0][1]), "good.npz")
    trainer = fo.load(good)
    assert isinstance(trainer, fo.Trainer)
    meta, _ = fio._read(good)
    assert meta["version"] == fio.VERSION and meta["fastopt_version"] == fo.__version__


def test_cli_info_and_predict_refuse_hostile_files(hostile, tmp_path, capsys):
    cases, marker = hostile
    data = tmp_path / "x.npz"
    np.savez(data, X=np.zeros((2, 5)))
    for case, path, expect, kwargs in cases:
        if kwargs:
            continue
        assert cli.main(["info", path]) == 2, case
        err = capsys.readouterr().err
        assert err.startswith("fastopt: error: ") and path in err, (case, err)
    for case in ("terabyte_dense", "object_array", "symlink"):
        path = next(p for c, p, _, _ in cases if c == case)
        assert cli.main(["predict", path, "--data", str(data), "--out",
                         str(tmp_path / "out.csv")]) == 2
        assert path in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()
    assert not os.path.exists(marker)


def test_nothing_is_executed_or_imported_while_refusing(hostile, tmp_path):
    """In a fresh process, with an audit hook: no exec, pickle lookup, process spawn or
    new import happens while every hostile file is refused, and the process runs on."""
    cases, _ = hostile
    listing = tmp_path / "cases.json"
    listing.write_text(json.dumps([[c, p, k] for c, p, _, k in cases]))
    script = textwrap.dedent(f"""
        import json, sys
        import fastopt, fastopt.io, fastopt.cli
        cases = json.load(open({str(listing)!r}))
        good = [p for c, p, k in cases if c == "symlink"][0]
        import os; fastopt.load(os.path.realpath(good))   # warm up lazy imports
        for c, p, k in cases:
            try:
                fastopt.load(p, **k)
            except ValueError:
                pass
        events = []
        WATCH = ("exec", "pickle.find_class", "os.system", "subprocess.Popen",
                 "os.posix_spawn", "os.exec", "os.fork", "ctypes.dlopen", "import",
                 "marshal.loads", "builtins.input")
        def hook(event, args):
            if event.startswith(WATCH):
                events.append((event, str(args)[:80]))
        sys.addaudithook(hook)
        refused = 0
        for c, p, k in cases:
            try:
                fastopt.load(p, **k)
            except ValueError:
                refused += 1
        sys.addaudithook(lambda *a: None)
        print(json.dumps({{"refused": refused, "events": events}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["refused"] == len(cases)
    assert report["events"] == []
