"""Tiny configs of every network through the same code paths as the released models."""

import dataclasses

import pytest
import torch

from dynamicrafter.config import config_for_tests
from dynamicrafter.errors import ConfigError, UserError
from dynamicrafter.models.attention import Attention, TemporalTransformer
from dynamicrafter.models.clip import CLIPImageEncoder, CLIPTextEncoder, antialiased_bicubic_resize
from dynamicrafter.models.controls import UNetControls
from dynamicrafter.models.resampler import Resampler
from dynamicrafter.models.unet import UNet3D, timestep_embedding
from dynamicrafter.models.vae import VideoVAE
from dynamicrafter.testing import randomize_

CFG = config_for_tests()
T = CFG.unet.temporal_length


def unet_inputs(config=CFG, batch=2, frames=T, n_ctx=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = config.unet
    n_ctx = n_ctx or c.text_context_len + c.image_tokens_per_frame * frames
    x = torch.randn(batch, c.in_channels, frames, 8, 8, generator=g)
    t = torch.tensor([10, 900][:batch])
    context = torch.randn(batch, n_ctx, c.context_dim, generator=g)
    fs = torch.tensor([3, 5][:batch])
    return x, t, context, fs


def make_unet(config=CFG, seed=0):
    torch.manual_seed(seed)
    return randomize_(UNet3D(config.unet), seed).eval()


def test_unet_shapes_and_batch_independence():
    unet = make_unet()
    x, t, ctx, fs = unet_inputs()
    out = unet(x, t, ctx, fs)
    assert out.shape == (2, CFG.unet.out_channels, T, 8, 8)
    single = unet(x[1:], t[1:], ctx[1:], fs[1:])
    torch.testing.assert_close(out[1:], single, atol=1e-5, rtol=1e-4)


def test_fresh_unet_outputs_zero():
    """As released, every residual output and the final conv start at zero."""
    unet = UNet3D(CFG.unet)
    x, t, ctx, fs = unet_inputs()
    assert unet(x, t, ctx, fs).abs().max() == 0


def test_timestep_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([0.0, 5.0]), 8)
    assert torch.allclose(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    assert torch.allclose(emb[1], torch.cat([torch.cos(5 * freqs), torch.sin(5 * freqs)]))


def test_context_split_per_frame():
    unet = make_unet()
    b, d, text, per = 2, CFG.unet.context_dim, CFG.unet.text_context_len, CFG.unet.image_tokens_per_frame
    ctx = torch.randn(b, text + per * T, d)
    expanded = unet.expand_context(ctx, T)
    assert expanded.shape == (b * T, text + per, d)
    # frame i of sample 1 gets the text and image tokens [per*i, per*(i+1))
    i = 2
    torch.testing.assert_close(expanded[T + i, text:], ctx[1, text + per * i: text + per * (i + 1)])
    torch.testing.assert_close(expanded[T + i, :text], ctx[1, :text])
    other = torch.randn(b, text + 5, d)  # any other length is repeated for every frame
    assert torch.equal(unet.expand_context(other, T)[T + i], other[1])


def test_lambda_zero_is_text_only_cross_attention():
    unet = make_unet()
    x, t, ctx, fs = unet_inputs()
    off = UNetControls(image_attention_scale=0.0)
    out = unet(x, t, ctx, fs, controls=off)
    ctx2 = ctx.clone()
    ctx2[:, CFG.unet.text_context_len:] = torch.randn_like(ctx2[:, CFG.unet.text_context_len:])
    assert torch.equal(out, unet(x, t, ctx2, fs, controls=off)), "image tokens must not matter with lambda = 0"
    # same as a network without the image branch that shares all other weights
    text_only = UNet3D(dataclasses.replace(CFG.unet, image_cross_attention=False)).eval()
    missing, unexpected = text_only.load_state_dict(unet.state_dict(), strict=False)
    assert missing == [] and all("_ip." in k or k.endswith(".alpha") for k in unexpected)
    torch.testing.assert_close(text_only(x, t, ctx, fs), out)
    assert not torch.equal(unet(x, t, ctx2, fs), out)  # as trained (no controls): the image tokens matter


def test_learnable_lambda_gate():
    unet = make_unet()
    layers = unet.image_attention_layers()
    assert layers and all(m.alpha is not None for _, m in layers)
    name, attn = layers[0]
    with torch.no_grad():
        attn.alpha.fill_(0.5)
    assert unet.image_attention_lambdas()[name] == pytest.approx(float(torch.tanh(torch.tensor(0.5)) + 1))
    lambdas = unet.image_attention_lambdas(UNetControls({"input": 2.0}))
    assert lambdas[name] == pytest.approx(2 * float(torch.tanh(torch.tensor(0.5)) + 1))
    others = [(v, float(torch.tanh(m.alpha.detach()) + 1)) for (n, m), v in zip(layers, lambdas.values())
              if not n.startswith("input_blocks")]
    assert others and all(v == pytest.approx(expected) for v, expected in others)
    # a layer name wins over its group
    assert unet.image_attention_lambdas(UNetControls({"input": 2.0, name: 0.0}))[name] == 0.0
    assert unet.image_attention_lambdas()[name] == pytest.approx(float(torch.tanh(torch.tensor(0.5)) + 1))
    with pytest.raises(UserError, match="has no image cross-attention layer 'input_blocks.99.1.transformer_blocks"):
        UNetControls({"input_blocks.99.1.transformer_blocks.0.attn2": 1.0}).check_layers([n for n, _ in layers])
    with pytest.raises(UserError, match="unknown layer group 'encoder'"):
        UNetControls({"encoder": 1.0})


def test_dual_cross_attention_formula():
    torch.manual_seed(0)
    attn = Attention(16, 8, heads=2, dim_head=4, image_cross_attention=True, image_scale_learnable=True,
                     text_context_len=3)
    with torch.no_grad():
        attn.alpha.fill_(-0.3)
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 3 + 4, 8)
    q = attn.to_q(x).view(2, 5, 2, 4).transpose(1, 2)

    def branch(k_proj, v_proj, c):
        k = k_proj(c).view(2, -1, 2, 4).transpose(1, 2)
        v = v_proj(c).view(2, -1, 2, 4).transpose(1, 2)
        return torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1) @ v

    lam = torch.tanh(torch.tensor(-0.3)) + 1
    expected = branch(attn.to_k, attn.to_v, ctx[:, :3]) + lam * branch(attn.to_k_ip, attn.to_v_ip, ctx[:, 3:])
    expected = attn.to_out(expected.transpose(1, 2).reshape(2, 5, 8))
    torch.testing.assert_close(attn(x, ctx), expected)


