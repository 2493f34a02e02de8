"""benchmarks/gpu_check.py runs on CPU in the suite: CUDA rows SKIP, every CPU row is a real check."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("pythia8mc")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_check_cpu_rows_pass_and_cuda_rows_skip(tmp_path, capsys):
    gpu_check = _load_script()
    data = tmp_path / "data"
    assert gpu_check.main(["--prepare", str(data), "--events", "300"]) == 0
    table = tmp_path / "table.md"
    code = gpu_check.main(["--data", str(data), "--quick", "--jets", "200", "--repeats", "1", "--steps", "1",
                           "--out", str(table)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    rows = [re.split(r"(?<!\\)\|", line)[1:-1] for line in table.read_text().splitlines() if line.startswith("| ")][1:]
    rows = [[cell.strip() for cell in row] for row in rows]
    statuses = {(check, device): status for check, device, _, status in rows}
    assert all(status == "SKIP" for (_, device), status in statuses.items() if device == "cuda")
    cpu = {check: status for (check, device), status in statuses.items() if device == "cpu"}
    assert cpu and all(status == "PASS" for status in cpu.values()), cpu
    # the CPU side covers every family of checks
    for family in ("engine vs plain forward", "InferenceEngine throughput", "RS3LTagger", "pretrain step",
                   "exact resume", "DDP smoke", "rs3l process dask"):
        assert any(check.startswith(family) for check in cpu), family


def test_histogram_comparison_aligns_categories_by_label():
    import hist
    import numpy as np

    gpu_check = _load_script()

    def make(order: list[str], values: dict[str, float]):
        h = hist.Hist(hist.axis.StrCategory(order, name="dataset"), hist.axis.Regular(2, 0, 1, name="x"))
        for name, value in values.items():
            h.fill(dataset=name, x=[value])
        return h

    a = make(["zh_bb", "zj"], {"zh_bb": 0.2, "zj": 0.7})
    b = make(["zj", "zh_bb"], {"zh_bb": 0.2, "zj": 0.7})
    worst, compared = gpu_check._compare_histograms({"h": a}, {"h": b})
    assert compared == 1 and worst == pytest.approx(0.0, abs=1e-12)
    c = make(["zj", "zh_bb"], {"zh_bb": 0.7, "zj": 0.7})  # zh_bb's entry moved to the other bin
    worst, _ = gpu_check._compare_histograms({"h": c}, {"h": a})
    assert worst == pytest.approx(2.0)
    assert np.isinf(gpu_check._compare_histograms({"h": a}, {})[0])
