"""DDPO (Black et al. 2023): RL fine-tuning of a second LoRA with a face-likeness reward."""