def test_temporal_switches_causal_and_relative_position():
    torch.manual_seed(0)
    x = torch.randn(1, 16, 5, 2, 2)
    causal = randomize_(TemporalTransformer(16, 2, 8, norm_groups=8, causal=True))
    # the attention is causal: in the transformer blocks, a change of the last frame leaves earlier frames unchanged
    # (the GroupNorm before them sees all frames, as released)
    tokens = torch.randn(4, 5, 16)
    block = causal.transformer_blocks[0]
    mask = torch.ones(5, 5, dtype=torch.bool).tril()
    tokens2 = tokens.clone()
    tokens2[:, -1] += 1.0
    torch.testing.assert_close(block(tokens2, mask=mask)[:, :-1], block(tokens, mask=mask)[:, :-1])
    assert not torch.allclose(causal(x), randomize_(TemporalTransformer(16, 2, 8, norm_groups=8))(x))
    relative = randomize_(TemporalTransformer(16, 2, 8, norm_groups=8, relative_position=True, temporal_length=5))
    assert relative(x).shape == x.shape
    assert "transformer_blocks.0.attn1.relative_position_k.embeddings_table" in dict(relative.named_parameters())


@pytest.mark.parametrize("relative_position", [False, True])
def test_circular_time_makes_the_unet_equivariant_to_rotations_of_the_frames(relative_position):
    """On a circular time axis no frame is first: rotating the frames (and their per-frame image tokens) rotates
    the prediction. With the released zero padding (and clipped relative distances) it does not."""
    config = dataclasses.replace(CFG, unet=dataclasses.replace(CFG.unet, use_relative_position=relative_position))
    unet = make_unet(config)
    frames, per = 6, config.unet.image_tokens_per_frame
    x, t, ctx, fs = unet_inputs(config, frames=frames)
    text, image = ctx[:, :config.unet.text_context_len], ctx[:, config.unet.text_context_len:]
    rotated_image = image.reshape(2, frames, per, -1).roll(2, dims=1).reshape_as(image)
    rotated = (x.roll(2, dims=2), t, torch.cat([text, rotated_image], dim=1), fs)
    on_circle = UNetControls(circular=True)
    circular = unet(x, t, ctx, fs, controls=on_circle)
    torch.testing.assert_close(unet(*rotated, controls=on_circle), circular.roll(2, dims=2), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(unet(*rotated), unet(x, t, ctx, fs).roll(2, dims=2), atol=1e-3)
    assert not torch.allclose(circular, unet(x, t, ctx, fs), atol=1e-3)


def test_circular_time_needs_non_causal_temporal_attention():
    unet = UNet3D(dataclasses.replace(CFG.unet, use_causal_attention=True))
    x, t, ctx, fs = unet_inputs()
    with pytest.raises(ConfigError, match="circular time axis needs non-causal temporal attention"):
        unet(x, t, ctx, fs, controls=UNetControls(circular=True))


def test_unet_runs_as_image_model_without_temporal_layers():
    unet = make_unet()
    x, t, ctx, fs = unet_inputs(frames=1)
    out = unet(x, t, ctx, fs, use_temporal=False)
    assert out.shape == (2, 4, 1, 8, 8)
    temporal_modules = [name for name, m in unet.named_modules()
                        if isinstance(m, TemporalTransformer) or name.endswith("temporal_conv")]
    temporal = {n for n, _ in unet.named_parameters() if any(n.startswith(f"{m}.") for m in temporal_modules)}
    assert any(n.startswith("init_attn.") for n in temporal) and any("temporal_conv" in n for n in temporal)
    out.sum().backward()
    assert all(p.grad is None for n, p in unet.named_parameters() if n in temporal)  # bypassed
    spatial = [p for n, p in unet.named_parameters() if n not in temporal and "attn2.to_k_ip" not in n]
    assert unet.conv_in.weight.grad is not None and sum(p.grad is not None for p in spatial) > len(spatial) // 2


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    config = dataclasses.replace(CFG.unet, gradient_checkpointing=True)
    a, b = randomize_(UNet3D(CFG.unet), 1), randomize_(UNet3D(config), 1)
    x, t, ctx, fs = unet_inputs()
    torch.manual_seed(5)  # same dropout masks (the temporal conv block has a fixed dropout of 0.1)
    a(x, t, ctx, fs).square().mean().backward()
    torch.manual_seed(5)
    b(x, t, ctx, fs).square().mean().backward()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-6, rtol=1e-4, msg=n)


