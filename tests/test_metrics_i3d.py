"""The I3D network, its weight formats (TATS state dict, StyleGAN-V TorchScript) and the FVD preprocessing presets."""

import os
import time

import numpy as np
import pytest
import torch
from torch import nn

from dynamicrafter.errors import CheckpointError
from dynamicrafter.metrics.frechet import frechet_distance_from_features
from dynamicrafter.metrics.i3d import (
    I3D_PRESETS,
    FVDConfig,
    I3DFeatureExtractor,
    InceptionI3D,
    is_torchscript_archive,
    preprocess_clip,
)
from dynamicrafter.metrics.weights import ENV_I3D

# names and shapes of i3d_pretrained_400.pt (piergiaj pytorch-i3d layout, as loaded by VideoGPT/TATS)
TATS_KEYS = {
    "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
    "Conv3d_1a_7x7.bn.running_var": (64,),
    "Conv3d_2c_3x3.conv3d.weight": (192, 64, 3, 3, 3),
    "Mixed_3b.b0.conv3d.weight": (64, 192, 1, 1, 1),
    "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
    "Mixed_4f.b3b.bn.bias": (128,),
    "Mixed_5c.b2b.conv3d.weight": (128, 48, 3, 3, 3),
    "logits.conv3d.weight": (400, 1024, 1, 1, 1),
    "logits.conv3d.bias": (400,),
}


def random_i3d(seed=0):
    torch.manual_seed(seed)
    model = InceptionI3D()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as in trained weights
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    return model.eval()


def random_clip(rng, t=16, h=40, w=48):
    return rng.integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)


def test_forward_shape_small_input_is_fast():
    model = random_i3d()
    x = torch.rand(2, 3, 16, 64, 64) * 2 - 1
    start = time.perf_counter()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 400) and torch.isfinite(logits).all()
    assert time.perf_counter() - start < 10.0


def test_state_dict_uses_tats_names():
    state = InceptionI3D().state_dict()
    for key, shape in TATS_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    params = sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k)
    assert 12_000_000 < params < 13_000_000  # I3D RGB with the 400-class logits layer


def test_state_dict_round_trip_through_file(tmp_path):
    model = random_i3d(1)
    # i3d_pretrained_400.pt predates num_batches_tracked: save without it, as the public file is
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save(state, path)
    assert not is_torchscript_archive(path)
    config = FVDConfig(preset="tats", input_size=64, batch_size=2)
    extractor = I3DFeatureExtractor.from_file(path, config)
    assert extractor.kind == "state_dict" and extractor.preset.name == "tats"
    clips = [random_clip(np.random.default_rng(i)) for i in range(2)]
    features = extractor(clips)
    x = torch.stack([preprocess_clip(c, extractor.preset) for c in clips])
    with torch.no_grad():
        expected = model(x).double().numpy()
    assert features.shape == (2, 400)
    assert np.allclose(features, expected, atol=1e-5)
    # a DataParallel-style prefix is accepted too
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pt")
    assert np.allclose(I3DFeatureExtractor.from_file(tmp_path / "wrapped.pt", config)(clips), features)


def test_wrong_files_give_one_line_errors(tmp_path):
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="pytorch-i3d layout") as info:
        I3DFeatureExtractor.from_file(tmp_path / "other.pt")
    assert "\n" not in str(info.value)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="i3d_pretrained_400.pt"):
        I3DFeatureExtractor.from_file(tmp_path / "junk.pt")


