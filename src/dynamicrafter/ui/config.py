"""Settings of the web UI (server, input limits, ranges of the sampling controls)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dynamicrafter.errors import UserError

STORYBOARD_SHOTS = 4  # shot slots on the Storyboard tab (and parameters of the /storyboard endpoint)


@dataclass(frozen=True)
class UIConfig:
    """Everything the app needs besides the model.

    ``max_frames=None``: twice the model's temporal length (videos longer than it use sliding temporal windows).
    ``output_dir=None``: a fresh temporary folder per server.
    """

    host: str = "127.0.0.1"
    port: int | None = None  # None: Gradio's default (7860, or the next free port)
    share: bool = False  # a public *.gradio.live link; never on unless asked for
    max_image_pixels: int = 4096 * 4096
    max_image_bytes: int = 20 * 1024 * 1024
    max_steps: int = 100
    max_frames: int | None = None
    max_guidance_scale: float = 20.0
    max_crossfade: int = 8
    max_queue: int = 16  # jobs waiting at most; later submissions are refused with "queue full"
    output_dir: Path | None = None
    status_interval: float = 2.0  # seconds between refreshes of the queue display

    def __post_init__(self) -> None:
        for name in ("max_image_pixels", "max_image_bytes", "max_steps", "max_queue"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_frames is not None and self.max_frames < 2:
            raise UserError(f"max-frames must be >= 2, got {self.max_frames}")
        if self.max_guidance_scale <= 0:
            raise UserError(f"max-guidance-scale must be > 0, got {self.max_guidance_scale}")
        if self.max_crossfade < 0:
            raise UserError(f"max-crossfade must be >= 0, got {self.max_crossfade}")
        if self.port is not None and not 0 < self.port < 65536:
            raise UserError(f"port must be in [1, 65535], got {self.port}")
        if self.status_interval <= 0:
            raise UserError(f"status interval must be > 0 seconds, got {self.status_interval}")
