"""Exponential moving average of the trainable weights (the released ``LitEma`` rule).

After optimizer step n (counting from 1) every trainable parameter w updates its shadow s:

    d = min(decay, (1 + n) / (10 + n));   s <- s - (1 - d) (s - w)

The warm-up term makes early shadows follow the weights closely. Shadows are float32 and live beside the weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, names: set[str], decay: float):
        self.decay = decay
        self.num_updates = 0
        params = dict(model.named_parameters())
        self.shadow: dict[str, torch.Tensor] = {n: params[n].detach().float().clone() for n in sorted(names)}

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        decay = self.current_decay()
        params = dict(model.named_parameters())
        for name, shadow in self.shadow.items():
            shadow.sub_((1.0 - decay) * (shadow - params[name].detach().to(shadow.device, shadow.dtype)))

    def to(self, device: torch.device | str) -> EMA:
        self.shadow = {n: s.to(device) for n, s in self.shadow.items()}
        return self

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """Temporarily give the model the EMA weights (sample videos, export)."""
        params = dict(model.named_parameters())
        backup = {n: params[n].detach().clone() for n in self.shadow}
        with torch.no_grad():
            for n, s in self.shadow.items():
                params[n].copy_(s.to(params[n].dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for n, b in backup.items():
                    params[n].copy_(b)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": {n: s.detach().cpu() for n, s in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            from dynamicrafter.errors import CheckpointError

            raise CheckpointError(f"the checkpoint's EMA lacks {len(missing)} trainable weight(s), first "
                                  f"'{sorted(missing)[0]}': it was written by a run that trained other parameters")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        device = next(iter(self.shadow.values())).device if self.shadow else "cpu"
        self.shadow = {n: state["shadow"][n].to(device, torch.float32).clone() for n in self.shadow}
