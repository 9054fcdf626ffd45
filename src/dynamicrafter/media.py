"""Reading images and writing videos.

Tensors follow the project's layout: a video is ``(c, t, h, w)`` (or ``(b, c, t, h, w)``) with values in [-1, 1];
uint8 frame arrays are ``(t, h, w, 3)``. Every writer is atomic: it writes a temporary file beside the target and
renames it into place, so an interrupted run never leaves a half-written video under the final name.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from dynamicrafter.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_EXTENSIONS = (".mp4", ".gif", ".webp")


class MediaError(UserError):
    """A user-facing problem with an input or output file (message names the file and the fix)."""


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------


MAX_IMAGE_PIXELS = 16384 * 16384  # larger files are refused (Pillow's own bomb check is bypassed up to this size)
TRANSPARENT_BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white


def load_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image file as RGB (see :func:`to_rgb`), turned upright by its EXIF orientation, with a one-line error
    naming the file when it is missing, not an image, or over ``max_pixels``."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"image file not found: '{path}' (pass the path of a PNG/JPEG/WebP image)")
    try:
        with _bomb_limit(max_pixels), Image.open(path) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise MediaError(f"'{path}' is {width}x{height} = {width * height:,} pixels, over the limit of "
                                 f"{max_pixels:,}: resize it first")
            im.load()
            return to_rgb(ImageOps.exif_transpose(im))
    except Image.DecompressionBombError as e:
        raise MediaError(f"'{path}' has too many pixels (over {max_pixels:,}): resize it first") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise MediaError(f"'{path}' is not a readable image ({e.__class__.__name__}); pass a PNG/JPEG/WebP file") from e


@contextlib.contextmanager
def _bomb_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's decompression-bomb limit raised to ``max_pixels`` and its warning silenced (our own check gives the
    message)."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max(max_pixels, previous or 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: 16- and 32-bit grey ("I;16", "I") scaled from their full range, floats ("F")
    taken as [0, 1], palettes expanded, transparency (RGBA, LA, PA, palette transparency) composited on
    :data:`TRANSPARENT_BACKGROUND`."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() <= 65535 else float(2**32 - 1)
        return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*TRANSPARENT_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def as_image_list(value: object, name: str = "image") -> list:
    """One image input or several -> a list of single images (PIL, path, (H, W, C) array or (3, H, W) tensor): a
    list or tuple is taken item by item, a batched array (B, H, W, C) or tensor (B, 3, H, W) along its first axis."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise UserError(f"{name} is an empty list")
        return [item for v in value for item in as_image_list(v, name)]
    if isinstance(value, torch.Tensor) and value.dim() == 4:
        return list(value.unbind(0))
    if isinstance(value, np.ndarray) and value.ndim == 4:
        return list(value)
    return [value]


def image_input_to_tensor(image: object, height: int, width: int, resize_mode: str = "released") -> torch.Tensor:
    """One image input -> (3, height, width) in [-1, 1], resized and center-cropped as released.

    Accepted: a path, a PIL image (any mode), a numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of uint8 or
    of floats in [0, 1], a tensor (3, H, W) in [-1, 1] (used as it is at the output size, else resized like an
    image).
    """
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise UserError(f"image tensors must be (3, H, W) or (B, 3, H, W) in [-1, 1], got shape "
                            f"{tuple(image.shape)}")
        if not torch.isfinite(image).all():
            raise UserError("the image tensor holds NaN or infinite values")
        if tuple(image.shape[1:]) == (height, width):
            return image.detach().float().cpu()
        array = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8)
        image = Image.fromarray(array.permute(1, 2, 0).numpy())
    elif isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    elif isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    elif not isinstance(image, Image.Image):
        raise UserError(f"image must be a file path, a PIL image, a numpy array or a tensor, got "
                        f"{type(image).__name__}")
    return image_to_tensor(resize_and_center_crop(to_rgb(image), height, width, resize_mode))


def _array_to_pil(array: np.ndarray) -> Image.Image:
    """(H, W[, C]) uint8, or floats in [0, 1] -> PIL image (C = 1, 3 or 4)."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise UserError(f"image arrays must be (H, W, 3), (H, W, 4) or (H, W), got shape {array.shape}")
    if array.dtype == np.uint8:
        return Image.fromarray(array)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise UserError(f"float image arrays must hold values in [0, 1], got [{np.nanmin(array):g}, "
                            f"{np.nanmax(array):g}]")
        return Image.fromarray((array * 255.0 + 0.5).astype(np.uint8))
    raise UserError(f"image arrays must be uint8 or float in [0, 1], got dtype {array.dtype}")


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


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it takes the name ``path`` (replacing a folder of that
    name), on failure it is removed. A folder under the final name is always complete."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MediaError(f"'{path}' is a file, not a folder: choose another output name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700): give it a plain mkdir's mode
        old = path.with_name(f".{path.name}.{os.getpid()}.{id(tmp):x}.old")
        if path.is_dir():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_video(frames: np.ndarray | torch.Tensor | Sequence[Image.Image], path: str | os.PathLike, fps: float = 8.0,
               quality_crf: int = 10) -> Path:
    """Write frames to ``path``; the format follows the extension.

    ``.mp4`` (H.264, yuv420p, crf 10 as released), ``.gif`` and ``.webp`` (looping animations), or a path without
    a video extension: a folder of numbered PNGs (written into a temporary folder that is then renamed). ``frames`` is
    a uint8 array ``(t, h, w, 3)``, a video tensor ``(c, t, h, w)`` in [-1, 1], or a list of PIL images.
    """
    path = Path(path)
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not (math.isfinite(fps) and fps > 0):
        raise MediaError(f"fps must be a finite number > 0 (frames per second), got {fps!r}")
    array = _as_uint8_frames(frames)
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
        with atomic_folder(folder) as tmp_folder:
            for i, frame in enumerate(array):
                Image.fromarray(frame).save(tmp_folder / f"{i:04d}.png", format="PNG")
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
