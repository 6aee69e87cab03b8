"""fastopt.sklearn's MLP estimators beside scikit-learn's, on scikit-learn's bundled data sets.

Same settings for both (hidden (100,), relu, Adam, lr 1e-3, alpha 1e-4, batch 64, up to
200 epochs, tol 1e-4 / n_iter_no_change 10, random_state), same 5 folds, features
standardized in a Pipeline. The regressor is compared with scikit-learn's on
standardized targets as well (TransformedTargetRegressor), the scaling fastopt's
MLPRegressor does internally, and with scikit-learn's plain MLPRegressor.

For every fold the two fit in turn (interleaved, so drift in the machine's load hits
both alike). Reported: mean score over the folds, total fit time, epochs run, and the
time ratios scikit-learn / fastopt per fit and per epoch (the estimators may stop after
different numbers of epochs).

    python benchmarks/compare_sklearn.py [--datasets digits wine] [--max-iter 200]
"""

import argparse
import time
import warnings

import numpy as np

DATASETS = ("digits", "breast_cancer", "wine", "diabetes")


def settings(max_iter):
    return dict(hidden_layer_sizes=(100,), alpha=1e-4, batch_size=64, learning_rate_init=1e-3,
                max_iter=max_iter, random_state=0)


def contenders(dataset, max_iter):
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.neural_network import MLPClassifier as SkClassifier
    from sklearn.neural_network import MLPRegressor as SkRegressor
    from sklearn.preprocessing import StandardScaler

    from fastopt.sklearn import MLPClassifier, MLPRegressor

    s = settings(max_iter)
    if dataset == "diabetes":
        return [("fastopt", MLPRegressor(**s)),
                ("sklearn, scaled y", TransformedTargetRegressor(SkRegressor(**s),
                                                                 transformer=StandardScaler())),
                ("sklearn", SkRegressor(**s))]
    return [("fastopt", MLPClassifier(**s)), ("sklearn", SkClassifier(**s))]


def epochs_of(est):
    inner = getattr(est, "regressor_", est)
    return inner.n_iter_


def run(dataset, max_iter):
    import sklearn.datasets as data
    from sklearn.base import clone
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    X, y = getattr(data, f"load_{dataset}")(return_X_y=True)
    cv = (KFold(5, shuffle=True, random_state=0) if dataset == "diabetes"
          else StratifiedKFold(5, shuffle=True, random_state=0))
    names = [name for name, _ in contenders(dataset, max_iter)]
    scores = {n: [] for n in names}
    times = {n: 0.0 for n in names}
    epochs = {n: 0 for n in names}
    for train, test in cv.split(X, y):
        scaler = StandardScaler().fit(X[train])
        X_train, X_test = scaler.transform(X[train]), scaler.transform(X[test])
        for name, est in contenders(dataset, max_iter):
            est = clone(est)
            start = time.perf_counter()
            est.fit(X_train, y[train])
            times[name] += time.perf_counter() - start
            epochs[name] += epochs_of(est)
            scores[name].append(est.score(X_test, y[test]))
    return {n: (float(np.mean(scores[n])), times[n], epochs[n]) for n in names}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--max-iter", type=int, default=200)
    args = parser.parse_args(argv)
    import fastopt

    print(f"fastopt threads: {fastopt.get_num_threads()}; 5-fold CV, standardized features, "
          f"max_iter={args.max_iter}")
    print("| data set | estimator | score (5-fold mean) | fit time, 5 folds | epochs | "
          "sklearn/fastopt time per fit | per epoch |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dataset in args.datasets:
            results = run(dataset, args.max_iter)
            _, fo_time, fo_epochs = results["fastopt"]
            metric = "R²" if dataset == "diabetes" else "accuracy"
            for name, (score, seconds, epochs) in results.items():
                ratio = per_epoch = ""
                if name != "fastopt":
                    ratio = f"{seconds / fo_time:.1f}x"
                    per_epoch = f"{(seconds / epochs) / (fo_time / fo_epochs):.1f}x"
                print(f"| {dataset} | {name} | {metric} {score:.4f} | {seconds:.2f} s | "
                      f"{epochs} | {ratio} | {per_epoch} |", flush=True)


if __name__ == "__main__":
    main()
