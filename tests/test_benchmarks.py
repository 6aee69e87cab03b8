"""Smoke tests of the comparison harness and its asv twin (fastopt only, tiny settings)."""

import pathlib
import sys

import numpy as np

# The benchmarks live beside the package, not in it: import them from the checkout.
ROOT = str(pathlib.Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import bench_workloads, compare  # noqa: E402
from benchmarks.workloads import WORKLOADS, gemm_calls, gemm_flops  # noqa: E402


def test_gemm_calls_list_the_steps_gemms_without_the_first_input_gradient():
    w = WORKLOADS["mnist"]
    calls = gemm_calls(w)
    assert len(calls) == 3 + 3 + 2
    n = w.batch
    macs = 784 * 256 + 256 * 128 + 128 * 10
    assert gemm_flops(w) == 2 * n * (3 * macs - 784 * 256)


def test_compare_writes_the_table_for_fastopt_alone(tmp_path):
    result = compare.main(["--quick", "--rounds", "1", "--threads", "1", "--frameworks",
                           "fastopt", "--workloads", "tiny", "mnist", "epoch",
                           "--epoch-rows", "1000", "--out", str(tmp_path)])
    text = (tmp_path / "compare.md").read_text()
    assert "| workload | threads | fastopt |" in text
    for name in ("| tiny | 1 |", "| mnist | 1 |", "| epoch (1,000 rows) | 1 |"):
        assert name in text
    assert "sgemm peak" in text and "Steady-state allocations" in text
    for row in result["rows"]:
        assert np.isfinite(row["fastopt"]) and row["fastopt"] > 0
        assert row["torch default"] is None
    step_rows = [r for r in result["rows"] if r["workload"] in ("tiny", "mnist")]
    assert all(r["gemms"] > 0 for r in step_rows)


def test_breakdown_times_every_kernel_of_the_step(tmp_path):
    result = compare.main(["--quick", "--rounds", "1", "--threads", "1", "--frameworks",
                           "fastopt", "--workloads", "tiny", "--breakdown",
                           "--out", str(tmp_path)])
    (b,) = result["breakdowns"]
    names = [line[0] for line in b["lines"]]
    # 3 dense layers forward and backward, the loss, the norm, the optimizer.
    assert len(names) == 9
    assert names[-2:] == ["global gradient norm", "optimizer sgd-momentum"]
    assert "Where fastopt's step time goes" in (tmp_path / "compare.md").read_text()


def test_asv_workload_benchmarks_run_as_plain_python():
    bench = bench_workloads.WorkloadStep()
    bench.setup("tiny", 1)
    try:
        bench.time_step("tiny", 1)
    finally:
        bench.teardown("tiny", 1)
    epoch = bench_workloads.WorkloadEpoch()
    epoch.rows = 300
    epoch.setup(1)
    try:
        epoch.time_epoch(1)
    finally:
        epoch.teardown(1)
