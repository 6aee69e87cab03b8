"""Save and load models and trainers: one ``.npz`` of arrays plus a JSON description.

File format (version ``VERSION``): a zip archive (``np.savez``) whose members are ``.npy``
arrays of plain numeric dtypes. ``__fastopt__.npy`` holds the UTF-8 JSON description:
``{"format": "fastopt", "version": 1, "fastopt_version": "0.1.0", "kind": "model" |
"trainer", "model": {...}, "state": {...}, ...}``; every other member is an array the
description names (``{"__array__": "model/parameters"}``). A reader refuses a file whose
``version`` is newer than the one it reads, naming both fastopt versions.

Files from strangers: loading never runs code and never allocates more than the file's
declared, limited size. No pickle, ever (object and structured dtypes are refused from
the ``.npy`` header, before any data is read); layer, optimizer, schedule and loss
classes are looked up only in fastopt's own registries; the layer sizes of the
description must fit the arrays actually stored before anything is built; every array
header is checked against its member's size before its buffer is made. Limits:
``MAX_BYTES`` (the arrays of one file inflate to at most 8 GiB in all, ``load(path,
max_bytes=...)`` to change it; zip bombs stop there), ``MAX_DESCRIPTION_BYTES`` (64 MiB of
JSON), ``MAX_MEMBERS``. Refused too: symbolic links and anything not a regular file,
duplicate or unexpected members, encrypted or oddly compressed members, NaN or infinite
values in the model's or the optimizer's arrays (fastopt never saves them: non-finite
steps are refused during training). Every refusal is a ``ValueError`` that starts with
the path (``FileNotFoundError`` for a missing file).

Writes are atomic: a temporary file in the same folder (``.<name>.<pid>.<random>.fastopt-tmp``,
locked while written), fsync, rename, fsync of the folder. A crash (SIGKILL, power loss)
mid-write leaves the previous file intact; a later successful save of the same path
removes the temporary files that dead writers left. A full disk or a read-only folder is
an ``OSError`` naming the path and the cause; the previous file stays as it was.
"""

import errno
import json
import math
import os
import stat
import tempfile
import zipfile

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

__all__ = ["save", "load", "read_npz", "MAX_BYTES", "MAX_DESCRIPTION_BYTES", "MAX_MEMBERS", "VERSION"]

FORMAT = "fastopt"
VERSION = 1
_META = "__fastopt__"
MAX_BYTES = 8 * 2 ** 30              # all arrays of one file, as inflated
MAX_DESCRIPTION_BYTES = 64 * 2 ** 20  # the JSON description
MAX_MEMBERS = 100_000
_MAX_WIDTH = 2 ** 31 - 1              # any layer width or input_dim
_MAX_LAYERS = 100_000
_MAX_NPY_HEADER = 10_000
_TMP_SUFFIX = ".fastopt-tmp"
_UMASK = os.umask(0)
os.umask(_UMASK)


