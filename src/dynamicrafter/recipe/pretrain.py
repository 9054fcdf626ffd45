"""The recipe's first stages: the small autoencoder and the CLIP-style text / image towers.

* Autoencoder: the KL autoencoder of LDM (``VideoVAE``), trained on frames of the generated clips with an L1 + L2
  reconstruction loss and a small KL term; afterwards the latent scale factor is set to 1 / std of the latents
  (LDM's ``scale_by_std``), so the diffusion model sees unit-variance latents like the released models.
* Text and image towers: trained together contrastively (CLIP's symmetric InfoNCE over pooled embeddings: text at
  the end-of-text token after the last block + final LayerNorm, image at the class token after ``ln_post``, each with
  a linear projection), on first frames and scene captions, so that the image tokens are text-aligned. The heads
  are only needed for this objective; DynamiCrafter reads the text at the penultimate block and all image tokens
  of the last block.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from torch import nn

from dynamicrafter.config import CLIPTextConfig, CLIPVisionConfig
from dynamicrafter.data import synthetic as syn
from dynamicrafter.models.clip import CLIPImageEncoder, CLIPTextEncoder
from dynamicrafter.models.tokenizer import get_tokenizer
from dynamicrafter.models.vae import LOGVAR_RANGE, VideoVAE
from dynamicrafter.recipe import loop

KL_WEIGHT = 1e-4  # per latent element, relative to the per-pixel reconstruction loss


def frame_batch(dataset: syn.SyntheticVideoDataset, num_frames: int, generator: torch.Generator,
                frames_per_clip: int = 1) -> torch.Tensor:
    """Random frames of random clips: (num_frames, 3, H, W) in [-1, 1] (one frame per clip by default: frames of one
    clip are nearly identical, and batches of distinct scenes train the autoencoder several times faster)."""
    clips = math.ceil(num_frames / frames_per_clip)
    ids = torch.randint(len(dataset), (clips,), generator=generator).tolist()
    out = []
    for index in ids:
        frames = dataset.clip(index).frames  # (t, h, w, 3) uint8
        pick = torch.randint(frames.shape[0], (frames_per_clip,), generator=generator).tolist()
        out.append(frames[pick])
    # converted in numpy: small uint8 -> float conversions are much slower in torch on this CPU
    x = np.concatenate(out)[:num_frames].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0  # (n, 3, h, w)
    return torch.from_numpy(x)


def train_autoencoder(vae: VideoVAE, dataset: syn.SyntheticVideoDataset, steps: int, batch: int, lr: float,
                      state_path: Path, seed: int = 0) -> dict[str, float]:
    ae = vae.autoencoder.train()
    optimizer = torch.optim.AdamW(ae.parameters(), lr=lr, weight_decay=0.0)

    def step(i: int, generator: torch.Generator) -> dict[str, float]:
        x = frame_batch(dataset, batch, generator)
        moments = ae.quant_conv(ae.encoder(x))
        mean, logvar = moments.chunk(2, dim=1)
        logvar = logvar.clamp(*LOGVAR_RANGE)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
        recon = ae.decoder(ae.post_quant_conv(z))
        rec = (recon - x).abs().mean() + (recon - x).square().mean()
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()
        loss = rec + KL_WEIGHT * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item(), "kl": kl.item()}

    result = loop.run("autoencoder", {"vae": ae}, optimizer, step, steps, state_path, seed)
    ae.eval()
    return result


@torch.no_grad()
def latent_std_and_psnr(vae: VideoVAE, dataset: syn.SyntheticVideoDataset, frames: int = 256,
                        seed: int = 123) -> tuple[float, float]:
    """Std of the (unscaled) posterior means over random frames, and the reconstruction PSNR (dB) of the means."""
    x = frame_batch(dataset, frames, torch.Generator().manual_seed(seed))
    ae = vae.autoencoder.eval()
    mean = ae.quant_conv(ae.encoder(x)).chunk(2, dim=1)[0]
    recon = ae.decoder(ae.post_quant_conv(mean)).clamp(-1, 1)
    mse = ((recon - x) / 2).square().mean().item()
    return mean.std().item(), 10 * math.log10(1.0 / max(mse, 1e-12))


def scene_caption(scene: syn.Scene, rng: np.random.Generator) -> str:
    """A caption naming the object and the background only (what a single frame shows)."""
    main, bg = scene.main, scene.background
    words = [syn._pick(rng, syn.TEXTURE_WORDS[main.texture]), syn._pick(rng, syn.COLOUR_WORDS[main.colour]),
             syn._pick(rng, syn.SHAPE_NOUNS[main.shape])]
    obj = syn._with_article(" ".join(w for w in words if w))
    background = syn._pick(rng, syn.BACKGROUND_WORDS[bg.kind]).format(c=bg.colour)
    return f"{obj} {syn._pick(rng, syn.BACKGROUND_PREPOSITIONS)} {syn._with_article(background)} background"


def full_text_tower(config: CLIPTextConfig) -> nn.Module:
    """The text tower with all ``layers`` blocks (the released file has 24, of which DynamiCrafter reads 23)."""
    hf = transformers.CLIPTextConfig(
        vocab_size=config.vocab_size, hidden_size=config.width, num_hidden_layers=config.layers,
        intermediate_size=int(config.width * config.mlp_ratio), num_attention_heads=config.heads,
        max_position_embeddings=config.context_length, hidden_act="gelu", layer_norm_eps=1e-5,
        eos_token_id=get_tokenizer().eot_id,
    )
    return transformers.CLIPTextModel(hf)


def copy_used_text_layers(full: nn.Module, text: CLIPTextEncoder) -> None:
    """Embeddings, the first ``layers_used`` blocks and the final LayerNorm of ``full`` into ``text``."""
    inner = getattr(full, "text_model", full)
    state = {k: v for k, v in inner.state_dict().items()
             if not (k.startswith("encoder.layers.") and int(k.split(".")[2]) >= text.config.layers_used)}
    text.transformer.load_state_dict(state, strict=True)


class PatchReadout(nn.Module):
    """A frame pair's patch tokens -> one embedding, read per position.

    A shared MLP turns each pair of tokens at the same place into local features; a separate linear map per patch
    position then sums them into the embedding. Averaging a shared map over the patches instead (the earlier
    readout) gives the same embedding for mirrored patterns, e.g. the left edge moving up and the right edge down
    against the opposite, so it could not tell an object's motion apart from its mirror image.
    """

    def __init__(self, token_width: int, num_patches: int, embed_dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 2 * token_width
        self.local = nn.Sequential(nn.Linear(2 * token_width, hidden), nn.GELU())
        self.per_position = nn.Parameter(torch.randn(num_patches, hidden, embed_dim) / math.sqrt(num_patches * hidden))

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """(b, n, w) tokens of the first and the second frame -> (b, d)."""
        local = self.local(torch.cat([first, second], -1))  # (b, n, hidden)
        return torch.einsum("bnh,nhd->bd", local, self.per_position)  # (b, d)


class ContrastiveHeads(nn.Module):
    """CLIP's projections and temperature, used only while training the towers.

    ``video_readout`` embeds a clip as a frame pair for the video-text loss, read from the patch tokens per position
    (:class:`PatchReadout`; the pooled token alone keeps little of where the object is, so it cannot tell a motion
    from its reverse). ``text_motion`` names the motion of a caption from its embedding (:data:`TEXT_MOTION_WEIGHT`).
    """

    def __init__(self, text_width: int, image_width: int, embed_dim: int, num_patches: int):
        super().__init__()
        self.text_projection = nn.Linear(text_width, embed_dim, bias=False)
        self.image_projection = nn.Linear(image_width, embed_dim, bias=False)
        self.video_readout = PatchReadout(image_width, num_patches, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.text_motion = nn.Linear(embed_dim, len(syn.MOTIONS))

    @classmethod
    def for_towers(cls, text_config: CLIPTextConfig, image_config: CLIPVisionConfig) -> ContrastiveHeads:
        """The heads of a text and an image tower: embeddings of the text width, one readout per image patch."""
        num_patches = (image_config.image_size // image_config.patch_size) ** 2
        return cls(text_config.width, image_config.width, text_config.width, num_patches)

    def video_embedding(self, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """(b, n, w) patch tokens of the first and the second frame of a pair -> (b, d) video embeddings."""
        return self.video_readout(first, last)


def clip_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor,
              a_negatives: torch.Tensor | None = None, b_negatives: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, float]:
    """Symmetric InfoNCE of matched rows of ``a`` and ``b`` (b, d); returns the loss and the a -> b accuracy.

    ``a_negatives`` / ``b_negatives`` (k, d): hard negatives added to the candidates of the ``b -> a`` / ``a -> b``
    direction (NegCLIP-style), e.g. every clip played backwards and every caption with each other motion: a batch of
    random scenes almost never holds two clips that differ only in their motion, so without them nothing asks the
    towers to tell "moves left" from "moves right".
    """
    scale = logit_scale.exp().clamp(max=100)
    a_n, b_n = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    labels = torch.arange(a.shape[0])
    b_candidates = b_n if b_negatives is None else torch.cat([b_n, F.normalize(b_negatives, dim=-1)])
    a_candidates = a_n if a_negatives is None else torch.cat([a_n, F.normalize(a_negatives, dim=-1)])
    a_to_b = scale * a_n @ b_candidates.t()  # (b, b [+ k])
    b_to_a = scale * b_n @ a_candidates.t()  # (b, b [+ k])
    loss = 0.5 * (F.cross_entropy(a_to_b, labels) + F.cross_entropy(b_to_a, labels))
    return loss, (a_to_b.argmax(dim=1) == labels).float().mean().item()


def captions_by_motion(scene: syn.Scene, seed: int, motion_only: bool | None = None) -> dict[str, str]:
    """The scene's caption with each of the 9 motions, in the order of ``syn.MOTIONS``: one wording seed for all, so
    only the motion phrase differs (``motion_only``: the scene's own choice unless given)."""
    motion_only = scene.motion_only_caption if motion_only is None else motion_only
    return {motion: syn.compose_caption(np.random.default_rng(seed), motion, scene.main, scene.background, motion_only)
            for motion in syn.MOTIONS}


def motion_captions(scene: syn.Scene, rng: np.random.Generator) -> tuple[str, list[str]]:
    """The clip's caption and the same caption (same wording draws) with each of the other motions."""
    captions = captions_by_motion(scene, int(rng.integers(2**31)))
    return captions.pop(scene.motion), list(captions.values())


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """(n, context) token ids -> (n, longest) without the all-padding columns: under the causal mask no token attends
    to a later one, so the end-of-text features do not change, and the tower runs on ~1/3 of the positions."""
    return tokens[:, : int((tokens != 0).sum(1).max())]


def first_last(clip: syn.SyntheticClip) -> tuple[int, int]:
    """A clip read by its first and last frames."""
    return 0, len(clip.frames) - 1


def rotation_gap_pair(clip: syn.SyntheticClip) -> tuple[int, int]:
    """(first, last) frames, except for a rotation: (first, the latest frame turned by at most half of the smallest
    symmetry angle of any shape). A square turned by 90 degrees looks unturned, so the last frame of a long rotation
    (60-270 degrees in the centred data) can hide its direction; each frame turns by less than that half angle
    (``SyntheticConfig`` checks it), so a pair of them cannot."""
    last = len(clip.frames) - 1
    if not clip.scene.motion.startswith("rotate"):
        return 0, last
    unambiguous = syn.MAX_ROTATION_FRACTION * min(syn.SYMMETRY_DEGREES.values())  # degrees
    return 0, max(1, min(last, int(unambiguous // abs(clip.scene.rate))))


@torch.no_grad()
def tower_motion_choices(full_text: nn.Module, image: CLIPImageEncoder, heads: ContrastiveHeads,
                         clips: list[syn.SyntheticClip], pair: Callable[[syn.SyntheticClip], tuple[int, int]]
                         = first_last, seed: int = 0) -> list[tuple[str, str]]:
    """(clip's motion, chosen motion) per clip: the towers' 9-way reading of the clip's frame pair, the motion whose
    caption (the same wording with each motion's phrase) is nearest to the pair's video embedding. What the text
    tower cannot tell apart here (say clockwise from counter-clockwise) the video model cannot be told by its prompt."""
    tokenizer = get_tokenizer()
    rng = np.random.default_rng(seed)
    out = []
    for clip in clips:
        a, b = pair(clip)
        pixels = torch.from_numpy(clip.frames[[a, b]].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0)
        patches = image.transformer(pixel_values=image.preprocess(pixels)).last_hidden_state[:, 1:]  # (2, n, w)
        video = heads.video_embedding(patches[:1], patches[1:])[0]  # (d,)
        captions = list(captions_by_motion(clip.scene, int(rng.integers(2**31))).values())
        text = heads.text_projection(full_text(input_ids=tokenizer(captions)).pooler_output)  # (9, d)
        similarity = F.normalize(text, dim=-1) @ F.normalize(video, dim=-1)  # (9,)
        out.append((clip.scene.motion, syn.MOTIONS[int(similarity.argmax())]))
    return out


def load_towers(state_path: Path, text_config: CLIPTextConfig, image_config: CLIPVisionConfig
                ) -> tuple[nn.Module, CLIPImageEncoder, ContrastiveHeads]:
    """The full text tower, the image tower and the contrastive heads of a towers training state (``clip/state.pt``)."""
    state = torch.load(state_path, map_location="cpu", weights_only=False)["modules"]  # the recipe's own file
    full_text, image = full_text_tower(text_config), CLIPImageEncoder(image_config)
    heads = ContrastiveHeads.for_towers(text_config, image_config)
    for module, key in ((full_text, "text"), (image, "image"), (heads, "heads")):
        module.load_state_dict(state[key])
        module.eval()
    return full_text, image, heads


# Weight of the text tower's motion naming (a 9-way linear head on the pooled caption embedding) in the towers' loss.
# Web-scale CLIP text towers separate "clockwise" from "counterclockwise" from language alone; trained only against
# frame pairs, ours kept the two captions close (relative feature distance 0.18 against 0.30 for left / right) and
# never learned to read a turn's direction; with this term it reads 0.80 / 0.95 of the rotations
# (reports/tiny_centred/PROGRESS.md, session 11).
TEXT_MOTION_WEIGHT = 1.0


def caption_motions(clips: list[syn.SyntheticClip]) -> torch.Tensor:
    """(9b,) motion indices of the captions a training step encodes after the scene captions: each clip's own, then
    for k = 0..7 the k-th other motion of every clip (the order of :func:`motion_captions` and the step's negatives)."""
    own = [syn.MOTIONS.index(c.scene.motion) for c in clips]
    others = [[i for i in range(len(syn.MOTIONS)) if i != m] for m in own]
    return torch.tensor(own + [row[k] for k in range(len(syn.MOTIONS) - 1) for row in others])


def train_clip_towers(text: CLIPTextEncoder, image: CLIPImageEncoder, dataset: syn.SyntheticVideoDataset,
                      steps: int, batch: int, lr: float, state_path: Path, seed: int = 0) -> dict[str, float]:
    """Contrastive training of the text and image towers: the average of two CLIP losses, plus a motion naming.

    * image-text: a random frame against the caption of the scene alone (objects and background);
    * video-text: the clip's frame pair (:func:`rotation_gap_pair`) against its full caption, motion included, with
      every clip played backwards and the same caption with each of the 8 other motions as hard negatives
      (:func:`clip_loss`): the still caption of its own scene is what a rotation must beat to be read as one.

    Web-scale CLIP text towers know motion words from their captions; a tower trained on still frames alone would
    never see them, and the video model could not tell "moves left" from "moves right" (the released models rely on
    the text for motion, paper Sec. 5). The image tower itself still embeds one image; the pair is read per patch
    position (:class:`PatchReadout`), and the caption tokens without their padding (:func:`trim_padding`). A third
    term asks the text tower to name each caption's motion (:data:`TEXT_MOTION_WEIGHT`).
    """
    full_text = full_text_tower(text.config).train()
    image.train()
    heads = ContrastiveHeads.for_towers(text.config, image.config)
    params = [*full_text.parameters(), *image.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    tokenizer = get_tokenizer()

    def step(i: int, generator: torch.Generator) -> dict[str, float]:
        ids = torch.randint(len(dataset), (batch,), generator=generator).tolist()
        rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator)))
        clips = [dataset.clip(index) for index in ids]
        frame = torch.randint(16, (1,), generator=generator).item()
        pairs = [rotation_gap_pair(c) for c in clips]
        pixels = np.stack([c.frames[min(frame, len(c.frames) - 1)] for c in clips]
                          + [c.frames[a] for c, (a, _) in zip(clips, pairs)]
                          + [c.frames[b] for c, (_, b) in zip(clips, pairs)])  # (3b, h, w, 3)
        pixels = torch.from_numpy(pixels.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0)  # (3b, 3, h, w)
        captions, others = zip(*(motion_captions(c.scene, rng) for c in clips))
        negatives = [text for group in zip(*others) for text in group]  # (8b,): other motion k of clip i at k b + i
        tokens = trim_padding(tokenizer([scene_caption(c.scene, rng) for c in clips] + list(captions)
                                        + list(negatives)))
        text_pooled = heads.text_projection(full_text(input_ids=tokens).pooler_output)  # (10b, d)
        hidden = image.transformer(pixel_values=image.preprocess(pixels))
        frame_features = heads.image_projection(hidden.pooler_output[:batch])  # (b, d)
        patches = hidden.last_hidden_state[:, 1:]  # (3b, n, w): where things are, not only what
        first, last = patches[batch:2 * batch], patches[2 * batch:]
        video_features = heads.video_embedding(first, last)  # (b, d)
        reversed_features = heads.video_embedding(last, first)  # (b, d): played backwards
        caption_features, negative_features = text_pooled[batch:2 * batch], text_pooled[2 * batch:]  # (b, d), (8b, d)
        image_loss, accuracy = clip_loss(frame_features, text_pooled[:batch], heads.logit_scale)
        video_loss, video_accuracy = clip_loss(video_features, caption_features, heads.logit_scale,
                                               a_negatives=reversed_features, b_negatives=negative_features)
        motion_loss = F.cross_entropy(heads.text_motion(text_pooled[batch:]), caption_motions(clips))
        loss = 0.5 * (image_loss + video_loss) + TEXT_MOTION_WEIGHT * motion_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # each clip prefers its caption to those of its scene with another motion
            video_n = F.normalize(video_features, dim=-1)
            right = (video_n * F.normalize(caption_features, dim=-1)).sum(-1)  # (b,)
            other_n = F.normalize(negative_features, dim=-1).view(-1, batch, video_n.shape[-1])  # (8, b, d)
            wrong = (video_n * other_n).sum(-1).amax(0)  # (b,)
            direction = (right > wrong).float().mean().item()
        return {"loss": loss.item(), "accuracy": accuracy, "video_accuracy": video_accuracy,
                "motion_accuracy": direction, "text_motion_loss": motion_loss.item()}

    result = loop.run("clip towers", {"text": full_text, "image": image, "heads": heads}, optimizer, step, steps,
                      state_path, seed)
    copy_used_text_layers(full_text, text)
    text.eval()
    image.eval()
    return result
