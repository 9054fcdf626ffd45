"""Where the networks' weights live during a generation (the pipeline's memory plans).

Every network of :class:`~dynamicrafter.model.DynamiCrafter` has one placement:

============  =====================================================================================================
placement     meaning
============  =====================================================================================================
``resident``  on the execution device all the time (the default)
``offload``   kept on the CPU; copied to the execution device while the network runs, the copy dropped after
              (``DynamiCrafterPipeline.enable_model_cpu_offload``)
``blocks``    kept on the CPU; each block (a U-Net layer, a VAE stage, a CLIP block) copied to the execution device
              while that block runs (``enable_sequential_cpu_offload``: the peak holds one block's weights)
``released``  not in memory between uses: loaded from the checkpoint file (memory-mapped) when the network is
              needed and dropped after (``enable_low_memory``: the CLIP towers, needed once per call)
============  =====================================================================================================

The weights kept on the CPU are never changed or copied back: a swap replaces each parameter's data by a copy on
the execution device and puts the original back afterwards, so outputs are those of resident weights (bit for
bit on one device). Swaps are counted per network and block, so nested and concurrent uses share one copy.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import nn

from dynamicrafter.model import COMPONENTS, DynamiCrafter

Mode = Literal["resident", "offload", "blocks", "released"]
MODES = ("resident", "offload", "blocks", "released")
CONTAINERS = (nn.ModuleList, nn.Sequential, nn.ModuleDict)


class WeightSwap:
    """A module's parameters and buffers copied to ``device`` while at least one user holds it (thread-safe).

    ``recurse=False`` swaps only the module's own tensors (not its children's).
    """

    def __init__(self, module: nn.Module, device: torch.device, recurse: bool = True):
        self.module, self.device, self.recurse = module, device, recurse
        self.users = 0
        self._masters: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._lock = threading.Lock()

    def tensors(self) -> list[torch.Tensor]:
        return [*self.module.parameters(self.recurse), *(b for b in self.module.buffers(self.recurse) if b is not None)]

    def acquire(self) -> None:
        with self._lock:
            self.users += 1
            if self.users == 1:
                for tensor in self.tensors():
                    master = tensor.data
                    self._masters.append((tensor, master))
                    tensor.data = master.to(self.device, copy=True, non_blocking=master.is_pinned())

    def release(self) -> None:
        with self._lock:
            self.users -= 1
            if self.users == 0:
                for tensor, master in self._masters:
                    tensor.data = master
                self._masters.clear()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


def offload_blocks(network: nn.Module, max_params: int) -> list[nn.Module]:
    """The blocks of ``network`` for block-wise offload: its children, where a plain container (ModuleList, ...) is
    replaced by its items and a child with more than ``max_params`` parameters by its own blocks. A module's own
    tensors outside its children (e.g. CLIP's class embedding) are swapped while that module runs."""

    def split(module: nn.Module) -> list[nn.Module]:
        small = sum(p.numel() for p in module.parameters()) <= max_params
        if (small and type(module) not in CONTAINERS) or not any(True for _ in module.children()):
            return [module]
        return [b for child in module.children() for b in split(child)]

    return [b for child in network.children() for b in split(child)]


class Placement:
    """The placement of each network of ``model`` (see the module docstring) for one execution ``device``.

    ``reload(names)`` loads released networks back (the pipeline reads them from its checkpoint file).
    """

    def __init__(self, model: DynamiCrafter, device: torch.device):
        self.model, self.device = model, device
        self.modes: dict[str, Mode] = dict.fromkeys(COMPONENTS, "resident")
        self.reload: Callable[[list[str]], None] | None = None
        self._swaps: dict[str, WeightSwap] = {}
        self._hooks: dict[str, list[torch.utils.hooks.RemovableHandle]] = {}
        self._users = dict.fromkeys(COMPONENTS, 0)
        self._ready = dict.fromkeys(COMPONENTS, False)
        self._lock = threading.RLock()

    def set(self, name: str, mode: Mode, block_params: int = 50_000_000) -> None:
        """Give network ``name`` the placement ``mode`` (offloaded weights are kept on the CPU, pinned when the
        execution device is CUDA; ``block_params``: the largest block of the ``blocks`` placement)."""
        if mode not in MODES:
            raise ValueError(f"unknown placement {mode!r}, expected one of {MODES}")
        with self._lock:
            if self._users[name]:
                raise RuntimeError(f"cannot change the placement of '{name}' while it is in use")
            self.modes[name] = mode
            self._configure(name, block_params)

    def _configure(self, name: str, block_params: int = 50_000_000) -> None:
        mode, module = self.modes[name], self.model.component(name)
        for handle in self._hooks.pop(name, []):
            handle.remove()
        self._swaps.pop(name, None)
        if self.released(name):
            return  # nothing to place: configured again when it is loaded
        if mode == "released":
            module.to("meta")
        elif mode == "resident":
            module.to(self.device)
        else:
            module.to("cpu")
            if self.device.type == "cuda":
                _pin(module)
            if mode == "offload":
                self._swaps[name] = WeightSwap(module, self.device)
            else:
                self._hooks[name] = _block_hooks(module, self.device, block_params)

    @contextlib.contextmanager
    def use(self, *names: str, lazy: bool = False) -> Iterator[None]:
        """The networks ``names`` ready to run on the execution device inside the block. ``lazy``: only hold them
        (a network brought in by a use inside the block stays until the block ends; none is brought in otherwise)."""
        with self._lock:
            for name in names:
                self._users[name] += 1
                if not lazy and not self._ready[name]:
                    self._bring_in(name)
                    self._ready[name] = True
        try:
            yield
        finally:
            with self._lock:
                for name in names:
                    self._users[name] -= 1
                    if self._users[name] == 0 and self._ready[name]:
                        self._put_away(name)
                        self._ready[name] = False

    def released(self, name: str) -> bool:
        """True when network ``name`` holds no weights now (released, or skipped when loading)."""
        return any(p.is_meta for p in self.model.component(name).parameters())

    def _bring_in(self, name: str) -> None:
        if self.released(name):
            if self.reload is None:
                raise RuntimeError(f"'{name}' holds no weights and there is no checkpoint file to load it from")
            self.reload([name])  # onto the execution device
            if self.modes[name] != "released":
                self._configure(name)
        if name in self._swaps:
            self._swaps[name].acquire()

    def _put_away(self, name: str) -> None:
        if name in self._swaps:
            self._swaps[name].release()
        if self.modes[name] == "released":
            self.model.component(name).to("meta")


def _block_hooks(module: nn.Module, device: torch.device, block_params: int) -> list:
    """Forward hooks that swap each block of ``module`` in while it runs; the module's own tensors outside every
    block are swapped while the module runs."""
    handles = []
    blocks = offload_blocks(module, block_params)
    owners = {m for b in blocks for m in b.modules()}
    for parent in module.modules():
        if parent not in owners and (any(True for _ in parent.parameters(recurse=False))
                                     or any(b is not None for b in parent.buffers(recurse=False))):
            blocks.append(parent)  # its own tensors, swapped with recurse=False below
    for block in blocks:
        if not any(True for _ in block.parameters()) and not any(True for _ in block.buffers()):
            continue
        swap = WeightSwap(block, device, recurse=block in owners)
        handles.append(block.register_forward_pre_hook(lambda _m, _a, swap=swap: swap.acquire()))
        handles.append(block.register_forward_hook(lambda _m, _a, _o, swap=swap: swap.release()))
    return handles


def _pin(module: nn.Module) -> None:
    """Page-locked CPU copies of the weights (faster, asynchronous copies to the GPU)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.device.type == "cpu" and not tensor.is_pinned():
            tensor.data = tensor.data.pin_memory()


__all__ = ["MODES", "Placement", "WeightSwap", "offload_blocks"]
