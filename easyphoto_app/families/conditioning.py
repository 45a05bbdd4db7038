"""What a UNet is conditioned on, for a batch: the text encoders' hidden states and, for SDXL, the pooled text
embedding and the size/crop `time_ids`; in RL with identity strength, the IP-Adapter's image embeddings. Training and
RL index, repeat and join it as one tensor, whatever the family."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class Cond:
    hidden: torch.Tensor  # [B, L, D]
    pooled: torch.Tensor | None = None  # [B, P] (SDXL)
    time_ids: torch.Tensor | None = None  # [B, 6] (SDXL)
    image: torch.Tensor | None = None  # [B, faces, tokens, width]: the IP-Adapter's image embeddings (identity_adapter)

    def _map(self, fn) -> Cond:
        return Cond(
            **{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name)) for f in fields(self)}
        )

    def __getitem__(self, idx) -> Cond:
        return self._map(lambda t: t[idx])

    def __len__(self) -> int:
        return self.hidden.shape[0]

    @property
    def dtype(self):
        return self.hidden.dtype

    @property
    def device(self):
        return self.hidden.device

    def repeat_interleave(self, k: int) -> Cond:
        return self._map(lambda t: t.repeat_interleave(k, dim=0))

    def expand(self, n: int) -> Cond:
        """A batch of n from a batch of 1."""
        return self._map(lambda t: t.expand(n, *t.shape[1:]))

    def with_image(self, image: torch.Tensor) -> Cond:
        """This conditioning with the IP-Adapter's embeddings of its faces (a batch of 1 or len(self))."""
        return replace(self, image=image.to(self.device, self.dtype))

    def to(self, *args, **kwargs) -> Cond:
        return self._map(lambda t: t.to(*args, **kwargs))

    @staticmethod
    def cat(conds: list[Cond]) -> Cond:
        import torch

        first = conds[0]
        return Cond(
            **{
                f.name: None if getattr(first, f.name) is None else torch.cat([getattr(c, f.name) for c in conds])
                for f in fields(first)
            }
        )

    def unet_kwargs(self, dtype=None) -> dict:
        """The keyword arguments of a UNet2DConditionModel call, in `dtype` (time_ids stay as they are)."""
        cast = (lambda t: t.to(dtype)) if dtype is not None else (lambda t: t)
        kwargs = {"encoder_hidden_states": cast(self.hidden)}
        if self.pooled is not None:
            kwargs["added_cond_kwargs"] = {"text_embeds": cast(self.pooled), "time_ids": self.time_ids}
        if self.image is not None:  # one IP-Adapter; its scale is the pipeline's (set_ip_adapter_scale)
            kwargs.setdefault("added_cond_kwargs", {})["image_embeds"] = [cast(self.image)]
        return kwargs
