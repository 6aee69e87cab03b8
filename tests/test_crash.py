"""Crashes and interrupts on real processes: SIGKILL during checkpoint writes, SIGINT and
SIGTERM during fit, a full disk and a read-only folder during a save.

``FASTOPT_KILLS`` sets how many SIGKILLs the kill test delivers (default 20, the issue's
minimum; CI runs the default).
"""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastopt as fo
import fastopt.io as fio

HERE = os.path.dirname(os.path.abspath(__file__))

COMMON = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import fastopt as fo

    def data():
        rng = np.random.default_rng(0)
        return rng.standard_normal((256, 64)).astype(np.float32), rng.integers(0, 10, 256)

    def make(width):
        model = fo.Sequential([fo.Dense(width, activation="relu"), fo.Dense(width, activation="tanh"),
                               fo.Dense(10)], input_dim=64, seed=3)
        return fo.Trainer(model, "softmax_cross_entropy", fo.optim.Adam(lr=1e-3),
                          schedule=fo.schedules.CosineDecay(T=400, interval="step"))

    class Report(fo.callbacks.Callback):
        def on_batch_end(self, trainer, step, logs):
            print(json.dumps({"step": step, "epoch": trainer.epoch}), flush=True)
""")

CHILD = COMMON + textwrap.dedent("""
    path, epochs, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    X, y = data()
    if mode == "init":
        fo.save(make(int(sys.argv[4])), path)
        sys.exit(0)
    trainer = fo.load(path)
    print(json.dumps({"start": trainer.epoch}), flush=True)
    callbacks = [fo.Checkpoint(path, every_n_epochs=1)]
    if mode == "signal":
        callbacks.append(Report())
    left = epochs - trainer.epoch
    history = trainer.fit(X, y, epochs=max(left, 1), batch_size=32, seed=7, verbose=0,
                          callbacks=callbacks) if left > 0 else None
    print(json.dumps({"done": trainer.epoch, "step": trainer.step_count,
                      "interrupted": bool(history and history.interrupted)}), flush=True)
