"""LoRA (peft) on tiny models: targets, training a few steps, the adapter file, load / scale / fuse / unload in the
pipeline, refusals of mismatched adapters, exact resume, the CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dynamicrafter import lora as L
from dynamicrafter.cli import main
from dynamicrafter.config import config_for_tests
from dynamicrafter.errors import ConfigError, UserError
from dynamicrafter.models.controls import UNetControls
from dynamicrafter.pipeline import DynamiCrafterPipeline
from dynamicrafter.testing import random_model, write_random_checkpoint
from dynamicrafter.training import TrainConfig, build_run
from dynamicrafter.training.model_setup import set_gradient_checkpointing

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest

SIZE = (16, 16)
FAST = dict(resolution=SIZE, batch_size=1, accumulate_grad_batches=1, num_workers=0, progress=False,
            sample_every=0, checkpoint_every=2, frame_stride=2, log_every=1, lr=1e-2)
GEN = dict(height=SIZE[0], width=SIZE[1], num_inference_steps=2, output_type="pt")


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(config_for_tests(), tmp_path_factory.mktemp("base") / "base.safetensors")


@pytest.fixture(scope="module")
def trained(base_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapter trained for 3 steps (rank 4, spatial attention + P) on generated clips."""
    run_dir = tmp_path_factory.mktemp("lora") / "run"
    run = build_run(TrainConfig(stage="finetune", init=str(base_checkpoint), data="synthetic:3", max_steps=3,
                                lora_rank=4, lora_alpha=8.0, lora_image_proj=True, run_dir=str(run_dir), **FAST),
                    logger="csv")
    run.fit()
    assert run.paths.lora.is_file() and not run.paths.export.exists()  # the adapter alone, no full model
    return run.paths.lora