def _split_arrays(value, prefix, arrays):
    """JSON-able copy of ``value`` with every ndarray moved into ``arrays``."""
    if isinstance(value, np.ndarray):
        arrays[prefix] = value
        return {"__array__": prefix}
    if isinstance(value, dict):
        return {str(k): _split_arrays(v, f"{prefix}/{k}", arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split_arrays(v, f"{prefix}/{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _array_refs(value, found):
    """Every array key the description names."""
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            found.append(value["__array__"])
        else:
            for v in value.values():
                _array_refs(v, found)
    elif isinstance(value, list):
        for v in value:
            _array_refs(v, found)
    return found


def _join_arrays(value, arrays, path):
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            key = value["__array__"]
            if not isinstance(key, str) or key not in arrays:
                raise ValueError(f"{path}: array {key!r} named in the description is missing")
            return arrays[key]
        return {k: _join_arrays(v, arrays, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_arrays(v, arrays, path) for v in value]
    return value


# ---- writing ----

_SAVE_CAUSES = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EROFS: "the folder is on a read-only file system",
    errno.EACCES: "no permission to write in the folder",
    errno.EPERM: "the operation is not permitted in the folder",
}
if hasattr(errno, "EDQUOT"):
    _SAVE_CAUSES[errno.EDQUOT] = "the disk quota is exceeded"


def _save_error(exc, path, existed):
    cause = _SAVE_CAUSES.get(exc.errno, exc.strerror or str(exc))
    kept = (f"the previous {path} is untouched" if existed else "nothing was written")
    return OSError(exc.errno, f"could not save {path}: {cause} ({exc.strerror}); {kept}")


def _tmp_prefix(path):
    return "." + os.path.basename(path)[:120] + "."


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _remove_stale_temporaries(folder, path, keep=None):
    """Delete the temporary files earlier saves of ``path`` left when their process died
    (SIGKILL, power loss): the writer's pid is gone and nobody holds the file's lock."""
    prefix = _tmp_prefix(path)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX)) or name == keep:
            continue
        try:
            pid = int(name[len(prefix):-len(_TMP_SUFFIX)].split(".")[0])
        except ValueError:
            continue
        if _pid_alive(pid):
            continue
        full = os.path.join(folder, name)
        try:
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live writer: skip
            st = os.fstat(fd)
            now = os.lstat(full)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                os.unlink(full)
                removed.append(name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def save(obj, path):
    """Save a Sequential or a Trainer (model + optimizer + schedule + counters) to ``path``.

    Atomic (see the module docstring); raises ``OSError`` naming the path and the cause
    (disk full, read-only folder, ...) with the previous file untouched.
    """
    from . import __version__
    from .model import Sequential

    # A Trainer is anything with a model and a state_dict (train.Trainer): io needs only
    # the file format, not the training loop.
    if isinstance(obj, Sequential):
        model, trainer_state = obj, None
    elif isinstance(getattr(obj, "model", None), Sequential) and hasattr(obj, "state_dict"):
        model, trainer_state = obj.model, obj.state_dict()
    else:
        raise TypeError(f"save takes a Sequential or a Trainer, got {type(obj).__name__}")
    arrays = {}
    meta = {"format": FORMAT, "version": VERSION, "fastopt_version": __version__,
            "kind": "trainer" if trainer_state is not None else "model",
            "model": model.get_config(),
            "state": _split_arrays(model.get_state(), "model", arrays)}
    if trainer_state is not None:
        meta["trainer"] = trainer_state["trainer"]
        meta["counters"] = trainer_state["counters"]
        opt = trainer_state["optimizer"]
        meta["optimizer"] = {"class": opt["class"],
                             "state": _split_arrays(opt["state"], "optimizer", arrays)}
        if "schedule" in trainer_state:
            sched = trainer_state["schedule"]
            meta["schedule"] = {"class": sched["class"],
                                "state": _split_arrays(sched["state"], "schedule", arrays)}
    blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    existed = os.path.exists(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path) + f"{os.getpid()}.",
                                   suffix=_TMP_SUFFIX, dir=folder)
        with os.fdopen(fd, "wb") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when we close or die
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600
            np.savez(f, **{_META: blob}, **arrays)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)   # still locked: no cleaner can take it for stale
            tmp = None
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError) and exc.errno in _SAVE_CAUSES:
            raise _save_error(exc, path, existed) from exc
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    _remove_stale_temporaries(folder, path)
    return path


# ---- reading: every check before any allocation that the file's size does not bound ----

def _refuse(path, what):
    return ValueError(f"{path}: {what}")


def _open_regular(path):
    """A read-only file object for ``path``, which must be a regular file, not a link."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise _refuse(path, f"is a symbolic link (to {target!r}); fastopt.load does not "
                            "follow links: pass the real path if you trust it")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise _refuse(path, f"is {kind}, not a fastopt file")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(path, "became a symbolic link while being opened") from None
        raise ValueError(f"{path}: cannot be read ({exc.strerror})") from None
    st2 = os.fstat(fd)
    if not stat.S_ISREG(st2.st_mode) or (st.st_dev, st.st_ino) != (st2.st_dev, st2.st_ino):
        os.close(fd)
        raise _refuse(path, "changed while being opened")
    return os.fdopen(fd, "rb")


def _read_member(z, info, path, name):
    """One .npy member, its header checked against the member's declared size first."""
    with z.open(info) as fp:
        try:
            version = np.lib.format.read_magic(fp)
        except ValueError as exc:
            raise _refuse(path, f"member {info.filename!r} is not a .npy array ({exc})") from None
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(fp, max_header_size=_MAX_NPY_HEADER)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(fp, max_header_size=_MAX_NPY_HEADER)
        else:
            raise _refuse(path, f"array {name!r} has .npy format version {version}, which a "
                                "fastopt file never uses")
        shape, fortran, dtype = header
        if dtype.hasobject:
            raise _refuse(path, f"array {name!r} is an object array (pickled Python objects); "
                                "fastopt files hold numbers only and never unpickle")
        if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biuf":
            raise _refuse(path, f"array {name!r} has dtype {dtype}, not a plain number type")
        if any(int(s) < 0 for s in shape):
            raise _refuse(path, f"array {name!r} declares a negative dimension {tuple(shape)}")
        count = math.prod(int(s) for s in shape)
        nbytes = count * dtype.itemsize
        header_len = fp.tell()
        if header_len + nbytes != info.file_size:
            raise _refuse(path, f"array {name!r} declares shape {tuple(shape)} of {dtype} "
                                f"({nbytes:,} bytes) but its member holds "
                                f"{info.file_size - header_len:,} bytes")
        flat = np.empty(count, dtype=dtype)
        view = memoryview(flat).cast("B") if nbytes else memoryview(b"")
        done = 0
        while done < nbytes:
            got = fp.readinto(view[done:done + (1 << 24)])
            if not got:
                raise _refuse(path, f"array {name!r} is truncated")
            done += got
        if fp.read(1):
            raise _refuse(path, f"array {name!r} has data after its end")
    arr = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
    if not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
    return np.ascontiguousarray(arr)


