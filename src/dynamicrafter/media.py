"""Reading images and writing videos.

Tensors follow the project's layout: a video is ``(c, t, h, w)`` (or ``(b, c, t, h, w)``) with values in [-1, 1];
uint8 frame arrays are ``(t, h, w, 3)``. Every writer is atomic: it writes a temporary file beside the target and
renames it into place, so an interrupted run never leaves a half-written video under the final name.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dynamicrafter.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_EXTENSIONS = (".mp4", ".gif", ".webp")


class MediaError(UserError):
    """A user-facing problem with an input or output file (message names the file and the fix)."""


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB, with a one-line error naming the file when it is missing or not an image."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"image file not found: '{path}' (pass the path of a PNG/JPEG/WebP image)")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise MediaError(f"'{path}' is not a readable image ({e.__class__.__name__}); pass a PNG/JPEG/WebP file") from e


def resize_and_center_crop(image: Image.Image, height: int, width: int, mode: str = "released") -> Image.Image:
    """Bring an image to ``height x width``.

    ``mode="released"`` reproduces the released inference scripts: the shorter side is resized to
    ``min(height, width)`` (bilinear, antialiased), then a center crop of ``height x width`` is taken, padding with
    black where the resized image is smaller than the crop (torchvision ``Resize(min(size))`` + ``CenterCrop(size)``).
    ``mode="cover"`` scales so the image covers the whole target (never pads) and then center-crops.
    """
    if mode not in ("released", "cover"):
        raise ValueError(f"resize mode must be 'released' or 'cover', got {mode!r}")
    w, h = image.size
    if mode == "released":
        short = min(height, width)
        if w <= h:
            new_w, new_h = short, int(short * h / w)
        else:
            new_w, new_h = int(short * w / h), short
    else:
        scale = max(height / h, width / w)
        new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    # Center crop, padding with zeros (black) when the image is smaller than the crop, as torchvision does.
    if new_w < width or new_h < height:
        canvas = Image.new("RGB", (max(new_w, width), max(new_h, height)))
        canvas.paste(image, ((max(width - new_w, 0)) // 2, (max(height - new_h, 0)) // 2))
        image, (new_w, new_h) = canvas, canvas.size
    top = int(round((new_h - height) / 2.0))
    left = int(round((new_w - width) / 2.0))
    return image.crop((left, top, left + width, top + height))


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB image -> float tensor ``(3, h, w)`` in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # h w 3 in [0, 1]
    return torch.from_numpy(array).permute(2, 0, 1) * 2.0 - 1.0


def tensor_to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """Video ``(c, t, h, w)`` in [-1, 1] -> uint8 frames ``(t, h, w, 3)`` (clamped, truncated as released)."""
    if video.dim() != 4:
        raise ValueError(f"expected a video of shape (c, t, h, w), got {tuple(video.shape)}")
    video = ((video.detach().float().cpu().clamp(-1, 1) + 1.0) / 2.0 * 255.0).to(torch.uint8)
    return video.permute(1, 2, 3, 0).numpy()


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------


@functools.cache
def _umask() -> int:
    """The process umask (read once, when the first file is written, not at import)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file private (0600): give it the mode a plain open() would (or the replaced file's)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        if tmp_path.is_file():
            os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_video(frames: np.ndarray | torch.Tensor | Sequence[Image.Image], path: str | os.PathLike, fps: float = 8.0,
               quality_crf: int = 10) -> Path:
    """Write frames to ``path``; the format follows the extension.

    ``.mp4`` (H.264, yuv420p, crf 10 as released), ``.gif`` and ``.webp`` (looping animations), or a path without
    a video extension: a folder of numbered PNGs. ``frames`` is a uint8 array ``(t, h, w, 3)``, a video tensor
    ``(c, t, h, w)`` in [-1, 1], or a list of PIL images.
    """
    path = Path(path)
    array = _as_uint8_frames(frames)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        _write_mp4(array, path, fps, quality_crf)
    elif suffix in (".gif", ".webp"):
        images = [Image.fromarray(f) for f in array]
        with atomic_path(path) as tmp:
            kwargs = {"lossless": False, "quality": 90} if suffix == ".webp" else {"disposal": 2}
            images[0].save(tmp, format=suffix[1:].upper(), save_all=True, append_images=images[1:],
                           duration=int(round(1000.0 / fps)), loop=0, **kwargs)
    elif suffix in ("", ".png", ".frames"):
        folder = path.with_suffix("") if suffix else path
        folder.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(array):
            with atomic_path(folder / f"{i:04d}.png") as tmp:
                Image.fromarray(frame).save(tmp, format="PNG")
        path = folder
    else:
        raise MediaError(f"unsupported output extension '{path.suffix}' for '{path}': use .mp4, .gif, .webp or a "
                         f"folder name (PNG frames)")
    return path


def _as_uint8_frames(frames: np.ndarray | torch.Tensor | Sequence[Image.Image]) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        return tensor_to_uint8_frames(frames)
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames (t, h, w, 3), got {frames.dtype} {frames.shape}")
        return frames
    return np.stack([np.asarray(f.convert("RGB")) for f in frames])


def _write_mp4(frames: np.ndarray, path: Path, fps: float, crf: int) -> None:
    import av  # local import: PyAV loads FFmpeg libraries

    t, h, w, _ = frames.shape
    # H.264 with yuv420p needs even sizes; pad by one pixel (edge-replicated) where needed.
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    from fractions import Fraction

    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for frame in frames:
                # converting to yuv420p here (not inside the encoder) makes the encoding reproducible byte for byte
                video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
                for packet in stream.encode(video_frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def read_video_frames(path: str | os.PathLike) -> np.ndarray:
    """Decode every frame of a video file (mp4/gif/webp) or a folder of PNGs to uint8 ``(t, h, w, 3)``."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise MediaError(f"folder '{path}' holds no frames (PNG/JPEG files)")
        return np.stack([np.asarray(load_image(p)) for p in files])
    if not path.is_file():
        raise MediaError(f"video file not found: '{path}'")
    if path.suffix.lower() in (".gif", ".webp"):
        with Image.open(path) as im:
            frames = []
            for i in range(getattr(im, "n_frames", 1)):
                im.seek(i)
                frames.append(np.asarray(im.convert("RGB")))
        return np.stack(frames)
    import av

    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, IndexError) as e:  # type: ignore[attr-defined]
        raise MediaError(f"'{path}' is not a readable video ({e})") from e
    if not frames:
        raise MediaError(f"'{path}' holds no video frames")
    return np.stack(frames)