""")


def _child(args, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _straight(width, epochs):
    """The same training in one uninterrupted process (this one)."""
    ns = {}
    exec(COMMON, ns)
    X, y = ns["data"]()
    trainer = ns["make"](width)
    with fo.threads(1):
        trainer.fit(X, y, epochs=epochs, batch_size=32, seed=7, verbose=0)
    return trainer


def _temporaries(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(fio._TMP_SUFFIX))


def test_sigkill_at_random_moments_never_breaks_the_checkpoint(tmp_path):
    kills_wanted = int(os.environ.get("FASTOPT_KILLS", "20"))
    width, epochs = 384, 400      # ~1 MiB of weights, 3 MiB per checkpoint with Adam's state
    path = tmp_path / "ckpt.npz"
    init = _child([path, epochs, "init", width])
    assert init.wait(60) == 0, init.stderr.read()
    rng = random.Random(1234)
    kills = mid_write = resumes = 0
    last_epoch = 0
    deadline = time.monotonic() + 150
    while kills < kills_wanted and time.monotonic() < deadline:
        proc = _child([path, epochs, "run"])
        line = proc.stdout.readline()   # the child has loaded the checkpoint and starts fitting
        assert line.startswith('{"start"'), line + proc.stderr.read()
        resumes += 1
        if kills % 2:
            time.sleep(rng.uniform(0.0, 0.25))   # any moment
        else:                                      # aimed: somewhere inside a write
            before = set(_temporaries(tmp_path))
            t_end = time.monotonic() + 2.0
            while time.monotonic() < t_end and not set(_temporaries(tmp_path)) - before:
                time.sleep(0.0005)
            time.sleep(rng.uniform(0.0, 0.01))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()
        if proc.returncode != -signal.SIGKILL:
            break                        # it finished before the kill: the run is over
        kills += 1
        mid_write += bool(_temporaries(tmp_path))
        trainer = fo.load(path)          # whatever the moment, the checkpoint loads
        assert isinstance(trainer, fo.Trainer)
        assert trainer.epoch >= last_epoch and trainer.batch_in_epoch == 0
        last_epoch = trainer.epoch
    assert kills >= kills_wanted, f"only {kills} kills before the run ended or timed out"
    # The last run resumes from the last checkpoint and ends like a run never killed.
    proc = _child([path, epochs, "run"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    resumes += 1
    assert json.loads(out.strip().splitlines()[-1])["done"] == epochs
    assert _temporaries(tmp_path) == [], "a later successful save must remove dead writers' files"
    resumed = fo.load(path)
    straight = _straight(width, epochs)
    np.testing.assert_array_equal(resumed.model.parameters, straight.model.parameters)
    assert resumed.step_count == straight.step_count
    print(f"\nkill test: {kills} SIGKILLs ({mid_write} left a temporary file: mid-write), "
          f"{resumes} successful resumes, final weights bitwise equal to an uninterrupted run")
    assert mid_write >= 1, "no kill landed during a write: the test does not test writes"


def _rest(proc):
    """What the child still writes (communicate() would drop what readline() buffered)."""
    out = proc.stdout.read()
    err = proc.stderr.read()
    proc.wait(60)
    return out, err


def _start_signal_child(path, epochs=10_000):
    init = _child([path, epochs, "init", 64])
    assert init.wait(60) == 0, init.stderr.read()
    proc = _child([path, epochs, "signal"])
    assert proc.stdout.readline().startswith('{"start"')
    for _ in range(5):                     # a few steps in
        seen = json.loads(proc.stdout.readline())
    return proc, seen


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")
def test_sigint_during_fit_returns_the_history_and_writes_a_final_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    proc, seen = _start_signal_child(path)
    proc.send_signal(signal.SIGINT)
    out, err = _rest(proc)
    assert proc.returncode == 0, err
    lines = [seen] + [json.loads(line) for line in out.strip().splitlines()]
    final = lines[-1]
    assert final["interrupted"] is True
    assert final["step"] == lines[-2]["step"], "stops right after the step it was in"
    saved = fo.load(path)
    assert saved.step_count == final["step"]


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")
def test_sigterm_during_fit_writes_a_final_checkpoint_then_exits_as_terminated(tmp_path):
    path = tmp_path / "ckpt.npz"
    proc, seen = _start_signal_child(path, epochs=10_000)
    proc.send_signal(signal.SIGTERM)
    out, err = _rest(proc)
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, err)
    last = ([seen] + [json.loads(line) for line in out.strip().splitlines()])[-1]
    assert "done" not in last, "the process must not carry on after SIGTERM"
    saved = fo.load(path)
    assert saved.step_count == last["step"], "the final checkpoint holds the last finished step"
    assert _temporaries(tmp_path) == []
    # ... and it resumes mid-epoch where it stopped, like a run never stopped.
    ns = {}
    exec(COMMON, ns)
    X, y = ns["data"]()
    total = saved.step_count + 9
    straight = ns["make"](64)
    with fo.threads(1):
        steps_per_epoch = 256 // 32
        straight.fit(X, y, epochs=-(-total // steps_per_epoch), batch_size=32, seed=7, verbose=0,
                     callbacks=[_StopAt(total)])
        saved.fit(X, y, epochs=-(-total // steps_per_epoch) - saved.epoch, batch_size=32, seed=7,
                  verbose=0, callbacks=[_StopAt(total)])
    assert saved.step_count == straight.step_count == total
    np.testing.assert_array_equal(saved.model.parameters, straight.model.parameters)


class _StopAt(fo.callbacks.Callback):
    def __init__(self, step):
        self.step = step

    def on_batch_end(self, trainer, step, logs):
        if step >= self.step:
            trainer.stop_training = True


# ---- a full disk, a read-only folder ----

def _small_trainer(width=8):
    model = fo.Sequential([fo.Dense(width, activation="relu"), fo.Dense(2)], input_dim=4, seed=0)
    return fo.Trainer(model, "softmax_cross_entropy", fo.optim.Adam(lr=1e-2))


@pytest.mark.parametrize("where, err, cause", [
    ("fsync", errno.ENOSPC, "the disk is full"),
    ("mkstemp", errno.EROFS, "read-only file system"),
    ("mkstemp", errno.EACCES, "no permission to write"),
])
def test_a_failed_save_says_why_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where,
                                                                   err, cause):
    path = tmp_path / "ckpt.npz"
    fo.save(_small_trainer(), path)
    good = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    target = (os, "fsync") if where == "fsync" else (fio.tempfile, "mkstemp")
    monkeypatch.setattr(*target, fail)
    rng = np.random.default_rng(0)
    trainer = _small_trainer(width=8)
    with pytest.raises(OSError, match=f"could not save {path}: .*{cause}.*the previous {path} "
                                      "is untouched") as info:
        trainer.fit(rng.standard_normal((20, 4)), rng.integers(0, 2, 20), epochs=2, verbose=0,
                    callbacks=[fo.Checkpoint(path)])
    assert info.value.errno == err
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"], "temporary file left behind"
    assert fo.load(path).step_count == 0


def _mount(*args):
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs mounts are Linux")
def test_a_really_full_and_really_read_only_file_system(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0 or _mount("-t", "tmpfs", "-o", "size=128k", "tmpfs", str(folder)).returncode:
        pytest.skip("needs root and permission to mount a tmpfs")
    try:
        path = folder / "ckpt.npz"
        fo.save(_small_trainer(), path)
        good = path.read_bytes()
        with pytest.raises(OSError, match="the disk is full.*is untouched") as info:
            fo.save(_small_trainer(width=20000), path)      # ~550 KiB: does not fit
        assert info.value.errno == errno.ENOSPC
        assert path.read_bytes() == good and os.listdir(folder) == ["ckpt.npz"]
        if _mount("-o", "remount,ro", str(folder)).returncode == 0:
            with pytest.raises(OSError, match="read-only file system.*is untouched"):
                fo.save(_small_trainer(), path)
            assert path.read_bytes() == good
        assert fo.load(path).step_count == 0
    finally:
        _mount("-o", "remount,rw", str(folder))
        subprocess.run(["umount", str(folder)], capture_output=True)