def read_npz(path, max_bytes=None):
    """The arrays of a plain ``.npz`` (a data file, not a model) with ``load``'s safety:
    regular file only, numeric dtypes only, headers checked against member sizes, at most
    ``max_bytes`` (default ``MAX_BYTES``) inflated. Returns {name: array}."""
    path = os.fspath(path)
    return _read(path, max_bytes, description=False)[1]


def _read(path, max_bytes=None, description=True):
    max_bytes = MAX_BYTES if max_bytes is None else int(max_bytes)
    f = _open_regular(path)
    try:
        with f, zipfile.ZipFile(f) as z:
            infos = z.infolist()
            if len(infos) > MAX_MEMBERS:
                raise _refuse(path, f"has {len(infos):,} members, over the limit of {MAX_MEMBERS:,}")
            seen = set()
            for info in infos:
                if info.filename in seen:
                    raise _refuse(path, f"has member {info.filename!r} more than once (a "
                                        "tampered file: which copy would count?)")
                seen.add(info.filename)
                if not info.filename.endswith(".npy") or info.is_dir():
                    raise _refuse(path, f"has an unexpected member {info.filename!r}: a fastopt "
                                        "file holds only .npy arrays")
                if info.flag_bits & 0x1:
                    raise _refuse(path, f"member {info.filename!r} is encrypted")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise _refuse(path, f"member {info.filename!r} uses zip compression method "
                                        f"{info.compress_type}, which fastopt does not read")
            total = sum(info.file_size for info in infos)
            if total > max_bytes:
                raise _refuse(path, f"its arrays would inflate to {total:,} bytes, over the limit "
                                    f"of {max_bytes:,} (fastopt.io.MAX_BYTES, or load(path, "
                                    "max_bytes=...)); refused unread (a zip bomb?)")
            if not description:
                return None, {i.filename[:-4]: _read_member(z, i, path, i.filename[:-4])
                              for i in infos}
            meta_info = next((i for i in infos if i.filename == _META + ".npy"), None)
            if meta_info is None:
                raise _refuse(path, "is not a fastopt file: it has no fastopt description")
            if meta_info.file_size > MAX_DESCRIPTION_BYTES:
                raise _refuse(path, f"its description is {meta_info.file_size:,} bytes, over "
                                    f"the limit of {MAX_DESCRIPTION_BYTES:,}")
            blob = _read_member(z, meta_info, path, _META)
            meta = _parse_description(blob, path)
            arrays = {}
            for info in infos:
                if info is meta_info:
                    continue
                name = info.filename[:-4]
                arrays[name] = _read_member(z, info, path, name)
    except FileNotFoundError:
        raise
    except ValueError as exc:
        message = str(exc)
        if message.startswith(f"{path}:"):
            raise
        raise _refuse(path, f"is not a readable fastopt file (truncated, corrupted or "
                            f"another format): {message}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, KeyError,
            NotImplementedError, RuntimeError, OverflowError) as exc:
        raise _refuse(path, f"is not a readable fastopt file (truncated, corrupted or "
                            f"another format): {type(exc).__name__}: {exc}") from None
    refs = _array_refs(meta, [])
    if len(set(refs)) != len(refs):
        raise _refuse(path, "the description names one array twice")
    extra = sorted(set(arrays) - set(refs))
    if extra:
        raise _refuse(path, f"holds arrays the description does not name: {extra[:5]}")
    for key, arr in arrays.items():
        if key.startswith(("model/", "optimizer/")) and arr.dtype.kind == "f":
            bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
            if bad:
                raise _refuse(path, f"array {key!r} holds {bad:,} NaN or infinite values; "
                                    "fastopt never saves them (non-finite steps are refused), "
                                    "so the file is damaged or forged")
    return meta, arrays


