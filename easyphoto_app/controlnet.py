"""Structure control for portraits: ControlNet canny keeps the template's outlines where the face is repainted,
so higher strengths still follow the template's pose and features.

The weights download once, and only when the user turns it on (Settings, or `portrait --controlnet`), through the
same hub code as the base model; the edges come from OpenCV, so no annotator model is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from easyphoto_app import hub  # by module: the tests point hub_unreachable and download_hub_model elsewhere
from easyphoto_app.errors import UserError
from easyphoto_app.families import of_pipeline, sd15
from easyphoto_app.loaded_model import LoadedModel

CANNY_REPO = "lllyasviel/control_v11p_sd15_canny"
CANNY_ABOUT = (
    "ControlNet 1.1 canny for SD1.5 (lllyasviel/control_v11p_sd15_canny, OpenRAIL licence): a one-off "
    "download of 723 MB on an NVIDIA GPU (fp16), 1.45 GB otherwise"
)


def canny_edges(rgb: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """White outlines on black, as 3 channels (what the canny ControlNet was trained on)."""
    import cv2

    edges = cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), low, high)
    return np.repeat(edges[..., None], 3, axis=2)


def cached_controlnet(repo_id: str = CANNY_REPO) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(config, str):
        return None
    folder = Path(config).parent
    return folder if any(folder.glob("*.safetensors")) else None


def ensure_controlnet(device: str, repo_id: str = CANNY_REPO) -> Path:
    """The ControlNet's folder: from the cache, or downloaded now (once); offline and absent -> a clear refusal."""
    folder = cached_controlnet(repo_id)
    if folder is not None:
        return folder
    offline = hub.hub_unreachable(repo_id)
    try:
        if not offline:
            return hub.download_hub_model(
                repo_id, want_fp16=device == "cuda", index="config.json", what="a ControlNet repository"
            )[0]
    except hub.HubUnreachable as exc:
        offline = str(exc)
    raise UserError(
        f"Structure control needs {repo_id}, which is not downloaded yet, and the Hugging Face Hub cannot "
        f"be reached ({offline}). Connect once to download it, or turn structure control off."
    )


def control_pipeline(loaded: LoadedModel, folder: Path):
    """The ControlNet inpainting pipeline over the loaded components (one per loaded model and ControlNet)."""
    from diffusers import ControlNetModel, StableDiffusionControlNetInpaintPipeline

    pipe = loaded.pipe
    if of_pipeline(pipe) is not sd15:
        raise UserError(
            f"Structure control uses an SD 1.5 ControlNet ({CANNY_REPO}), which does not fit "
            f"{of_pipeline(pipe).LABEL}: turn structure control off for this model."
        )

    def make():
        fp16_only = not any(f for f in folder.glob("*.safetensors") if ".fp16." not in f.name)
        net = ControlNetModel.from_pretrained(
            folder, torch_dtype=pipe.unet.dtype, use_safetensors=True, variant="fp16" if fp16_only else None
        ).to(pipe.device)
        return StableDiffusionControlNetInpaintPipeline.from_pipe(pipe, controlnet=net)

    return loaded.derived(("control", folder), make)
