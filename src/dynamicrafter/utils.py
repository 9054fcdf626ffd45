"""Small shared helpers."""

from __future__ import annotations

import multiprocessing
import multiprocessing.context

import torch


def randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
          device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, then moved to ``device``.

    Drawing on the generator's device makes a seeded CPU generator give the same noise whatever device the model
    runs on (diffusers' convention).
    """
    gen_device = generator.device if generator is not None else torch.device(device or "cpu")
    noise = torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=torch.float32)
    return noise.to(device=device or gen_device, dtype=dtype)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``device`` (default: CUDA when available, else the CPU), checked: a device this torch cannot use is refused
    in one line that says what to do."""
    from dynamicrafter.errors import ConfigError

    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {str(device)!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support (install a CUDA build of torch)" if torch.version.cuda is None
                   else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)")
            raise ConfigError(f"device '{device}' is not available: {why}; or run on the CPU (device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} CUDA "
                              f"GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif dev.type != "cpu":
        raise ConfigError(f"device '{device}' is not supported: use cpu, cuda or cuda:N")
    return dev


def default_dtype(device: torch.device | str) -> torch.dtype:
    """fp32 on CPU (half precision is slower there: see :data:`HALF_ON_CPU_WARNING`), bf16 on CUDA."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def parse_dtype(name: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    from dynamicrafter.errors import ConfigError

    if name is None or name == "auto":
        return default_dtype(device)
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype '{name}': use one of fp32, fp16, bf16 (or auto)")
    return DTYPES[name]


# Measured with benchmarks/half_precision_cpu.py (U-Net forward of the shipped small model, dtypes side by side in
# one process, torch 2.13 CPU build, 2 cores of an AMD EPYC with AVX-512 BF16): fp16 4.3x the time of fp32, bf16
# 1.3x. On CPUs without native bf16 arithmetic bf16 is far slower still.
HALF_ON_CPU_WARNING = ("{dtype} on the CPU is slower than fp32, not faster (measured: fp16 4.3 times the time of "
                       "fp32, bf16 1.3 times, far more on CPUs without bf16 instructions): use fp32 on the CPU "
                       "(--dtype fp32, dtype='fp32')")


def warn_half_on_cpu(device: torch.device, dtype: torch.dtype) -> None:
    """One warning when a half-precision dtype is chosen on the CPU."""
    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        import warnings

        name = {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
        warnings.warn(HALF_ON_CPU_WARNING.format(dtype=name), stacklevel=3)


def peak_rss_bytes() -> int:
    """This process's peak resident memory: ``VmHWM`` of its own memory map where /proc exists. Not
    ``getrusage().ru_maxrss`` there, which Linux carries over fork + exec: a child started by a larger parent would
    report the parent's RSS (measured: 11.12 GiB for a 7.5 GiB benchmark worker)."""
    import resource
    import sys
    from pathlib import Path

    status = Path("/proc/self/status")
    if status.is_file():
        kib = next(line.split()[1] for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(kib) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def worker_context() -> multiprocessing.context.BaseContext:
    """How this project starts worker processes (``process_map``, DataLoader workers): ``forkserver`` where the
    platform has it, else ``spawn``. Never a plain ``fork`` of this process: by then it runs threads (PyTorch's
    intra-op pool, PyAV's decoder threads, tqdm's monitor) and a fork copies any lock one of them holds, so a worker can
    wait forever on it (a CI run hung in a forked DataLoader worker this way). A forkserver worker is forked from a
    small server process that started clean, at the cost of importing this package once per worker."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def process_map(fn, items: list, workers: int | None = None, desc: str = "", unit: str = "item") -> list:
    """``[fn(*item) for item in items]`` in ``workers`` worker processes (default: one per CPU core), in order, with a
    progress bar. For single-threaded NumPy work such as the motion tracker; ``fn`` must be a module-level function.
    One worker (or one item) runs in this process. The workers start by :func:`worker_context`."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    workers = min(workers or os.cpu_count() or 1, len(items))
    if workers <= 1:
        return [fn(*item) for item in tqdm(items, desc=desc, unit=unit)]
    with ProcessPoolExecutor(workers, mp_context=worker_context()) as pool:
        return list(tqdm(pool.map(_star, [(fn, item) for item in items]), total=len(items), desc=desc, unit=unit))


def _star(job: tuple) -> object:
    fn, item = job
    return fn(*item)