def test_resampler_shapes():
    torch.manual_seed(0)
    p = randomize_(Resampler(CFG.resampler))
    tokens = p(torch.randn(2, 5, CFG.resampler.embedding_dim))
    assert tokens.shape == (2, CFG.resampler.num_queries * T, CFG.resampler.output_dim)
    single = Resampler(dataclasses.replace(CFG.resampler, video_length=None))
    assert single(torch.randn(1, 5, CFG.resampler.embedding_dim)).shape == (1, CFG.resampler.num_queries, 32)


def test_clip_encoders_shapes():
    torch.manual_seed(0)
    text = CLIPTextEncoder(CFG.text_encoder).eval()
    out = text.encode(["a cat", ""])
    assert out.shape == (2, 77, CFG.text_encoder.width)
    image = CLIPImageEncoder(CFG.image_encoder).eval()
    tokens = image(torch.rand(2, 3, 40, 56) * 2 - 1)
    assert tokens.shape == (2, image.num_tokens, CFG.image_encoder.width)


def test_antialiased_resize():
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(antialiased_bicubic_resize(x, (32, 32)), x)  # same size: identity
    down = antialiased_bicubic_resize(x, (16, 16))
    assert down.shape == (1, 3, 16, 16)
    # a constant image stays constant (the Gaussian is normalized, reflect padding)
    const = antialiased_bicubic_resize(torch.full((1, 3, 50, 70), 0.3), (20, 20))
    torch.testing.assert_close(const, torch.full_like(const, 0.3))
    # antialiasing removes a Nyquist checkerboard that plain subsampling would alias
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None]) % 2
    smooth = antialiased_bicubic_resize(checker.float()[None, None].repeat(1, 3, 1, 1), (16, 16))
    assert smooth.std() < 0.1


@pytest.mark.parametrize("channel_mult", [(1, 2), (1, 2, 2)])
def test_autoencoder_computes_diffusers_autoencoder_kl(channel_mult):
    """Our KL autoencoder has diffusers' AutoencoderKL parameter names and computes its function exactly."""
    from diffusers import AutoencoderKL

    config = dataclasses.replace(CFG.vae, channel_mult=channel_mult)
    ours = VideoVAE(config).autoencoder.eval()
    randomize_(ours, 3)
    widths = tuple(config.base_channels * m for m in channel_mult)
    theirs = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=config.latent_channels,
                           block_out_channels=widths, layers_per_block=config.num_res_blocks,
                           norm_num_groups=config.norm_groups, down_block_types=("DownEncoderBlock2D",) * len(widths),
                           up_block_types=("UpDecoderBlock2D",) * len(widths)).eval()
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.rand(2, 3, 24, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        moments = ours.quant_conv(ours.encoder(x))
        assert torch.equal(moments, theirs.quant_conv(theirs.encoder(x)))
        z = moments[:, : config.latent_channels]
        decoded = ours.decoder(ours.post_quant_conv(z))
        assert torch.equal(decoded, theirs.decoder(theirs.post_quant_conv(z)))
    assert decoded.shape == x.shape and decoded.std() > 0


def test_vae_round_trip_shapes_and_posterior():
    torch.manual_seed(0)
    vae = VideoVAE(CFG.vae).eval()
    video = torch.rand(1, 3, 3, 32, 32) * 2 - 1
    z_mean = vae.encode(video, sample=False)
    assert z_mean.shape == (1, 4, 3, 16, 16)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(vae.encode(video, g1), vae.encode(video, g2))
    assert not torch.equal(vae.encode(video, torch.Generator().manual_seed(2)), z_mean)
    chunked = vae.decode(z_mean, chunk_size=1)
    torch.testing.assert_close(chunked, vae.decode(z_mean), atol=1e-5, rtol=1e-4)
    assert chunked.shape == video.shape
