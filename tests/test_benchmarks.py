"""The benchmark scripts run end to end in their --quick modes (tiny widths, CPU).

compare_official.py's quick mode runs our side alone here (no checkout of the original code in CI: its own output
says so); the side-by-side figures come from running it with ``--original`` (see its docstring and the README).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_compare_official_unet_quick_runs_our_side(capsys: pytest.CaptureFixture[str]) -> None:
    script("compare_official").main(["unet", "--quick", "--threads", "1", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "original: not run (no --original checkout given)" in out
    seconds = re.search(r"ours +s/step: min ([\d.]+)", out)
    assert seconds and float(seconds.group(1)) > 0, out


def test_compare_official_generation_quick_runs_a_fresh_process(capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    script("compare_official").main(["generation", "--quick", "--threads", "1", "--repeats", "1", "--checkpoint",
                                     str(checkpoint), "--write-checkpoint", "--delete-checkpoint",
                                     "--model-channels", "64"])  # another U-Net width (quick: 32)
    out = capsys.readouterr().out
    assert "U-Net model_channels 64" in out, out
    run = re.search(r"run 1 ours +: load [\d.]+ s, encode \+ 2 steps \+ decode [\d.]+ s, total [\d.]+ s, peak RSS "
                    r"([\d.]+) GiB", out)
    assert run and 0.1 < float(run.group(1)) < 8, out  # the worker's own peak, not the test process's
    assert not checkpoint.exists()


def test_gpu_script_quick_prints_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    gpu = script("gpu")
    gpu.main(["--quick", "--device", "cpu"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.lstrip().startswith("test_size ")]
    fast = next((n for n in gpu.SAMPLER_NAMES if n != "ddim"), None)
    expected = 1 + (fast is not None) + 3 * 3  # headline (+ fast sampler) + 3 dtypes x 3 placements
    assert len(rows) == expected, out
    fp8_missing = importlib.util.find_spec("torchao") is None
    for line in rows:
        if fp8_missing and " fp8 " in line:
            assert "failed: UserError: fp8 weights need torchao" in line
        else:
            assert re.search(r"[\d.]+ s/step, total\s+[\d.]+ s", line), line
    assert "sequential_offload" in out and "model_offload" in out
