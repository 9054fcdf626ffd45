"""The evaluate runner: pairing, outputs, missing-weight notices, the CLI, and resuming after an interruption."""

import csv
import json

import numpy as np
import pytest
import torch

from dynamicrafter.cli import main
from dynamicrafter.media import save_video
from dynamicrafter.metrics.dreamsim import DreamSim, DreamSimDistance, standin_dreamsim_config
from dynamicrafter.metrics.evaluate import EvaluateConfig, evaluate, read_index
from dynamicrafter.metrics.features import FeatureCache, VideoItem, extract_features, load_features
from dynamicrafter.metrics.i3d import FVDConfig, I3DFeatureExtractor, InceptionI3D
from dynamicrafter.metrics.weights import ENV_DREAMSIM, ENV_I3D

SIZE = 32
FRAMES = 16


class Interrupted(Exception):
    pass


class Counting:
    """Wraps a feature extractor or distance, counting work and failing after ``fail_after`` units."""

    def __init__(self, inner, fail_after=None):
        self.inner, self.fail_after, self.count = inner, fail_after, 0
        for name in ("signature", "description", "label", "standin"):
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))

    def __call__(self, *args):
        if self.fail_after is not None and self.count >= self.fail_after:
            raise Interrupted("simulated interruption")
        self.count += len(args[0]) if len(args) == 1 else 1
        return self.inner(*args)


