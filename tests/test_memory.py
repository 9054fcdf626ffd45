"""Memory plans (dynamicrafter.memory): low-memory mode, model / block offload, chunked decoding, fp8 weights.

On the CPU the execution device equals the storage device, but every swap still makes a real copy (``copy=True``),
so these tests check that the weights really move (a network's parameters are copies while it runs, the originals
afterwards) and that outputs stay bit-identical to resident weights.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from dynamicrafter.checkpoint import load_model
from dynamicrafter.config import config_for_tests
from dynamicrafter.errors import CheckpointError, UserError
from dynamicrafter.memory import WeightSwap, offload_blocks
from dynamicrafter.model import COMPONENTS
from dynamicrafter.pipeline import DynamiCrafterPipeline
from dynamicrafter.testing import random_image, tiny_checkpoint

IMAGE = random_image()
PROMPT = "a red square moves left"


def run(pipe: DynamiCrafterPipeline, seed: int = 0, **kwargs) -> torch.Tensor:
    kwargs.setdefault("num_inference_steps", 2)
    out = pipe(IMAGE, PROMPT, generator=torch.Generator().manual_seed(seed), output_type="pt", **kwargs)
    return out.frames


def load(path, **kwargs) -> DynamiCrafterPipeline:
    pipe = DynamiCrafterPipeline.from_checkpoint(path, device="cpu", dtype=torch.float32, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    return tiny_checkpoint(tmp_path_factory.mktemp("memory"))


@pytest.fixture(scope="module")
def reference(checkpoint) -> torch.Tensor:
    return run(load(checkpoint))


def is_meta(module: torch.nn.Module) -> bool:
    return all(p.is_meta for p in module.parameters())


def test_low_memory_loads_towers_per_call_and_keeps_outputs(checkpoint, reference):
    pipe = load(checkpoint, low_memory=True)
    assert is_meta(pipe.model.text_encoder) and is_meta(pipe.model.image_encoder)  # never loaded up front
    assert not is_meta(pipe.model.unet)
    seen = {}

    def spy(name):
        def hook(module, args, output):
            seen[name] = not is_meta(module)
        return hook

    pipe.model.text_encoder.register_forward_hook(spy("text"))
    pipe.model.image_encoder.register_forward_hook(spy("image"))
    assert torch.equal(run(pipe), reference)
    assert seen == {"text": True, "image": True}  # loaded while encoding ...
    assert is_meta(pipe.model.text_encoder) and is_meta(pipe.model.image_encoder)  # ... and dropped after
    assert torch.equal(run(pipe), reference)  # loaded again for the next call
    assert pipe.decode_chunk_size == 2
    assert pipe.encode_prompt([PROMPT]).shape[1] == 77 and is_meta(pipe.model.text_encoder)


def test_low_memory_needs_a_checkpoint_and_checks_the_towers_at_load(checkpoint, tmp_path):
    with pytest.raises(UserError, match="from_checkpoint"):
        DynamiCrafterPipeline(load_model(checkpoint)).enable_low_memory()
    from safetensors.torch import save_file

    from dynamicrafter.checkpoint import official_state_dict

    without = {k: v for k, v in official_state_dict(load_model(checkpoint)).items()
               if not k.startswith("cond_stage_model.")}
    save_file(without, str(tmp_path / "no_text.safetensors"))
    with pytest.raises(CheckpointError, match="no CLIP text encoder"):
        load_model(tmp_path / "no_text.safetensors", config_for_tests(), skip=("text_encoder", "image_encoder"))


def test_decode_in_chunks_is_bit_identical():
    """Chunks of two or more frames give the released all-at-once result bit for bit (single-frame batches take
    another convolution path in oneDNN for the 4-channel input convolution and differ by ~1e-5: the released
    per-frame models decode one frame at a time anyway)."""
    pipe = DynamiCrafterPipeline(load_model_tiny(), device="cpu")
    z = torch.randn(1, 4, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    whole = pipe.decode_latents(z)
    for chunk in (2, 4):
        assert torch.equal(pipe.decode_latents(z, chunk), whole)


def load_model_tiny():
    from dynamicrafter.testing import random_model

    return random_model(config_for_tests())


def swapped_during_forward(pipe: DynamiCrafterPipeline, name: str) -> dict[str, bool]:
    """For each direct child of network ``name``: were its parameters copies (not the kept originals) while it ran?"""
    module = pipe.model.component(name)
    masters = {id(p): p.data_ptr() for p in module.parameters()}
    seen: dict[str, bool] = {}
    for child_name, child in module.named_children():
        params = list(child.parameters())
        if params:
            child.register_forward_pre_hook(lambda m, a, n=child_name, ps=params: seen.__setitem__(
                n, all(p.data_ptr() != masters[id(p)] for p in ps)))
    return seen


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_cpu_offload_moves_weights_and_keeps_outputs(checkpoint, reference, mode):
    pipe = load(checkpoint)
    before = {name: [p.data_ptr() for p in pipe.model.component(name).parameters()] for name in COMPONENTS}
    getattr(pipe, f"enable_{mode}_cpu_offload")("cpu")
    unet_seen = swapped_during_forward(pipe, "unet")
    others = {}
    if mode == "sequential":  # while the first U-Net layer runs, the last one holds its kept weights
        first, last = pipe.model.unet.input_blocks[0], pipe.model.unet.output_blocks[-1]
        kept = [p.data_ptr() for p in last.parameters()]
        first.register_forward_hook(lambda m, a, o: others.update(
            last_layer_kept=[p.data_ptr() for p in last.parameters()] == kept))
    assert torch.equal(run(pipe), reference)
    assert unet_seen and all(unet_seen.values()), unet_seen  # every part of the U-Net ran on copies
    after = {name: [p.data_ptr() for p in pipe.model.component(name).parameters()] for name in COMPONENTS}
    assert after == before  # the kept weights are back (and were never copied back)
    assert others == ({"last_layer_kept": True} if mode == "sequential" else {})


def test_weight_swap_is_shared_by_nested_users():
    layer = torch.nn.Linear(3, 3)
    master = layer.weight.data_ptr()
    swap = WeightSwap(layer, torch.device("cpu"))
    with swap.held():
        copy = layer.weight.data_ptr()
        with swap.held():
            assert layer.weight.data_ptr() == copy != master
        assert layer.weight.data_ptr() == copy
    assert layer.weight.data_ptr() == master and swap.users == 0


def test_offload_blocks_are_layers_and_split_large_modules():
    unet = load_model_tiny().unet
    total = sum(p.numel() for p in unet.parameters())
    layers = offload_blocks(unet, total)
    assert layers == [unet.time_embed, unet.fs_embed, unet.conv_in, unet.init_attn, *unet.input_blocks,
                      unet.middle_block, *unet.output_blocks, unet.out_norm, unet.conv_out]
    for limit in (total, total // 20):
        blocks = offload_blocks(unet, limit)
        assert all(sum(p.numel() for p in b.parameters()) <= limit or not list(b.children()) for b in blocks)
        owned = [id(p) for b in blocks for p in b.parameters()]
        assert len(owned) == len(set(owned)) == len(list(unet.parameters()))  # every weight in exactly one block
    assert len(offload_blocks(unet, total // 20)) > len(layers)


def test_fp8_weights_compute_in_bf16_or_say_what_is_missing(checkpoint):
    pipe = load(checkpoint)
    if importlib.util.find_spec("torchao") is None:
        with pytest.raises(UserError, match="pip install torchao"):
            pipe.enable_fp8_weights()
        return
    with pytest.raises(UserError, match="dtype='bf16'"):
        pipe.enable_fp8_weights()  # fp32 pipeline
    pipe = DynamiCrafterPipeline.from_checkpoint(checkpoint, device="cpu", dtype="bf16")
    pipe.set_progress_bar_config(disable=True)
    bf16 = run(pipe, eta=0.0)
    pipe.enable_fp8_weights()
    to_q = next(m for name, m in pipe.model.unet.named_modules() if name.endswith(".to_q"))  # a U-Net linear layer
    assert to_q.weight.qdata.dtype == torch.float8_e4m3fn
    fp8 = run(pipe, eta=0.0)
    assert not torch.equal(fp8, bf16)  # the weights changed precision ...
    assert (fp8 - bf16).abs().mean() < 0.05  # ... and the video stayed close


def test_compiled_unet_keeps_outputs(checkpoint, reference):
    """enable_compile routes the U-Net through torch.compile (the "eager" backend here: dynamo's graph capture
    without inductor's C++ compile, so the test stays fast); the frames stay those of the plain U-Net."""
    pipe = load(checkpoint)
    calls = []
    pipe.model.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    pipe.enable_compile(backend="eager")
    assert pipe.model.unet._compiled_call_impl is not None
    torch.testing.assert_close(run(pipe), reference, rtol=0, atol=1e-5)
    assert calls  # the compiled module still runs the U-Net's own forward
