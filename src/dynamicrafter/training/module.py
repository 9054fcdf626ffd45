"""The training module: one LightningModule for every stage (the stage decides what learns and what conditions).

One training step (released ``LatentVisualDiffusion.shared_step`` / ``p_losses``), for a batch of clips
``x`` (b, 3, t, H, W) in [-1, 1]:

1. ``z_0 = s * (mean + std * n)``: VAE posterior sample of every frame (frozen VAE, s = 0.18215);
2. the conditioning frame ``k`` (random in [0, t) with ``rand_cond_frame``, else 0), classifier-free-guidance
   dropout masks (5 % text only, 5 % image only, 5 % both), then :func:`build_conditioning`: context = CLIP text
   tokens + P(CLIP image tokens of frame k) (stream 1), VDG latents = z_0 of frame k repeated over t, or the first
   and last frame latents with zeros between for interpolation (stream 2), fs = frame stride or fps;
3. ``t ~ U{0, ..., 999}``, ``eps ~ N(0, I)``, ``(z_t, target) = training_inputs(z_0, t, eps)`` (dynamic rescale of
   z_0 for the 512/1024 models; target eps or v);
4. loss = mean squared error between the U-Net output and the target.

Randomness. Every random draw of micro-step n on rank r (timesteps, noise, posterior sample, dropout masks,
conditioning frame, and the dropout layers through the global generators, reseeded per step) comes from seeds
derived from (seed, r, n): a run resumed from a checkpoint draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import replace
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from dynamicrafter.conditioning import Conditioning, build_conditioning, cfg_dropout_masks, vdg_latents
from dynamicrafter.data.latents import sample_posterior
from dynamicrafter.diffusion.ddim import sample_ddim
from dynamicrafter.diffusion.denoiser import make_denoiser
from dynamicrafter.diffusion.guidance import Guidance
from dynamicrafter.diffusion.timesteps import sampling_timesteps
from dynamicrafter.errors import CheckpointError
from dynamicrafter.model import DynamiCrafter
from dynamicrafter.training.config import StageConfig, TrainConfig
from dynamicrafter.training.ema import EMA
from dynamicrafter.training.model_setup import apply_trainable, frozen_modules, parameter_table
from dynamicrafter.utils import randn

STATE_KEY = "dynamicrafter_training"


class DynamiCrafterTraining(L.LightningModule):
    """Trains ``model`` as ``stage`` describes; the weights live in ``self.model`` (names ``model.unet.…``)."""

    def __init__(self, model: DynamiCrafter, stage: StageConfig, config: TrainConfig, interp: bool = False):
        super().__init__()
        self.model = model
        self.stage = stage
        self.config = config
        self.interp = interp
        self.rand_cond_frame = (stage.rand_cond_frame and not interp) if config.rand_cond_frame is None \
            else config.rand_cond_frame
        self.uncond_prob = model.config.uncond_prob if config.uncond_prob is None else config.uncond_prob
        self.lora_spec = config.lora_spec()  # LoRA: only the adapter's factors learn (dynamicrafter.lora)
        self.lora_base: tuple[str, str] | None = None  # (model kind, base checksum) the adapter is trained on
        self.trainable = (self._add_lora(model) if self.lora_spec is not None
                          else apply_trainable(model, stage.trainable))
        self._frozen = frozen_modules(model)
        self.ema = EMA(model, self.trainable, config.ema_decay) if config.ema_decay else None
        # progress counters, saved in every checkpoint
        self.micro_step = 0  # batches processed by this rank
        self.consumed_samples = 0  # global stream position of the data (all ranks)
        self.skipped_files = 0  # unreadable files skipped by this rank's data
        self.strict_loading = False  # checkpoints hold only the trainable weights (+ optimizer, EMA, counters)
        unet = model.config.unet
        if stage.vdg and unet.in_channels == unet.out_channels:
            raise ValueError("a VDG stage needs the 8-channel U-Net: expand conv_in first (model_setup.expand_conv_in)")

    # -------------------------------------------------------------------------------------------------------------
    # Modes and parameters
    # -------------------------------------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> DynamiCrafterTraining:
        """Frozen networks (VAE, CLIP towers, frozen U-Net parts) stay in eval mode."""
        super().train(mode)
        if mode:
            for module in self._frozen:
                module.eval()
        return self

    def parameter_summary(self) -> str:
        return parameter_table(self.model)

    def _add_lora(self, model: DynamiCrafter) -> set[str]:
        """Freeze the model and wrap its target layers with a LoRA adapter (peft, seeded initialization); the
        adapter's factors are the trainable weights."""
        from dynamicrafter.lora import add_adapter, base_checksum, model_kind

        self.lora_base = (model_kind(model.config), base_checksum(model))
        model.requires_grad_(False)
        torch.manual_seed(self.config.seed)
        add_adapter(model, self.lora_spec)
        return {n for n, p in model.named_parameters() if p.requires_grad}

    def on_fit_start(self) -> None:
        lora = "" if self.lora_spec is None else (
            f" -- LoRA rank {self.lora_spec.rank}, alpha {self.lora_spec.lora_alpha:g}, targets "
            f"{self.lora_spec.targets}: only the adapters learn")
        self.print(f"stage {self.stage.name}: {self.stage.summary}{lora}\n{self.parameter_summary()}")
        if self.ema is not None:
            self.ema.to(self.device)

    # -------------------------------------------------------------------------------------------------------------
    # The loss
    # -------------------------------------------------------------------------------------------------------------

    def step_generator(self) -> torch.Generator:
        """Seed the global generators (dropout layers) and return the generator of this micro-step's draws."""
        seeds = np.random.SeedSequence([self.config.seed, self.global_rank, self.micro_step]).generate_state(4)
        torch.manual_seed(int(seeds[0]))
        random.seed(int(seeds[1]))
        np.random.seed(int(seeds[2]))
        return torch.Generator().manual_seed(int(seeds[3]))

    def fs_of(self, batch: dict[str, Any]) -> torch.Tensor:
        """The fs embedding's input: frame stride (256 model) or fps (512/1024), per ``fs_condition_type``."""
        key = "fps" if self.model.config.fs_condition_type == "fps" else "frame_stride"
        return batch[key].to(self.device, torch.long)

    def vdg_input(self, z0: torch.Tensor, cond_index: int, interp_mask: torch.Tensor | None = None
                  ) -> torch.Tensor | None:
        """The VDG latents concatenated with the noise (None for a 4-channel U-Net; zeros before stage iii).

        ``interp_mask`` (b,) bool selects the samples that get the first + last frame (``interp_fraction``).
        """
        unet = self.model.config.unet
        if unet.in_channels == unet.out_channels:
            return None
        t = z0.shape[2]
        if not self.stage.vdg:
            return torch.zeros_like(z0)
        first_last = vdg_latents(z0[:, :, [0, t - 1]], t, interp=True)  # first + last frame, zeros between
        if self.interp:
            return first_last
        repeated = vdg_latents(z0[:, :, cond_index : cond_index + 1], t)  # the conditioning frame, repeated
        if interp_mask is None or not bool(interp_mask.any()):
            return repeated
        return torch.where(interp_mask.view(-1, 1, 1, 1, 1).to(z0.device), first_last, repeated)

    def conditioning(self, prompts: list[str], images: torch.Tensor, fs: torch.Tensor, concat: torch.Tensor | None,
                     drop_text: torch.Tensor | None = None, drop_image: torch.Tensor | None = None) -> Conditioning:
        """Context tokens (+ VDG, fs); without image conditioning (T2V) the context is the 77 text tokens only."""
        if not self.stage.image_condition:
            empty = images.new_zeros(images.shape[0], 0, self.model.config.unet.context_dim)
            return build_conditioning(self.model, fs=fs, prompts=prompts, image_embeds=empty, concat=concat,
                                      drop_text=drop_text)
        return build_conditioning(self.model, fs=fs, prompts=prompts, images=images, concat=concat,
                                  drop_text=drop_text, drop_image=drop_image)

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Frames (b, 3, t, H, W) -> posterior samples of the scaled latents (b, 4, t, h, w), as released."""
        chunk = 1 if self.model.config.defaults.perframe_ae else None
        return self.model.vae.encode(video, generator, sample=True, chunk_size=chunk).float()

    def diffusion_loss(self, z0: torch.Tensor, cond: Conditioning, generator: torch.Generator) -> torch.Tensor:
        """|| f(z_t, t, c) - target ||^2 with t uniform in [0, T) and the schedule's target (eps or v)."""
        schedule = self.model.schedule
        b = z0.shape[0]
        t = torch.randint(0, schedule.num_timesteps, (b,), generator=generator).to(z0.device)
        noise = randn(z0.shape, generator, z0.device, torch.float32)
        z_t, target = schedule.training_inputs(z0, t, noise)  # dynamic rescale of z_0 included
        x = z_t if cond.concat is None else torch.cat([z_t, cond.concat.to(z_t.dtype)], dim=1)  # (b, 4|8, t, h, w)
        out = self.model.unet(x, t, cond.context, cond.fs, use_temporal=self.stage.use_temporal)
        return F.mse_loss(out.float(), target.float())

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        video = batch["video"].to(self.device, torch.float32)  # (b, 3, t, H, W) in [-1, 1]
        b, _, t = video.shape[:3]
        if "latent_mean" in batch:  # cached posterior: sample it as the encoder would
            z0 = sample_posterior(batch["latent_mean"].to(self.device), batch["latent_logvar"].to(self.device),
                                  self.model.config.vae.scale_factor, generator)  # (b, 4, t, h, w)
        else:
            z0 = self.encode_video(video, generator)  # (b, 4, t, h, w)
        # the conditioning frame: random frame of the clip (rand_cond_frame, one index per batch as released)
        cond_index = int(torch.randint(0, t, (1,), generator=generator)) if self.rand_cond_frame else 0
        drop_text = drop_image = None
        if self.uncond_prob > 0:
            drop_text, drop_image = cfg_dropout_masks(b, self.uncond_prob, generator, self.device)
        interp_mask = None
        if self.config.interp_fraction > 0 and not self.interp:
            interp_mask = torch.rand(b, generator=generator) < self.config.interp_fraction
        cond = self.conditioning(list(batch["caption"]), video[:, :, cond_index], self.fs_of(batch),
                                 self.vdg_input(z0, cond_index, interp_mask), drop_text, drop_image)
        return self.diffusion_loss(z0, cond, generator)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        generator = self.step_generator()
        loss = self.compute_loss(batch, generator)
        self.micro_step += 1
        self.consumed_samples += batch["video"].shape[0] * self.trainer.world_size
        self.skipped_files += int(batch["skipped"].sum())
        b = batch["video"].shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=b)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False,
                 batch_size=b)
        self.log("data/skipped_files", float(self.skipped_files), on_step=True, on_epoch=False, batch_size=b)
        return loss

    # -------------------------------------------------------------------------------------------------------------
    # Optimizer, EMA
    # -------------------------------------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for n, p in sorted(self.model.named_parameters()) if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay)
        warmup = self.config.warmup_steps
        # linear warm-up over `warmup` optimizer steps, then constant (the released runs use a constant lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:  # right after the step: a checkpoint written at this step holds the updated EMA
            self.ema.update(self.model)

    # -------------------------------------------------------------------------------------------------------------
    # Checkpoints: trainable weights only, plus counters, EMA and RNG states
    # -------------------------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = {f"model.{n}" for n in self.trainable}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        np_state = np.random.get_state()
        py_state = random.getstate()
        checkpoint[STATE_KEY] = {
            "micro_step": self.micro_step,
            "consumed_samples": self.consumed_samples,
            "skipped_files": self.skipped_files,
            "world_size": self.trainer.world_size if self._trainer is not None else 1,
            "stage": self.stage.name,
            "trainable": sorted(self.trainable),
            "model_config": _comparable(self.model.config.to_dict()),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                    else [], "python": [py_state[0], list(py_state[1]), py_state[2]],
                    "numpy": [torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                              float(np_state[4])]},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(STATE_KEY)
        if state is None:
            raise CheckpointError("this checkpoint was not written by 'dynamicrafter train' (no training state); pass "
                                  "it as --init to start a new run from its weights")
        if state["stage"] != self.stage.name or set(state["trainable"]) != self.trainable:
            raise CheckpointError(f"the checkpoint trains stage '{state['stage']}' ({len(state['trainable'])} "
                                  f"tensors), this run stage '{self.stage.name}' ({len(self.trainable)}): resume with "
                                  f"the same --stage / --trainable, or start a new run with --init")
        if state["model_config"] != _comparable(self.model.config.to_dict()):
            raise CheckpointError("the checkpoint's model configuration differs from this run's (--config / --init); "
                                  "resume with the run's original options")
        missing = {f"model.{n}" for n in self.trainable} - set(checkpoint["state_dict"])
        if missing:
            raise CheckpointError(f"the checkpoint lacks {len(missing)} trainable tensor(s), first "
                                  f"'{sorted(missing)[0]}'")
        self.micro_step = int(state["micro_step"])
        self.consumed_samples = int(state["consumed_samples"])
        self.skipped_files = int(state["skipped_files"])
        if self.ema is not None:
            if state["ema"] is None:
                raise CheckpointError("the checkpoint has no EMA weights but --ema-decay is set: resume without it")
            self.ema.load_state_dict(state["ema"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
        keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])

    # -------------------------------------------------------------------------------------------------------------
    # Sample videos
    # -------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample_video(self, item: dict[str, Any], steps: int, seed: int = 0) -> torch.Tensor:
        """Animate the first frame of ``item`` (a collated batch of one clip) with its caption: (3, t, H, W).

        DDIM with ``steps`` steps and the model's released guidance settings; the EMA weights when EMA is on.
        """
        was_training = self.training
        self.eval()
        try:
            if self.ema is not None:
                with self.ema.swapped_in(self.model):
                    return self._sample(item, steps, seed)
            return self._sample(item, steps, seed)
        finally:
            self.train(was_training)

    def _sample(self, item: dict[str, Any], steps: int, seed: int) -> torch.Tensor:
        model, d = self.model, self.model.config.defaults
        generator = torch.Generator().manual_seed(seed)
        video = item["video"][:1].to(self.device, torch.float32)  # (1, 3, t, H, W)
        t = video.shape[2]
        z_frames = self.encode_video(video[:, :, [0, t - 1]] if self.interp else video[:, :, :1], generator)
        unet = model.config.unet
        concat = None
        if unet.in_channels != unet.out_channels:
            concat = vdg_latents(z_frames, t, self.interp) if self.stage.vdg else torch.zeros(
                1, unet.out_channels, t, *z_frames.shape[-2:], device=self.device)
        fs = self.fs_of(item)[:1]
        caption = [item["caption"][0]]
        guidance = Guidance(d.guidance_scale, None, d.guidance_rescale)
        keep, drop = torch.tensor([False]), torch.tensor([True])  # conditional branch, unconditional ("" + zeros)
        cond = Conditioning.cat([self.conditioning(caption, video[:, :, 0], fs, concat, dropped, dropped)
                                 for dropped in (keep, drop)[: guidance.num_branches]])

        def network(x: torch.Tensor, tt: torch.Tensor, context: torch.Tensor, fs: torch.Tensor,
                    circular: bool) -> torch.Tensor:
            return model.unet(x, tt, context, fs, use_temporal=self.stage.use_temporal).float()

        denoise = make_denoiser(network, context=cond.context, concat=cond.concat, fs=cond.fs,
                                guidance=guidance, num_frames=t,
                                temporal_length=unet.temporal_length)
        timesteps = sampling_timesteps(steps, d.timestep_spacing, model.schedule.num_timesteps)
        shape = (1, unet.out_channels, t, *video.shape[-2:])
        shape = (*shape[:3], shape[3] // model.vae.downscale, shape[4] // model.vae.downscale)
        z = sample_ddim(denoise, randn(shape, generator, self.device), model.schedule, timesteps, d.eta, generator)
        frames = model.vae.decode(z, 1 if d.perframe_ae else None).float().clamp(-1, 1)
        return frames[0].cpu()  # (3, t, H, W)

    def export(self, path: str) -> None:
        """Write the trained model (EMA weights when EMA is on) for ``DynamiCrafterPipeline.from_checkpoint``; with
        LoRA the adapter file alone (for ``pipe.load_lora``)."""
        from dynamicrafter.checkpoint import save_checkpoint
        from dynamicrafter.lora import adapter_state

        model = self.model
        if self.lora_spec is not None:
            with self.ema.swapped_in(model) if self.ema is not None else contextlib.nullcontext():
                self._save_lora(adapter_state(model), path)
            return
        config = replace(model.config, unet=replace(model.config.unet, gradient_checkpointing=False))
        original = model.config
        model.config = config
        try:
            if self.ema is not None:
                with self.ema.swapped_in(model):
                    save_checkpoint(model, path)
            else:
                save_checkpoint(model, path)
        finally:
            model.config = original

    def export_state(self, state: dict[str, torch.Tensor], path: str) -> None:
        """Export from a gathered full state dict (sharded strategies: the local weights are shards)."""
        from dynamicrafter.checkpoint import save_checkpoint

        if self.lora_spec is not None:  # the gathered adapter factors: model.<module>.lora_A.default.weight
            self._save_lora({k.removeprefix("model.").replace(".default.", "."): v for k, v in state.items()
                             if ".lora_A." in k or ".lora_B." in k}, path)
            return
        copy = _rebuilt_from_state(self.model, state)
        copy.config = replace(copy.config, unet=replace(copy.config.unet, gradient_checkpointing=False))
        save_checkpoint(copy, path)


    def _save_lora(self, state: dict[str, torch.Tensor], path: str) -> None:
        from dynamicrafter.lora import save_adapter

        assert self.lora_spec is not None and self.lora_base is not None
        c = self.config
        training = {"stage": c.stage, "init": c.init, "data": c.data, "steps": int(self.global_step),
                    "max_steps": c.max_steps, "lr": c.lr, "batch_size": c.batch_size, "seed": c.seed,
                    "accumulate_grad_batches": c.accumulate_grad_batches, "num_frames": c.num_frames,
                    "resolution": c.resolution, "precision": c.precision, "ema_decay": c.ema_decay,
                    "gradient_checkpointing": c.gradient_checkpointing, "strategy": c.strategy}
        save_adapter(path, state, self.lora_spec, self.lora_base[0], self.lora_base[1], training)


def _rebuilt_from_state(model: DynamiCrafter, state: dict[str, torch.Tensor]) -> DynamiCrafter:
    from dynamicrafter.checkpoint import build_empty, materialize_buffers

    copy = build_empty(model.config)
    copy.load_state_dict({k.removeprefix("model."): v.detach().cpu() for k, v in state.items()}, strict=True,
                         assign=True)
    materialize_buffers(copy)
    return copy


def _comparable(config: dict[str, Any]) -> str:
    """A model config as JSON, without the fields that may change between a run and its resumption."""
    out = json.loads(json.dumps(config))
    out["unet"].pop("gradient_checkpointing", None)
    return json.dumps(out, sort_keys=True)