def moving_clip(seed, frames=FRAMES, size=SIZE):
    """A smooth seed-dependent pattern drifting right one pixel per frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] * (2 * np.pi / size)
    phases, freqs = rng.uniform(0, 2 * np.pi, 3), rng.integers(1, 3, (3, 2))
    base = np.stack([np.sin(f[0] * xx + f[1] * yy + p) for f, p in zip(freqs, phases)], -1)
    base = ((base * 0.45 + 0.5) * 255).astype(np.uint8)
    return np.stack([np.roll(base, shift=i, axis=1) for i in range(frames)])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    real, generated, inputs = root / "real", root / "generated", root / "inputs"
    inputs.mkdir()
    writers = [".mp4", ".gif", ""]  # mp4, gif and a folder of PNG frames
    for i in range(5):
        clip = moving_clip(i, frames=20)
        save_video(clip, real / f"v{i}.mp4")
        save_video(np.clip(clip[:FRAMES].astype(int) + 6, 0, 255).astype(np.uint8),
                   generated / f"v{i}{writers[i % 3]}")
    save_video(moving_clip(9, frames=20), real / "extra_real.mp4")
    save_video(moving_clip(7), generated / "lonely.gif")  # no real clip, no input image
    from PIL import Image

    Image.fromarray(moving_clip(0)[0]).resize((64, 64)).save(inputs / "v0.png")  # an input at another size
    return real, generated, inputs


@pytest.fixture()
def models():
    torch.manual_seed(0)
    i3d = I3DFeatureExtractor(InceptionI3D(), "state_dict", FVDConfig(input_size=SIZE, batch_size=2))
    distance = DreamSimDistance(DreamSim(standin_dreamsim_config("dino_vitb16", embed_dim=32, depth=1)))
    return i3d, distance


def test_resumes_after_interruption_without_recomputing(dataset, models, tmp_path):
    real, generated, inputs = dataset
    i3d, distance = models
    config = EvaluateConfig(generated=generated, out_dir=tmp_path / "out", real=real, inputs=inputs,
                            fvd=FVDConfig(input_size=SIZE, batch_size=2), kvd_subsets=10, progress=False)
    logs = []

    # run 1: interrupted inside the per-video metrics (PIC), after 3 of the 5 videos that have an input image
    pic = Counting(distance, fail_after=3)
    with pytest.raises(Interrupted):
        evaluate(config, i3d=Counting(i3d), distance=pic, log=logs.append)
    # run 2: the per-video work resumes (2 PIC left); the I3D pass is interrupted after 2 batches of 2 real clips
    pic, features = Counting(distance), Counting(i3d, fail_after=4)
    with pytest.raises(Interrupted):
        evaluate(config, i3d=features, distance=pic, log=logs.append)
    assert pic.count == 2 and features.count == 4
    # run 3: only the 2 remaining real clips and the 6 generated videos go through I3D
    pic, features = Counting(distance), Counting(i3d)
    with pytest.warns(RuntimeWarning, match="singular"):  # 6 videos in 400 dimensions
        result = evaluate(config, i3d=features, distance=pic, log=logs.append)
    assert pic.count == 0 and features.count == 2 + 6
    # run 4: everything cached
    pic, features = Counting(distance), Counting(i3d)
    with pytest.warns(RuntimeWarning):
        again = evaluate(config, i3d=features, distance=pic, log=logs.append)
    assert pic.count == 0 and features.count == 0
    assert again.metrics["fvd"]["value"] == pytest.approx(result.metrics["fvd"]["value"])

    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_generated"] == 6 and metrics["num_real"] == 6 and metrics["num_with_input_image"] == 5
    assert np.isfinite(metrics["fvd"]["value"]) and metrics["fvd"]["value"] > 0
    assert {"value", "std", "n_subsets", "subset_size", "all_samples"} <= set(metrics["kvd"])
    assert 0 < metrics["pic"]["value"] <= 1 and metrics["pic"]["num_videos"] == 5 and not metrics["pic"]["standin"]
    assert metrics["model_free"]["temporal_flicker"] > 0 and metrics["model_free"]["motion_magnitude"] > 0
    assert any("no input image" in n for n in metrics["notices"])
    with open(tmp_path / "out" / "per_video.csv") as f:
        rows = {r["video_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"v0", "v1", "v2", "v3", "v4", "lonely"}
    assert rows["lonely"]["pic"] == "" and rows["lonely"]["first_frame_psnr"] == ""
    assert rows["v2"]["pic_distance"].startswith("DreamSim")
    assert rows["v0"]["input"].endswith("v0.png") and rows["v1"]["input"] == "first frame of v1.mp4"
    assert float(rows["v1"]["first_frame_psnr"]) > 20  # the generated clips are the real ones, slightly brighter
    assert "| FVD |" in (tmp_path / "out" / "metrics.md").read_text()


def test_missing_weights_are_skipped_with_one_line_notices(dataset, tmp_path, monkeypatch):
    real, generated, _ = dataset
    monkeypatch.delenv(ENV_I3D, raising=False)
    monkeypatch.delenv(ENV_DREAMSIM, raising=False)
    logs = []
    result = evaluate(EvaluateConfig(generated=generated, out_dir=tmp_path, real=real, progress=False),
                      log=logs.append)
    assert result.metrics["fvd"] is None and result.metrics["pic"] is None
    i3d_notice = next(line for line in logs if line.startswith("FVD/KVD skipped"))
    assert "--i3d PATH" in i3d_notice and ENV_I3D in i3d_notice and "i3d_pretrained_400.pt" in i3d_notice
    assert "i3d_torchscript.pt" in i3d_notice and "\n" not in i3d_notice
    assert any(line.startswith("PIC skipped") and ENV_DREAMSIM in line for line in logs)
    assert result.metrics["model_free"]["first_frame_ssim"] is not None


def test_cli(dataset, tmp_path, monkeypatch, capsys):
    real, generated, _ = dataset
    monkeypatch.delenv(ENV_I3D, raising=False)
    monkeypatch.delenv(ENV_DREAMSIM, raising=False)
    code = main(["evaluate", "--real", str(real), "--generated", str(generated), "-o", str(tmp_path / "o"),
                 "--i3d", str(tmp_path / "missing.pt"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "missing.pt" in err and "i3d_pretrained_400.pt" in err
    assert main(["evaluate", "--real", str(real), "--generated", str(generated), "-o", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| temporal flicker |" in out and (tmp_path / "o" / "per_video.csv").is_file()
    assert main(["convert-dreamsim", str(tmp_path), "-o", str(tmp_path / "d.safetensors")]) == 2


def test_index_file(dataset, tmp_path):
    real, _, _ = dataset
    index = tmp_path / "index.csv"
    index.write_text(f"path,caption,start_frame,frame_stride,id\n{real / 'v0.mp4'},a cat,2,1,clip0\n"
                     f"{real / 'v1.mp4'},a dog,,,\n")
    items = read_index(index, frame_stride=3)
    assert [(i.video_id, i.start_frame, i.frame_stride) for i in items] == [("clip0", 2, 1), ("v1", 0, 3)]
    (tmp_path / "list.txt").write_text(f"{real / 'v2.mp4'}\n")
    assert read_index(tmp_path / "list.txt")[0].video_id == "v2"


def test_rank_shards_merge(dataset, models, tmp_path):
    real, _, _ = dataset
    i3d, _ = models
    items = [VideoItem(p.stem, p, 0, 1) for p in sorted(real.glob("*.mp4"))]
    cache = FeatureCache(tmp_path / "shared")
    computed = [extract_features(items, i3d, cache, FRAMES, batch_size=2, rank=r, world_size=2, progress=False)
                for r in (0, 1)]
    assert computed == [3, 3]
    merged = load_features(items, cache, FRAMES)
    single = FeatureCache(tmp_path / "single")
    extract_features(items, i3d, single, FRAMES, batch_size=4, progress=False)
    assert np.allclose(merged, load_features(items, single, FRAMES), atol=1e-5)
    with pytest.raises(Exception, match="frames"):  # a clip longer than the video is a clear error
        extract_features(items[:1], i3d, FeatureCache(tmp_path / "x"), 40, progress=False)


def test_lpips_standin_is_labelled_in_every_output(dataset, tmp_path, monkeypatch):
    from dynamicrafter.metrics.lpips import LPIPS, LPIPSDistance

    real, generated, _ = dataset
    monkeypatch.delenv(ENV_I3D, raising=False)
    torch.manual_seed(0)
    result = evaluate(EvaluateConfig(generated=generated, out_dir=tmp_path, real=real, progress=False),
                      distance=LPIPSDistance(LPIPS()), log=lambda line: None)
    assert result.metrics["pic"]["standin"] and "stand-in" in result.metrics["pic"]["distance"]
    assert "PIC (LPIPS stand-in)" in (tmp_path / "metrics.md").read_text()
    with open(tmp_path / "per_video.csv") as f:
        labels = {r["pic_distance"] for r in csv.DictReader(f) if r["pic"]}
    assert labels and all("stand-in" in label for label in labels)
