import os

import numpy as np
import pytest
import torch
from PIL import Image

from dynamicrafter.media import MediaError, load_image, read_video_frames, resize_and_center_crop, save_video


def frames(t=5, h=32, w=48):
    """A smooth colour gradient with a moving square (compressible, like real video)."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    out = np.repeat(base[None], t, axis=0)
    for i in range(t):
        out[i, 8:16, 4 + 3 * i : 12 + 3 * i] = 255
    return out


@pytest.mark.parametrize("ext", [".mp4", ".gif", ".webp", ""])
def test_save_and_read_back(tmp_path, ext):
    video = frames()
    path = save_video(video, tmp_path / f"clip{ext}", fps=8)
    back = read_video_frames(path)
    assert back.shape == video.shape
    tolerance = 0 if ext == "" else 8  # PNG frames are lossless; mean abs error of the lossy codecs
    assert np.abs(back.astype(int) - video.astype(int)).mean() <= tolerance
    assert not list(tmp_path.glob(".*tmp*")), "temporary files must be renamed or removed"


def test_tensor_input_and_odd_sizes(tmp_path):
    video = torch.rand(3, 4, 33, 47) * 2 - 1
    path = save_video(video, tmp_path / "odd.mp4")
    assert read_video_frames(path).shape[0] == 4


def test_bad_inputs(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(MediaError, match="not a readable image"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(MediaError, match="unsupported output extension"):
        save_video(frames(), tmp_path / "clip.avi")


def test_resize_released_pads_like_torchvision_and_cover_does_not():
    image = Image.new("RGB", (400, 300), (255, 255, 255))  # 4:3 landscape into 320x512
    released = np.asarray(resize_and_center_crop(image, 320, 512, "released"))
    assert released.shape == (320, 512, 3)
    # shorter side -> 320 gives 426x320: 86 columns of black padding (43 left, 43 right)
    assert released[:, :43].max() == 0 and released[:, 43:469].min() == 255 and released[:, 469:].max() == 0
    cover = np.asarray(resize_and_center_crop(image, 320, 512, "cover"))
    assert cover.min() == 255


def test_written_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    out = save_video(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "v.gif")
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    out.chmod(0o640)
    save_video(np.zeros((2, 8, 8, 3), np.uint8), out)
    assert out.stat().st_mode & 0o777 == 0o640  # replacing a file keeps its mode
