"""The face LoRA's adapters: which layers it targets in the UNet and the text encoders, and how it is attached (peft).
Training attaches them to learn, the memory estimate to count them."""

from __future__ import annotations

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
ADAPTER = "face"


def add_lora(model, rank: int, alpha: float, targets: list[str], adapter: str = ADAPTER, init="gaussian") -> list:
    """Attach a LoRA adapter (gaussian-initialised unless `init` says otherwise); return its (fp32) trainable
    parameters.

    peft's own injection, not the model's `add_adapter`: transformers 5.24's wants peft >= 0.22 (docs/design.md,
    pitfall 8) and the text encoder would not train with the pinned peft."""
    import torch
    from diffusers.models.modeling_utils import ModelMixin
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=init, target_modules=targets)
    if isinstance(model, ModelMixin):  # diffusers' UNet: its own add_adapter keeps the bookkeeping diffusers reads
        model.add_adapter(config, adapter_name=adapter)
    else:
        inject_adapter_in_model(config, model, adapter_name=adapter)
    params = [p for n, p in model.named_parameters() if f".{adapter}." in n and "lora_" in n]
    for p in params:
        p.data = p.data.to(torch.float32)
        p.requires_grad_(True)
    return params
