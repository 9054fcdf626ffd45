"""Building the conditioning of the denoiser: the same function serves training and inference.

For a batch it produces

* ``context`` (b, 77 + n_img, d): text tokens of the prompt, then the context tokens P(CLIP_img(image)) of the
  conditioning image (dual-stream injection, stream 1);
* ``concat`` (b, 4, t, h, w): the VDG latents concatenated with the noise (stream 2): the conditioning frame's
  latent repeated over t, or for interpolation / looping the first and last frame latents with zeros between;
* ``fs`` (b,): frame stride or fps.

Classifier-free guidance drops conditions: a dropped text becomes "" (its CLIP encoding), a dropped image becomes
an all-zeros image before CLIP (as released); the VDG latents are kept in every branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dynamicrafter.model import DynamiCrafter


@dataclass
class Conditioning:
    context: torch.Tensor  # (b, 77 + n_img, d)
    concat: torch.Tensor | None  # (b, 4, t, h, w) VDG latents, None for a model without VDG input
    fs: torch.Tensor  # (b,) int64

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        concat = None if parts[0].concat is None else torch.cat([p.concat for p in parts])
        return Conditioning(torch.cat([p.context for p in parts]), concat, torch.cat([p.fs for p in parts]))

    def repeat(self, n: int) -> Conditioning:
        return Conditioning.cat([self] * n)


def vdg_latents(frame_latents: torch.Tensor, num_frames: int, interp: bool = False) -> torch.Tensor:
    """VDG input from conditioning-frame latents.

    frame_latents: (b, c, 1, h, w) for image-to-video (repeated over ``num_frames``), or (b, c, 2, h, w) = first and
    last frame for interpolation / looping (zeros between). Returns (b, c, num_frames, h, w).
    """
    b, c, k, h, w = frame_latents.shape
    if not interp:
        if k != 1:
            raise ValueError(f"image-to-video VDG expects one conditioning frame, got {k}")
        return frame_latents.expand(b, c, num_frames, h, w).contiguous()
    if k != 2:
        raise ValueError(f"interpolation VDG expects first and last frame latents, got {k} frames")
    out = frame_latents.new_zeros(b, c, num_frames, h, w)
    out[:, :, 0] = frame_latents[:, :, 0]
    out[:, :, -1] = frame_latents[:, :, 1]
    return out


def cfg_dropout_masks(batch_size: int, uncond_prob: float, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Training-time dropout as released: with r ~ U[0, 1), drop the text if r < 2p and the image if p <= r < 3p
    (text only p, both p, image only p; p = 0.05)."""
    r = torch.rand(batch_size, generator=generator).to(device)
    drop_text = r < 2 * uncond_prob
    drop_image = (r >= uncond_prob) & (r < 3 * uncond_prob)
    return drop_text, drop_image


def encode_text(model: DynamiCrafter, prompts: list[str]) -> torch.Tensor:
    """Prompts -> text tokens (b, 77, d) in the model's dtype."""
    return model.text_encoder.encode(prompts).to(model.dtype)


def encode_image_tokens(model: DynamiCrafter, images: torch.Tensor) -> torch.Tensor:
    """Images (b, 3, H, W) in [-1, 1] -> context tokens P(CLIP_img(images)) (b, n_img, d)."""
    tokens = model.image_encoder(images.to(model.image_encoder.mean.device, model.dtype))  # (b, 257, width)
    return model.image_proj(tokens.to(model.dtype))  # (b, n_img, d)


def build_conditioning(
    model: DynamiCrafter,
    *,
    fs: torch.Tensor,
    prompts: list[str] | None = None,
    text_embeds: torch.Tensor | None = None,
    images: torch.Tensor | None = None,
    image_embeds: torch.Tensor | None = None,
    concat: torch.Tensor | None = None,
    drop_text: torch.Tensor | None = None,
    drop_image: torch.Tensor | None = None,
) -> Conditioning:
    """Assemble the conditioning of a batch.

    Give either ``prompts`` or precomputed ``text_embeds`` (b, 77, d), and either conditioning ``images``
    (b, 3, H, W) in [-1, 1] or precomputed ``image_embeds`` (b, n_img, d). ``drop_text`` / ``drop_image`` (b,) bool
    replace the prompt by "" / the image by zeros (classifier-free guidance); with precomputed embeddings only rows
    not dropped keep them. ``concat`` are the VDG latents (b, c, t, h, w), kept as given.
    """
    if (prompts is None) == (text_embeds is None):
        raise ValueError("give exactly one of prompts / text_embeds")
    if (images is None) == (image_embeds is None):
        raise ValueError("give exactly one of images / image_embeds")

    if text_embeds is None:
        assert prompts is not None
        if drop_text is not None:
            prompts = ["" if d else p for p, d in zip(prompts, drop_text.tolist())]
        text_embeds = encode_text(model, prompts)  # (b, 77, d)
    elif drop_text is not None and bool(drop_text.any()):
        null = encode_text(model, [""])  # (1, 77, d)
        text_embeds = torch.where(drop_text.view(-1, 1, 1).to(text_embeds.device), null, text_embeds)

    if image_embeds is None:
        assert images is not None
        if drop_image is not None:
            images = images * (~drop_image).view(-1, 1, 1, 1).to(images)
        image_embeds = encode_image_tokens(model, images)  # (b, n_img, d)
    elif drop_image is not None and bool(drop_image.any()):
        ref = image_embeds
        zeros = torch.zeros(1, 3, 2 * model.config.image_encoder.image_size, 2 * model.config.image_encoder.image_size)
        null = encode_image_tokens(model, zeros.to(ref.device))  # (1, n_img, d)
        image_embeds = torch.where(drop_image.view(-1, 1, 1).to(ref.device), null, ref)

    context = torch.cat([text_embeds.to(image_embeds.dtype), image_embeds], dim=1)  # (b, 77 + n_img, d)
    return Conditioning(context=context, concat=concat, fs=fs.to(context.device, torch.long))
