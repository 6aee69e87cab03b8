"""Save and load models and trainers: one ``.npz`` of arrays plus a JSON description.

No pickle, ever: files are read with ``np.load(..., allow_pickle=False)`` and loading
builds objects only from the JSON's class names, looked up in fastopt's own registries.
Writes are atomic (temporary file in the same folder, fsync, rename): a crash mid-write
leaves the previous file intact. Loading checks the whole file before returning anything.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

__all__ = ["save", "load"]

FORMAT = "fastopt"
VERSION = 1
_META = "__fastopt__"
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


def _join_arrays(value, arrays, path):
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            key = value["__array__"]
            if key not in arrays:
                raise ValueError(f"{path}: array {key!r} named in the description is missing")
            return arrays[key]
        return {k: _join_arrays(v, arrays, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_arrays(v, arrays, path) for v in value]
    return value


def save(obj, path):
    """Save a Sequential or a Trainer (model + optimizer + schedule + counters) to ``path``."""
    from .model import Sequential
    from .train import Trainer

    if isinstance(obj, Trainer):
        if type(obj) is not Trainer:
            raise TypeError(f"save takes a Sequential or a plain Trainer; save a "
                            f"{type(obj).__name__}'s model instead (fastopt.save(trainer.model, path))")
        model, trainer = obj.model, obj
    elif isinstance(obj, Sequential):
        model, trainer = obj, None
    else:
        raise TypeError(f"save takes a Sequential or a Trainer, got {type(obj).__name__}")
    arrays = {}
    meta = {"format": FORMAT, "version": VERSION, "kind": "trainer" if trainer else "model",
            "model": model.get_config(),
            "state": _split_arrays(model.get_state(), "model", arrays)}
    if trainer is not None:
        opt = trainer.optimizer
        meta["trainer"] = trainer.get_config()
        meta["counters"] = trainer.counters()
        meta["optimizer"] = {"class": type(opt).__name__,
                             "state": _split_arrays(opt.state_dict(), "optimizer", arrays)}
        if trainer.schedule is not None:
            meta["schedule"] = {"class": type(trainer.schedule).__name__,
                                "state": _split_arrays(trainer.schedule.state_dict(), "schedule",
                                                       arrays)}
    blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastopt-", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{_META: blob}, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def _read(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise ValueError(f"{path} is not a readable fastopt file (truncated, corrupted or "
                         f"another format): {exc}") from None
    if _META not in arrays:
        raise ValueError(f"{path} is not a fastopt file: it has no fastopt description")
    try:
        meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: the fastopt description is corrupted: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fastopt file (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path} was written by format version {meta.get('version')}; this "
                         f"fastopt reads version {VERSION}")
    return meta, arrays


def _build_model(config, path):
    from . import layers as layer_module
    from .model import Sequential

    built = []
    for i, spec in enumerate(config["layers"]):
        cls = getattr(layer_module, spec["class"], None)
        if not (isinstance(cls, type) and issubclass(cls, layer_module.Layer)):
            raise ValueError(f"{path}: layer {i} has unknown class {spec['class']!r}")
        built.append(cls(**spec["config"]))
    return Sequential(built, input_dim=config["input_dim"], dtype=config["dtype"],
                      seed=config["seed"], metadata=config.get("metadata"))


def load(path):
    """Load what ``save`` wrote: a Sequential, or a Trainer ready to ``fit`` on (resume)."""
    from . import optim, schedules
    from .train import Trainer

    path = os.fspath(path)
    meta, arrays = _read(path)
    try:
        model = _build_model(meta["model"], path)
        model.set_state(_join_arrays(meta["state"], arrays, path))
        if meta["kind"] == "model":
            return model
        tconf = meta["trainer"]
        opt_meta = meta["optimizer"]
        opt_cls = getattr(optim, opt_meta["class"], None)
        if not (isinstance(opt_cls, type) and issubclass(opt_cls, optim.Optimizer)):
            raise ValueError(f"unknown optimizer class {opt_meta['class']!r}")
        optimizer = opt_cls()
        optimizer.load_state_dict(_join_arrays(opt_meta["state"], arrays, path))
        schedule = None
        if "schedule" in meta:
            schedule = schedules.from_state_dict(_join_arrays(meta["schedule"]["state"], arrays,
                                                              path))
        from .losses import LOSSES

        loss_cls = LOSSES.get(tconf["loss"]["name"])
        if loss_cls is None:
            raise ValueError(f"unknown loss {tconf['loss']['name']!r}")
        trainer = Trainer(model, loss_cls(**tconf["loss"]["config"]), optimizer,
                          schedule=schedule, clip_norm=tconf["clip_norm"],
                          clip_value=tconf["clip_value"], metrics=tconf["metrics"],
                          on_nonfinite=tconf["on_nonfinite"])
        counters = meta["counters"]
        trainer.step_count = int(counters["step_count"])
        trainer.epoch = int(counters["epoch"])
        trainer.batch_in_epoch = int(counters["batch_in_epoch"])
        trainer.seed = counters["seed"]
        trainer._layout = counters.get("layout")
        return trainer
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: the fastopt description is incomplete or malformed "
                         f"({type(exc).__name__}: {exc})") from None
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith(path) else f"{path}: {message}") from None