class FakeStyleGANVDetector(nn.Module):
    """A TorchScript module with StyleGAN-V's call signature (the real one is the I3D port)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        x = x.float()
        if rescale:
            x = x / 255.0 * 2.0 - 1.0
        if resize:
            x = torch.nn.functional.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear",
                                                align_corners=False)
        logits = self.proj(x.mean(dim=(2, 3, 4)))
        if return_features:
            return logits
        return logits.softmax(dim=-1)


def test_torchscript_detector_called_as_stylegan_v(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.manual_seed(0)
    scripted = torch.jit.script(FakeStyleGANVDetector())
    scripted.save(str(path))
    assert is_torchscript_archive(path)
    clips = [random_clip(np.random.default_rng(i), h=64, w=80) for i in range(3)]
    native = I3DFeatureExtractor.from_file(path)  # preset auto -> stylegan-v: uint8 in, rescale/resize inside
    assert native.kind == "torchscript" and native.preset.name == "stylegan-v"
    x = torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3)
    with torch.no_grad():
        expected = scripted(x, rescale=True, resize=True, return_features=True).double().numpy()
    assert np.allclose(native(clips), expected, atol=1e-6)
    # the Python-side preprocessing of the same lineage gives the same features (rescale and resize commute)
    python_side = I3DFeatureExtractor.from_file(path, FVDConfig(preset="tf-fvd"))
    assert np.allclose(python_side(clips), expected, atol=1e-4)


def test_preprocessing_presets():
    rng = np.random.default_rng(0)
    wide = random_clip(rng, t=4, h=240, w=320)
    tats = preprocess_clip(wide, I3D_PRESETS["tats"])
    videogpt = preprocess_clip(wide, I3D_PRESETS["videogpt"])
    squash = preprocess_clip(wide, I3D_PRESETS["tf-fvd"])
    assert tats.shape == videogpt.shape == squash.shape == (3, 4, 224, 224)
    assert tats.min() >= -1 and tats.max() <= 1 and videogpt.min() >= -0.5 and videogpt.max() <= 0.5
    assert torch.allclose(videogpt * 2, tats, atol=1e-6)  # same geometry, [-0.5, 0.5] instead of [-1, 1]
    assert not torch.allclose(tats, squash)  # crop vs aspect-changing resize
    # a square clip: shorter-side resize + center crop is the plain resize
    square = random_clip(rng, t=2, h=256, w=256)
    assert torch.allclose(preprocess_clip(square, I3D_PRESETS["tats"]),
                          preprocess_clip(square, I3D_PRESETS["tf-fvd"]), atol=1e-6)
    # uint8 0 / 255 map to the range ends
    flat = np.zeros((2, 224, 224, 3), np.uint8)
    assert float(preprocess_clip(flat, I3D_PRESETS["tats"]).max()) == -1.0


def test_fvd_of_identical_feature_sets_is_zero():
    model = random_i3d(2)
    extractor = I3DFeatureExtractor(model, "state_dict", FVDConfig(input_size=32))
    clips = [random_clip(np.random.default_rng(i), h=32, w=32) for i in range(6)]
    features = extractor(clips)
    with pytest.warns(RuntimeWarning):  # 6 samples in 400 dimensions: singular covariance
        assert abs(frechet_distance_from_features(features, features)) < 1e-9


@pytest.mark.weights
def test_real_weights_standard_feature():
    path = os.environ.get(ENV_I3D)
    if not path or not os.path.isfile(path):
        pytest.fail(f"real I3D weights not available: set {ENV_I3D} to i3d_pretrained_400.pt or i3d_torchscript.pt")
    extractor = I3DFeatureExtractor.from_file(path, FVDConfig(device="cpu"))
    yy, xx = np.mgrid[0:224, 0:224]
    # a fixed input: a bright square moving right over a gradient, and a static noise clip
    moving = np.repeat(((xx + yy) / 448 * 255)[None].repeat(16, 0)[..., None], 3, -1).astype(np.uint8)
    for i in range(16):
        moving[i, 80:144, 10 + 12 * i:74 + 12 * i] = 255
    noise = np.random.default_rng(0).integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
    features = extractor([moving, noise])
    assert features.shape == (2, 400) and np.isfinite(features).all()
    assert features.std(axis=1).min() > 0 and not np.allclose(features[0], features[1])
    assert np.allclose(extractor([moving])[0], features[0], atol=1e-4)  # deterministic, batch-independent
