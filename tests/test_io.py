"""save / load: round trips, bit-exact resume, atomic writes, and files that are not right."""

import os
import zipfile

import numpy as np
import pytest

import fastopt as fo


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((300, 12)).astype(np.float32), rng.integers(0, 4, 300)


def make_trainer(optimizer=None, schedule=None):
    model = fo.Sequential([fo.Dense(32, activation="gelu"), fo.Dense(16, activation="tanh"), fo.Dense(4)],
                          input_dim=12, seed=3)
    return fo.Trainer(model, "softmax_cross_entropy", optimizer or fo.optim.Adam(lr=1e-2),
                      schedule=schedule, clip_norm=1.0)


def test_model_round_trip_predicts_identically(tmp_path):
    trainer = make_trainer()
    X, y = data()
    trainer.fit(X, y, epochs=2, verbose=0)
    path = tmp_path / "model.npz"
    fo.save(trainer.model, path)
    loaded = fo.load(path)
    assert isinstance(loaded, fo.Sequential)
    assert repr(loaded) == repr(trainer.model)
    np.testing.assert_array_equal(loaded.predict(X), trainer.model.predict(X))


@pytest.mark.parametrize("optimizer", [
    lambda: fo.optim.Adam(lr=1e-2, amsgrad=True),
    lambda: fo.optim.SGD(lr=0.05, momentum=0.9, nesterov=True),
    lambda: fo.optim.RMSprop(lr=1e-3, centered=True, momentum=0.5),
    lambda: fo.optim.Adagrad(lr=0.05),
    lambda: fo.optim.AdamW(lr=1e-2),
])
def test_resuming_from_a_checkpoint_is_bit_exact(tmp_path, optimizer):
    X, y = data()
    straight = make_trainer(optimizer(), fo.schedules.CosineDecay(T=40, interval="step"))
    straight.fit(X, y, epochs=4, batch_size=32, seed=5, verbose=0)

    first = make_trainer(optimizer(), fo.schedules.CosineDecay(T=40, interval="step"))
    first.fit(X, y, epochs=2, batch_size=32, seed=5, verbose=0)
    fo.save(first, tmp_path / "ckpt.npz")
    resumed = fo.load(tmp_path / "ckpt.npz")
    assert isinstance(resumed, fo.Trainer)
    resumed.fit(X, y, epochs=2, batch_size=32, seed=5, verbose=0)
    np.testing.assert_array_equal(resumed.model.parameters, straight.model.parameters)
    assert resumed.optimizer.lr == straight.optimizer.lr
    assert resumed.step_count == straight.step_count and resumed.epoch == 4


def test_resuming_mid_epoch_continues_with_the_next_batch(tmp_path):
    X, y = data()
    straight = make_trainer()
    straight.fit(X, y, epochs=2, batch_size=32, seed=1, verbose=0)

    class StopAt(fo.callbacks.Callback):
        def on_batch_end(self, trainer, step, logs):
            if step == 13:
                trainer.stop_training = True

    first = make_trainer()
    first.fit(X, y, epochs=2, batch_size=32, seed=1, verbose=0, callbacks=[StopAt()])
    assert first.step_count == 13 and first.epoch == 1 and first.batch_in_epoch == 3
    fo.save(first, tmp_path / "mid.npz")
    resumed = fo.load(tmp_path / "mid.npz")
    resumed.fit(X, y, epochs=1, batch_size=32, seed=1, verbose=0)
    np.testing.assert_array_equal(resumed.model.parameters, straight.model.parameters)


def test_no_pickle_and_the_file_is_plain_npz(tmp_path):
    path = tmp_path / "m.npz"
    fo.save(make_trainer(), path)
    with np.load(path, allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)


def test_a_crash_between_write_and_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    trainer = make_trainer()
    fo.save(trainer, path)
    good = path.read_bytes()
    trainer.model.parameters[:] = 0

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        fo.save(trainer, path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"], "temporary file left behind"
    assert fo.load(path).model.parameters.any()


def test_truncated_corrupted_and_foreign_files_are_refused_with_the_path(tmp_path):
    path = tmp_path / "good.npz"
    fo.save(make_trainer(), path)
    blob = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(blob[: len(blob) // 2])
    corrupted = tmp_path / "corrupted.npz"
    middle = len(blob) // 2
    corrupted.write_bytes(blob[:middle] + bytes(b ^ 0xFF for b in blob[middle:middle + 64]) + blob[middle + 64:])
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.arange(3))
    text = tmp_path / "text.npz"
    text.write_text("hello")
    for bad in (truncated, corrupted, foreign, text):
        with pytest.raises(ValueError, match=str(bad.name)):
            fo.load(bad)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        fo.load(tmp_path / "missing.npz")


def test_a_file_whose_arrays_do_not_fit_its_description_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    fo.save(make_trainer().model, path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    tampered = tmp_path / "tampered.npz"
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["model/parameters"] = arrays["model/parameters"][:10]
    np.savez(tampered, **arrays)
    with pytest.raises(ValueError, match="tampered.npz"):
        fo.load(tampered)
    assert members