def _pipe(checkpoint: Path) -> DynamiCrafterPipeline:
    pipe = DynamiCrafterPipeline.from_checkpoint(checkpoint, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(pipe: DynamiCrafterPipeline) -> torch.Tensor:
    image = torch.linspace(-1, 1, 3 * SIZE[0] * SIZE[1]).reshape(3, *SIZE)
    return pipe(image, "a red ball grows larger", generator=torch.Generator().manual_seed(0), **GEN).frames


# ----------------------------------------------------------------------------------------------------------------
# Targets and peft's wrapping
# ----------------------------------------------------------------------------------------------------------------


def test_target_sets() -> None:
    model = random_model(config_for_tests())
    spatial = set(L.target_modules(model, L.LoraSpec(2)))
    temporal = set(L.target_modules(model, L.LoraSpec(2, targets="temporal")))
    both = set(L.target_modules(model, L.LoraSpec(2, targets="all")))
    assert spatial and temporal and not spatial & temporal and both == spatial | temporal
    assert all(n.rsplit(".", 1)[1] in L.ATTENTION_PROJECTIONS for n in both)
    assert {n.rsplit(".", 1)[1] for n in spatial} == set(L.ATTENTION_PROJECTIONS)  # incl. to_k_ip / to_v_ip
    assert all("init_attn" in n or ".2.transformer_blocks" in n for n in temporal)  # temporal transformers only
    extra = set(L.target_modules(model, L.LoraSpec(2, image_proj=True, convs=True)))
    assert {n for n in extra - spatial if n.startswith("image_proj.")} and "unet.conv_in" in extra
    assert not any("temporal_conv" in n for n in extra)  # computed from their weights: never wrapped
    ip = L.target_modules(model, L.LoraSpec(2, targets=r"attn2\.to_(k|v)_ip$"))
    assert ip and all(n.endswith(("to_k_ip", "to_v_ip")) for n in ip)
    with pytest.raises(ConfigError, match="matches no"):
        L.target_modules(model, L.LoraSpec(2, targets="no_such_layer"))
    with pytest.raises(ConfigError, match="regular expression"):
        L.LoraSpec(2, targets="(")


def test_wrapped_layers_keep_controls_names_and_checkpointing() -> None:
    model = random_model(config_for_tests())  # eval mode: no dropout, so two backward passes can be compared
    x, t, ctx = torch.randn(1, 8, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77 + 16, 32)
    L.add_adapter(model, L.LoraSpec(2, targets="all"))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if ".lora_B." in name:
            torch.nn.init.normal_(p, std=0.1)  # a non-trivial adapter
    layers = [name for name, _ in model.unet.image_attention_layers()]
    assert layers and all(m.layer_name == n for n, m in model.unet.image_attention_layers())
    controls = UNetControls({layers[0]: 0.0, "output": 0.5})
    with torch.no_grad():
        as_trained, controlled = model.unet(x, t, ctx), model.unet(x, t, ctx, controls=controls)
    assert not torch.equal(as_trained, controlled)  # the per-layer lambda still reaches the wrapped layers

    def lora_grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        set_gradient_checkpointing(model, checkpointing)
        model.zero_grad(set_to_none=True)
        model.unet(x, t, ctx, controls=controls).square().mean().backward()
        # (the image branch of the layer with lambda 0 is not computed: its factors get no gradient)
        return {n: p.grad.clone() for n, p in model.named_parameters()
                if L.is_lora_parameter(n) and p.grad is not None}

    plain, recomputed = lora_grads(False), lora_grads(True)
    assert plain.keys() == recomputed.keys()
    assert sum(L.is_lora_parameter(n) for n, _ in model.named_parameters()) - len(plain) == 4  # 2 layers x (A, B)
    assert all(g.abs().sum() > 0 for n, g in plain.items() if ".lora_A." in n)
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------------
# Training, the adapter file, using adapters
# ----------------------------------------------------------------------------------------------------------------


def test_adapter_file(trained: Path, base_checkpoint: Path) -> None:
    with safe_open(str(trained), "pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    assert meta["format"] == L.FORMAT and meta["base_model"] == "test_size" and meta["rank"] == "4"
    assert float(meta["alpha"]) == 8.0 and meta["targets"] == "spatial" and meta["image_proj"] == "true"
    assert meta["base_checksum"] == L.base_checksum(_pipe(base_checkpoint).model)
    training = json.loads(meta["training"])
    assert training["steps"] == 3 and training["stage"] == "finetune" and training["init"] == str(base_checkpoint)
    # released module names (input_blocks shifted by one, to_out.0), as in the original checkpoints
    assert any(k.startswith("model.diffusion_model.input_blocks.1.1.") and ".to_out.0.lora_A" in k for k in keys)
    assert any(k.startswith("image_proj_model.") for k in keys)
    assert len(keys) == 2 * int(meta["num_layers"])


def test_load_scale_fuse_unload(trained: Path, base_checkpoint: Path) -> None:
    pipe = _pipe(base_checkpoint)
    base = _generate(pipe)
    name = pipe.load_lora(trained)
    assert name == "lora" and pipe.lora.scales == {"lora": 1.0}
    adapted = _generate(pipe)
    assert (adapted - base).abs().max() > 1e-3
    pipe.set_lora_scale(name, 0.0)
    assert torch.equal(_generate(pipe), base)  # scale 0: exactly the base model
    pipe.set_lora_scale(name, 2.0)
    doubled = _generate(pipe)
    assert (doubled - adapted).abs().max() > 1e-3
    pipe.set_lora_scale(name, 1.0)
    assert torch.equal(_generate(pipe), adapted)
    with pytest.raises(UserError, match="already loaded"):
        pipe.load_lora(trained)
    pipe.load_lora(trained, scale=0.0, name="second")  # a second adapter, switched off: no change
    assert torch.equal(_generate(pipe), adapted)
    pipe.fuse_lora()
    fused = _generate(pipe)
    torch.testing.assert_close(fused, adapted, rtol=0, atol=1e-4)  # fp32 noise of W + s B A
    with pytest.raises(UserError, match="fused"):
        pipe.set_lora_scale(name, 0.5)
    pipe.unload_lora()
    assert torch.equal(_generate(pipe), base)  # bit-identical to before the first load
    assert not L.lora_layers(pipe.model) and pipe.lora.scales == {}
    pipe.load_lora(trained, 1.0)
    assert torch.equal(_generate(pipe), adapted)
    pipe.unload_lora()
    assert torch.equal(_generate(pipe), base)


def test_mismatched_adapters_are_refused(trained: Path, base_checkpoint: Path, tmp_path: Path) -> None:
    adapter = L.read_adapter(trained)
    spec = adapter.spec
    pipe = _pipe(base_checkpoint)

    other_kind = L.save_adapter(tmp_path / "for512.safetensors", adapter.tensors, spec, "512", adapter.base_checksum)
    with pytest.raises(UserError, match=r"for512\.safetensors.*for the '512' model.*loaded model is 'test_size'"):
        pipe.load_lora(other_kind)

    unknown = dict(adapter.tensors)
    key = next(k for k in unknown if "input_blocks.0." in k)
    unknown[key.replace("input_blocks.0.", "input_blocks.9.")] = unknown.pop(key)
    with pytest.raises(UserError, match=r"unknown\.safetensors.*has no layer 'unet\.input_blocks\.9\."):
        pipe.load_lora(L.save_adapter(tmp_path / "unknown.safetensors", unknown, spec, "test_size",
                                      adapter.base_checksum))

    rank8 = L.save_adapter(tmp_path / "rank8.safetensors", adapter.tensors, L.LoraSpec(8), "test_size",
                           adapter.base_checksum)
    with pytest.raises(UserError, match="has shape"):
        pipe.load_lora(rank8)

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(UserError, match="not a DynamiCrafter LoRA"):
        pipe.load_lora(tmp_path / "plain.safetensors")
    assert not L.lora_layers(pipe.model)  # nothing was added by the refused files

    other_base = _pipe(write_random_checkpoint(config_for_tests(), tmp_path / "other.safetensors", seed=1))
    with pytest.warns(UserWarning, match="trained on other 'test_size' weights"):
        other_base.load_lora(trained)  # same kind, other weights: allowed, with a warning


def test_lora_settings_are_checked(base_checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match="--stage"):
        TrainConfig(stage="t2v", init=str(base_checkpoint), lora_rank=4)
    with pytest.raises(ConfigError, match="--init"):
        TrainConfig(stage="finetune", lora_rank=4)
    with pytest.raises(ConfigError, match="positive integer"):
        TrainConfig(stage="finetune", init=str(base_checkpoint), lora_rank=0)
    assert L.parse_lora_option("a/b.safetensors:0.5") == (Path("a/b.safetensors"), 0.5)
    assert L.parse_lora_option("c:/x.safetensors") == (Path("c:/x.safetensors"), 1.0)


# ----------------------------------------------------------------------------------------------------------------
# Exact resume, command line
# ----------------------------------------------------------------------------------------------------------------


def test_kill_and_resume_a_lora_run_is_bit_identical(base_checkpoint: Path, tmp_path: Path) -> None:
    import lightning as L_

    settings = dict(stage="finetune", init=str(base_checkpoint), data="synthetic:3", max_steps=4, lora_rank=2,
                    lora_targets="all", lora_convs=True, ema_decay=0.9, gradient_checkpointing=True, **FAST)
    straight = build_run(TrainConfig(run_dir=str(tmp_path / "a"), **settings), logger="csv")
    straight.fit()

    class Kill(L_.Callback):
        def on_train_batch_start(self, trainer, *args) -> None:
            if trainer.global_step == 3:
                raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        build_run(TrainConfig(run_dir=str(tmp_path / "b"), **settings), callbacks=[Kill()], logger="csv").fit()
    checkpoint = torch.load(tmp_path / "b" / "checkpoints" / "step-00000002.ckpt", weights_only=True)
    assert checkpoint["state_dict"] and all(L.is_lora_parameter(k) for k in checkpoint["state_dict"])  # small
    resumed = build_run(TrainConfig(run_dir=str(tmp_path / "b"), resume="latest", **settings), logger="csv")
    resumed.fit()
    a, b = (dict(r.module.model.named_parameters()) for r in (straight, resumed))
    assert straight.module.trainable == resumed.module.trainable
    assert all(torch.equal(a[n], b[n]) for n in straight.module.trainable)
    assert all(torch.equal(straight.module.ema.shadow[n], resumed.module.ema.shadow[n]) for n in a
               if n in straight.module.trainable)
    assert any(".in_conv.lora_A" in n for n in straight.module.trainable)  # ResBlock convolutions adapted too
    first, second = (L.read_adapter(tmp_path / d / "lora.safetensors").tensors for d in "ab")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    with pytest.raises(UserError, match="lora_rank"):  # the adapter's shape is fixed for the run
        build_run(TrainConfig(run_dir=str(tmp_path / "b"), resume="latest", **{**settings, "lora_rank": 3}))


def test_cli_train_and_generate_with_lora(base_checkpoint: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", "--stage", "finetune", "--init", str(base_checkpoint), "--data", "synthetic:2",
                 "--lora", "2", "--lora-targets", "temporal", "--lora-alpha", "4", "--resolution", "16x16",
                 "--max-steps", "1", "--batch-size", "1", "--accumulate-grad-batches", "1", "--num-workers", "0",
                 "--sample-every", "0", "--run-dir", str(run_dir), "--no-progress", "--logger", "csv"]) == 0
    adapter = run_dir / "lora.safetensors"
    assert L.read_adapter(adapter).spec == L.LoraSpec(2, 4.0, "temporal")
    image = tmp_path / "in.png"
    from PIL import Image

    Image.new("RGB", SIZE, (200, 40, 40)).save(image)
    out = tmp_path / "out.gif"
    assert main(["animate", str(image), "-p", "a ball", "-c", str(base_checkpoint), "--lora", f"{adapter}:0.5",
                 "--steps", "2", "--height", "16", "--width", "16", "-o", str(out)]) == 0
    assert out.is_file() and "LoRA 'lora'" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["animate", str(image), "-c", str(base_checkpoint), "--lora", str(tmp_path / "nope.safetensors"),
                     "--steps", "2", "-o", str(out)]) == 2
    assert "LoRA file not found" in capsys.readouterr().err


