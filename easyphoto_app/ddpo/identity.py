"""Identity strength in RL (`rl --ip-scale`, off by default): the IP-Adapter conditions sampling and the PPO loss
alike on the user's checked faces, so that the reward sees the person's face from the first epoch."""

from __future__ import annotations

from easyphoto_app import identity_adapter
from easyphoto_app.errors import UserError
from easyphoto_app.loaded_model import LoadedModel


def require_adapter(model, progress) -> None:
    """Before anything runs: the IP-Adapter for this model, downloaded once; the demo model, another family or
    offline without it are refused in one line."""
    if model.is_demo:
        raise UserError(
            "The built-in demo model cannot use identity strength in RL (the IP-Adapter is made for real SD 1.5 "
            "and SDXL models): set --ip-scale 0, or choose a real model in Settings."
        )
    identity_adapter.ensure_adapter(model.family, progress)


def face_embeds(run, pipe):
    """The IP-Adapter loaded into the run's UNet at its scale and the user's faces encoded once ([2 (uncond, cond),
    faces, tokens, width]); only the RL LoRA stays trainable, and the image encoder is dropped after, as RL never
    needs it again."""
    people = {run.user: [run.face_lora]}
    found = identity_adapter.prepare(LoadedModel(pipe, run.model), run.ws, people, run.cfg.ip_scale, True)
    pipe.set_ip_adapter_scale(found[run.user].scale)
    trained = {id(p) for p in run.params}
    for p in pipe.unet.parameters():  # diffusers leaves the adapter's new layers trainable
        if id(p) not in trained:
            p.requires_grad_(False)
    pipe.register_modules(image_encoder=None)
    return found[run.user].embeds.to(run.dtype)