def _parse_description(blob, path):
    from . import __version__

    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise _refuse(path, "the fastopt description is not a byte string")
    try:
        meta = json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _refuse(path, f"the fastopt description is corrupted: {type(exc).__name__}: "
                            f"{exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise _refuse(path, f"is not a fastopt file (format {fmt!r})")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _refuse(path, f"has an invalid format version {version!r}")
    if version > VERSION:
        writer = meta.get("fastopt_version")
        writer = f"fastopt {writer}" if isinstance(writer, str) else "a newer fastopt"
        raise _refuse(path, f"was written by {writer} (file format {version}); this is "
                            f"fastopt {__version__}, which reads file format {VERSION}: "
                            "upgrade fastopt to load it")
    return meta


def _layer_registry():
    from . import layers as layer_module

    registry = {}
    for name in getattr(layer_module, "__all__", ()):
        cls = getattr(layer_module, name, None)
        if isinstance(cls, type) and issubclass(cls, layer_module.Layer):
            registry[name] = cls
    return registry


def _int_field(value, what, path, low=1, high=_MAX_WIDTH):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _refuse(path, f"{what} must be an integer in [{low}, {high:,}], got {value!r}")
    return value


def _check_model_config(config, stored, path):
    """The description's layer sizes, checked against the number of parameters the file
    actually stores, before any layer or buffer is made."""
    if not isinstance(config, dict):
        raise _refuse(path, "the model description is not a JSON object")
    dim = _int_field(config.get("input_dim"), "input_dim", path)
    if config.get("dtype") not in ("float32", "float64"):
        raise _refuse(path, f"dtype must be 'float32' or 'float64', got {config.get('dtype')!r}")
    specs = config.get("layers")
    if not isinstance(specs, list) or not 1 <= len(specs) <= _MAX_LAYERS:
        raise _refuse(path, "the model description has no list of layers")
    registry = _layer_registry()
    needed = 0
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
            raise _refuse(path, f"layer {i} is not a {{'class': ..., 'config': {{...}}}} object")
        name = spec.get("class")
        if not isinstance(name, str) or name not in registry:
            raise _refuse(path, f"layer {i} has unknown class {name!r}; fastopt builds only its "
                                f"own layers: {sorted(registry)}")
        cfg = spec["config"]
        if not all(isinstance(k, str) and k.isidentifier() for k in cfg):
            raise _refuse(path, f"layer {i} ({name}) has a malformed config")
        if name == "Dense":
            units = _int_field(cfg.get("units"), f"layer {i} (Dense) units", path)
            needed += dim * units + (units if cfg.get("use_bias", True) else 0)
            dim = units
        elif name == "BatchNorm":
            needed += 2 * dim if cfg.get("affine", True) else 0
        if needed > stored:
            raise _refuse(path, f"layer {i} ({name}, {dim:,} wide) brings the model to {needed:,} "
                                f"parameters, but the file stores {stored:,}; refused before "
                                "building it (a forged or damaged description)")


def load(path, max_bytes=None):
    """Load what ``save`` wrote: a Sequential, or a Trainer ready to ``fit`` on (resume).

    Safe on files from strangers (see the module docstring): never runs code, refuses
    before any allocation larger than ``max_bytes`` (default ``MAX_BYTES``), and raises a
    ``ValueError`` starting with the path on anything that is not a sound fastopt file.
    """
    from .model import Sequential
    from .train import Trainer

    path = os.fspath(path)
    meta, arrays = _read(path, max_bytes)
    try:
        state = meta["state"]
        params_key = state["parameters"]["__array__"]
        if params_key not in arrays or arrays[params_key].ndim != 1:
            raise ValueError("the parameter array is missing or not one-dimensional")
        _check_model_config(meta["model"], arrays[params_key].size, path)
        model = Sequential.from_config(meta["model"])
        model.set_state(_join_arrays(state, arrays, path))
        if meta["kind"] == "model":
            return model
        if meta["kind"] != "trainer":
            raise ValueError(f"unknown kind {meta['kind']!r}")
        state = {"trainer": meta["trainer"], "counters": meta["counters"],
                 "optimizer": {"class": meta["optimizer"]["class"],
                               "state": _join_arrays(meta["optimizer"]["state"], arrays, path)}}
        if "schedule" in meta:
            state["schedule"] = {"class": meta["schedule"]["class"],
                                 "state": _join_arrays(meta["schedule"]["state"], arrays, path)}
        trainer = Trainer.from_state_dict(model, state)
        return trainer
    except (KeyError, TypeError, AttributeError, IndexError, OverflowError) as exc:
        raise ValueError(f"{path}: the fastopt description is incomplete or malformed "
                         f"({type(exc).__name__}: {exc})") from None
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith(path) else f"{path}: {message}") from None