def test_every_generating_command_takes_lora_options() -> None:
    from dynamicrafter.cli import build_parser

    parser = build_parser()
    for argv in (["animate", "x.png", "-o", "y.gif"], ["interpolate", "a.png", "b.png", "-o", "y.gif"],
                 ["loop", "x.png", "-o", "y.gif"], ["story", "s.yaml", "-o", "x.mp4"], ["ui"],
                 ["benchmark", "-o", "out"]):
        args = parser.parse_args([*argv, "--lora", "a.safetensors:0.5", "--lora", "b.safetensors"])
        assert args.lora == ["a.safetensors:0.5", "b.safetensors"], argv[0]


@pytest.mark.slow
def test_lora_with_ddp_on_cpu(base_checkpoint: Path, tmp_path: Path) -> None:
    """Lightning's DDP launcher (gloo, 2 CPU processes) trains and exports the adapter."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "dynamicrafter.cli", "train", "--stage", "finetune", "--init", str(base_checkpoint),
           "--lora", "2", "--data", "synthetic:4", "--resolution", "16x16", "--strategy", "ddp", "--devices", "2",
           "--accelerator", "cpu", "--max-steps", "2", "--batch-size", "1", "--accumulate-grad-batches", "1",
           "--num-workers", "0", "--checkpoint-every", "2", "--sample-every", "0", "--run-dir", str(tmp_path / "ddp"),
           "--no-progress", "--logger", "csv"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert L.read_adapter(tmp_path / "ddp" / "lora.safetensors").spec.rank == 2
