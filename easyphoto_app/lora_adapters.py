"""The LoRA adapters: which layers the face LoRA targets in the UNet and the text encoders, and how an adapter is
attached (peft), for the face LoRA and the RL LoRA alike. Training attaches them to learn, the memory estimates to
count them."""

from __future__ import annotations

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
ADAPTER = "face"


def add_lora(model, rank: int, alpha: float, targets: list[str], adapter: str = ADAPTER, init="gaussian") -> list:
    """Attach a LoRA adapter (gaussian-initialised unless `init` says otherwise); return its trainable parameters,
    in float32 whatever the model's dtype (the face LoRA's and the RL LoRA's alike).

    A diffusers model (the UNet) takes it through its own `add_adapter`; the text encoders through peft's own
    injection, not transformers' `add_adapter`, which wants peft >= 0.22 (docs/design.md, pitfall 8)."""
    import torch
    from diffusers.models.modeling_utils import ModelMixin
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=init, target_modules=targets)
    if isinstance(model, ModelMixin):  # diffusers' UNet: its own add_adapter keeps the bookkeeping diffusers reads
        model.add_adapter(config, adapter_name=adapter)
    else:
        inject_adapter_in_model(config, model, adapter_name=adapter)
    params = [p for n, p in model.named_parameters() if f".{adapter}." in n and "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    cast_training_params(model, torch.float32)  # what requires grad: the adapter (the rest was frozen before)
    return params
