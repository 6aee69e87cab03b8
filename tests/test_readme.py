"""The README's Python example runs as written (so it cannot rot)."""

import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def test_readme_python_example_runs(tmp_path):
    if not os.path.exists(README):
        pytest.skip("README.md is not beside the tests (installed test run)")
    text = open(README, encoding="utf-8").read()
    code = re.search(r"## In Python\n\n```python\n(.*?)```", text, re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'accuracy'" in proc.stdout
