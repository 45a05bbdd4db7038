import json
import re
import zipfile

import numpy as np
import pytest
import torch
from conftest import run_cli

from easyphoto_app.generate import parse_lora_tags


@pytest.mark.parametrize(
    "prompt, text, tags",
    [
        ("a photo <lora:anna:0.8>", "a photo", [("anna", 0.8)]),
        ("<lora:anna> portrait, <lora: ddpo_anna : 1.2 >", "portrait", [("anna", 1.0), ("ddpo_anna", 1.2)]),
        ("no tags here", "no tags here", []),
        ("x <LORA:b-2:.5>", "x", [("b-2", 0.5)]),
        ("<lora:anna:0.8>, Xmas portrait of X ,", "Xmas portrait of X", [("anna", 0.8)]),
    ],
)
def test_prompt_lora_tags_are_parsed(prompt, text, tags):
    assert parse_lora_tags(prompt) == (text, tags)


def test_generate_with_both_loras_writes_parameters_and_export_zip(rl_copy):
    from PIL import Image

    rl_home = rl_copy
    earlier = len(
        list((rl_home / "outputs" / "astro").rglob("*.png"))
    )  # other tests may have added images to rl_home first
    r = run_cli(
        rl_home, "generate", "--user", "astro", "--num", "2", "--seed", "7", "--num-inference-steps", "4", "--json"
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["seeds"] == [7, 8] and len(out["paths"]) == 2
    for path, seed in zip(out["paths"], [7, 8]):  # every image carries its own seed
        params = Image.open(path).text["parameters"]
        assert "<lora:astro:1>" in params and "<lora:ddpo_astro:1>" in params
        assert "Steps: 4," in params and f"Seed: {seed}," in params and 'Lora hashes: "astro: ' in params

    r = run_cli(rl_home, "export", "--user", "astro")
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(r.stdout.strip()) as z:
        names = z.namelist()
        manifest = json.loads(z.read("manifest.json"))
    assert sum(n.endswith(".png") for n in names) == earlier + 2 and "manifest.csv" in names
    assert all(not n.startswith(("/", "..")) for n in names)
    assert {m["file"] for m in manifest["images"]} <= set(names)


def test_stacked_adapters_match_merged_weights(rl_home):
    """Two adapters with weights (w1, w2) give the image that the fused weights give."""
    from easyphoto_app.generate import LoraChoice
    from easyphoto_app.loaded_model import LoadedModel
    from easyphoto_app.model_loading import load_pipeline, resolve_model

    loras = [
        LoraChoice("astro", rl_home / "loras" / "astro.safetensors", 0.7),
        LoraChoice("ddpo_astro", rl_home / "loras" / "ddpo_astro.safetensors", 1.3),
    ]

    def run(pipe):
        return (
            pipe(
                "easyphoto_face",
                num_inference_steps=3,
                output_type="latent",
                generator=torch.Generator().manual_seed(1),
            )
            .images[0]
            .numpy()
        )

    model = resolve_model("demo", rl_home)
    pipe = load_pipeline(model, "cpu")
    base = run(pipe)
    pipe.load_lora_weights(str(loras[0].path), adapter_name="a")
    pipe.load_lora_weights(str(loras[1].path), adapter_name="b")
    pipe.set_adapters(["a", "b"], adapter_weights=[0.7, 1.3])
    stacked = run(pipe)  # two live adapters, unfused
    pipe.unload_lora_weights()
    assert np.abs(run(pipe) - base).max() < 1e-5

    loaded = LoadedModel(pipe, model)
    loaded.use_loras(loras)  # the app's path: loaded once, weighted, fused
    fused = run(pipe)
    assert np.abs(stacked - fused).max() < 1e-4
    assert np.abs(stacked - base).max() > 1e-3
    # only a weight changed (the face LoRA's: the RL LoRA of this short run on noise has not moved): re-fused
    loaded.use_loras([LoraChoice("astro", loras[0].path, 0.3), loras[1]])
    reweighted = run(pipe)
    pipe.unfuse_lora()
    pipe.set_adapters(["ep_astro", "ep_ddpo_astro"], adapter_weights=[0.3, 1.3])
    assert np.abs(run(pipe) - reweighted).max() < 1e-4 and np.abs(reweighted - fused).max() > 1e-3
    pipe.fuse_lora(adapter_names=["ep_astro", "ep_ddpo_astro"])  # fused again, as the LoadedModel left it
    loaded.use_loras([loras[0]])  # a changed set unfuses first: back to the face LoRA alone
    loaded.use_loras([])
    assert np.abs(run(pipe) - base).max() < 1e-4


def test_generate_and_compare_endpoints_stack_both_loras(rl_home):
    """Through the running app (gradio_client): both LoRAs in the PNG info, and Compare's pairs."""
    from conftest import running_app
    from gradio_client import Client
    from PIL import Image

    from easyphoto_app.generate import caption, read_likeness

    with running_app(rl_home) as url:
        client = Client(url, verbose=False)
        common = ("studio", "", "", 0.8, 1.2, 1, 11, 3, 7.0, 512, 512, "DDIM")
        gallery, info = client.predict("astro", True, *common, api_name="/generate")
        params = Image.open(gallery[0]["image"]).text["parameters"]
        assert "<lora:astro:0.8>" in params and "<lora:ddpo_astro:1.2>" in params and "Seed: 11" in params
        assert read_likeness(params)[0] and gallery[0]["caption"] == caption(params, "seed 11")  # as written
        pairs, info = client.predict("astro", *common, api_name="/compare")
        captions = [item["caption"] for item in pairs]
        assert (
            len(pairs) == 2
            and captions[0].startswith("face LoRA · seed 11")
            and captions[1].startswith("face + RL · seed 11")
        )
        assert all("likeness" in c for c in captions)
        assert captions[1] == caption(Image.open(pairs[1]["image"]).text["parameters"], "face + RL", "seed 11")
        assert "<lora:ddpo_astro" not in Image.open(pairs[0]["image"]).text["parameters"]
        assert "<lora:ddpo_astro:1.2>" in Image.open(pairs[1]["image"]).text["parameters"]


# ----------------------------------------------------------------------------- in-process, on the demo pipeline


@pytest.mark.slow
def test_generate_saves_one_image_per_seed_with_its_parameters_at_the_size_asked(demo_pipe, tmp_path):
    from PIL import Image

    from easyphoto_app import generate as g
    from easyphoto_app.settings import GenerateConfig
    from easyphoto_app.workspace import Workspace

    loaded = demo_pipe
    steps = []
    cfg = GenerateConfig(
        prompt="a portrait",
        num=2,
        seed=11,
        num_inference_steps=2,
        width=64,
        height=80,
        scheduler="DDIM",
        guidance_scale=3.5,
    )
    result = g.generate(loaded, Workspace(tmp_path), cfg, progress=lambda s, t: steps.append((s, t)))
    assert result.seeds == [11, 12] and steps == [(1, 4), (2, 4), (3, 4), (4, 4)] and result.seconds > 0
    assert all(p.parent.parent == tmp_path / "outputs" / "_base" for p in result.paths)
    assert [re.fullmatch(r"\d{6}-(\d+)\.png", p.name).group(1) for p in result.paths] == ["11", "12"]  # time-seed
    assert result.note is None
    for path, params, seed in zip(result.paths, result.parameters, [11, 12]):
        with Image.open(path) as im:
            assert im.size == (64, 80) and im.text["parameters"] == params
        assert params.startswith("a portrait\nNegative prompt: lowres,") and f"Seed: {seed}, Size: 64x80," in params
        assert "Steps: 2, Sampler: DDIM, CFG scale: 3.5," in params
    again = g.generate(loaded, Workspace(tmp_path), cfg, out_folder=tmp_path / "again")
    with Image.open(result.paths[1]) as a, Image.open(again.paths[1]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))  # a seed gives its image again
    with pytest.raises(g.UserError, match="multiples of 8 \\(got 60x80\\)"):
        g.generate(loaded, Workspace(tmp_path), g.with_overrides(cfg, width=60, height=None))
    long = g.generate(loaded, Workspace(tmp_path), g.with_overrides(cfg, prompt="portrait " * 90, seed=-1, num=1))
    assert long.note.startswith("The prompt is 92 tokens; the model reads the first 77")
    assert 0 <= long.seeds[0] < 2**31  # -1: a random seed, saved with the image


def test_stop_ends_generation_after_the_current_image_is_interrupted(demo_pipe, tmp_path):
    from easyphoto_app import generate as g
    from easyphoto_app.settings import GenerateConfig
    from easyphoto_app.workspace import Workspace

    loaded = demo_pipe
    seen = []
    stop = lambda: len(seen) >= 1  # noqa: E731 - asked during the first image's first step
    cfg = GenerateConfig(prompt="x", num=3, seed=1, num_inference_steps=4, width=64, height=64)
    result = g.generate(loaded, Workspace(tmp_path), cfg, progress=lambda s, t: seen.append(s), should_stop=stop)
    assert result.paths == [] and seen == [1]  # nothing half-made is saved


def test_out_of_memory_becomes_a_refusal_that_says_what_to_lower(demo_pipe, monkeypatch, tmp_path):
    from easyphoto_app import generate as g
    from easyphoto_app.settings import GenerateConfig
    from easyphoto_app.workspace import Workspace

    loaded = demo_pipe

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(loaded.pipe.unet, "forward", oom)
    with pytest.raises(g.UserError) as refused:
        g.generate(loaded, Workspace(tmp_path), GenerateConfig(prompt="x", num_inference_steps=2, width=64, height=64))
    assert str(refused.value) == (
        "Out of memory. Lower the image size, the number of images or the steps, or close "
        "other programs using the GPU, then try again."
    )


@pytest.mark.parametrize(
    "name, kind, karras",
    [
        ("DPM++ 2M Karras", "DPMSolverMultistepScheduler", True),
        ("Euler a", "EulerAncestralDiscreteScheduler", None),
        ("DDIM", "DDIMScheduler", None),
    ],
)
def test_each_sampler_name_sets_its_scheduler_with_the_models_schedule(demo_pipe, name, kind, karras):
    from easyphoto_app import generate as g

    pipe = demo_pipe.pipe
    g.set_scheduler(pipe, name)
    s = pipe.scheduler
    assert type(s).__name__ == kind and s.config.beta_schedule == "scaled_linear" and s.config.beta_end == 0.012
    if karras:  # (the others take no such option; from_config carries unknown keys along unused)
        assert s.config.use_karras_sigmas is True and s.config.algorithm_type == "dpmsolver++"
    with pytest.raises(g.UserError, match="Unknown sampler 'Heun'; choose one of: DPM\\+\\+ 2M Karras, Euler a, DDIM."):
        g.set_scheduler(pipe, "Heun")


def test_dpm_2m_karras_is_the_2m_solver_whatever_dpm_variant_the_model_ships_with(demo_pipe):
    from diffusers import DPMSolverMultistepScheduler

    from easyphoto_app import generate as g

    pipe = demo_pipe.pipe
    shipped = pipe.scheduler
    try:
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(shipped.config, algorithm_type="sde-dpmsolver++")
        g.set_scheduler(pipe, "DPM++ 2M Karras")
        assert pipe.scheduler.config.algorithm_type == "dpmsolver++" and pipe.scheduler.config.use_karras_sigmas
    finally:
        pipe.scheduler = shipped


def test_compare_runs_the_same_seeds_without_and_with_the_rl_lora_and_scores_each(rl_copy, demo_pipe, monkeypatch):
    from easyphoto_app.faces.likeness import Score
    from easyphoto_app.generate import compare
    from easyphoto_app.settings import GenerateConfig
    from easyphoto_app.workspace import Workspace

    class Scorer:
        def score(self, image):
            return Score(image.size[0] / 100, 0.0, 1, 0, "")  # the image's width, to see it was read

    monkeypatch.setattr("easyphoto_app.faces.likeness.scorer_or_none", lambda ws, user: Scorer())
    loaded = demo_pipe
    seen = []
    cfg = GenerateConfig(
        prompt="a portrait <lora:ddpo_astro:0.4> by a lake",
        num=2,
        num_inference_steps=2,
        seed=-1,
        width=64,
        height=64,
        scheduler="DDIM",
    )
    result = compare(loaded, Workspace(rl_copy), cfg, "astro", progress=lambda s, t: seen.append((s, t)))
    assert result.face_only.seeds == result.stacked.seeds and len(set(result.face_only.seeds)) == 2
    assert result.face_scores == result.stacked_scores == [0.64, 0.64]
    assert seen == [(s, 8) for s in range(1, 9)]
    # the prompt's words, without its tags: Compare chooses the LoRAs of each half
    assert all(
        p.startswith("a portrait by a lake <lora:astro:1> <lora:ddpo_astro:1>\n") for p in result.stacked.parameters
    )
    assert all(p.startswith("a portrait by a lake <lora:astro:1>\n") for p in result.face_only.parameters)
    zero = compare(
        loaded, Workspace(rl_copy), GenerateConfig(num=1, num_inference_steps=1, seed=0, width=64, height=64), "astro"
    )
    assert zero.face_only.seeds == zero.stacked.seeds == [0]  # seed 0 is a seed, not "random"


def test_a_png_never_overwrites_one_of_the_same_second_and_seed(tmp_path):
    from PIL import Image

    from easyphoto_app.generate import save_png

    image = Image.new("RGB", (8, 8), "red")
    paths = [save_png(image, tmp_path / "new" / "day", "120000-7", f"text {i}") for i in range(3)]
    assert [p.name for p in paths] == ["120000-7.png", "120000-7-1.png", "120000-7-2.png"]
    assert [Image.open(p).text["parameters"] for p in paths] == ["text 0", "text 1", "text 2"]
    assert sorted(p.name for p in (tmp_path / "new" / "day").iterdir()) == sorted(p.name for p in paths)  # no temp


def test_overrides_and_captions():
    from easyphoto_app.generate import likeness_caption, with_overrides
    from easyphoto_app.settings import GenerateConfig

    base = GenerateConfig(num_inference_steps=30, seed=4)
    assert with_overrides(base, num_inference_steps=10, seed=None, prompt="") == GenerateConfig(
        num_inference_steps=10, seed=4, prompt=""
    )
    assert (likeness_caption(None), likeness_caption(0.456), likeness_caption(1.0)) == (
        "likeness: no face found",
        "likeness 0.46",
        "likeness 1.00",
    )


def test_the_loras_chosen_are_the_prompts_tags_else_the_users_face_and_rl_loras_with_their_weights(tmp_path):
    from easyphoto_app.generate import LoraChoice, UserError, choose_loras
    from easyphoto_app.settings import GenerateConfig
    from easyphoto_app.workspace import Workspace

    ws = Workspace(tmp_path)
    cfg = GenerateConfig(lora_weight=0.8, rl_weight=0.6)
    with pytest.raises(UserError, match="^Unknown LoRA ann in the prompt; available: none yet \\(train one first\\).$"):
        choose_loras(ws, None, [("ann", 1.0)], cfg, True)
    assert choose_loras(ws, None, [], cfg, True) == []  # the base model alone
    with pytest.raises(UserError, match="^User 'ann' has no face LoRA yet.*identity strength above 0 draws without"):
        choose_loras(ws, "ann", [], cfg, True)
    face, rl = ws.face_lora("ann"), ws.ddpo_lora("ann")
    face.parent.mkdir(parents=True)
    face.write_bytes(b"")
    assert choose_loras(ws, "ann", [], cfg, True) == [LoraChoice("ann", face, 0.8)]
    rl.write_bytes(b"")
    assert choose_loras(ws, "ann", [], cfg, True) == [LoraChoice("ann", face, 0.8), LoraChoice("ddpo_ann", rl, 0.6)]
    assert choose_loras(ws, "ann", [], cfg, False) == [LoraChoice("ann", face, 0.8)]
    assert choose_loras(ws, "bo", [("ddpo_ann", 1.2)], cfg, True) == [LoraChoice("ddpo_ann", rl, 1.2)]  # tags win
    with pytest.raises(UserError, match="^Unknown LoRA x, y in the prompt; available: ann, ddpo_ann.$"):
        choose_loras(ws, "ann", [("x", 1), ("ann", 1), ("y", 1)], cfg, True)


def test_png_parameters_are_a1111s_lines_with_every_lora_and_its_hash(tmp_path):
    import hashlib

    from safetensors.torch import save_file

    from easyphoto_app import __version__
    from easyphoto_app.generate import LoraChoice, png_parameters
    from easyphoto_app.model_loading import ResolvedModel
    from easyphoto_app.settings import GenerateConfig

    paths = []
    for name, value in (("ann", 1.0), ("ddpo_ann", 2.0)):
        paths.append(tmp_path / f"{name}.safetensors")
        save_file({"w": torch.full((4,), value)}, str(paths[-1]), metadata={"name": name})
    data_hash = [
        hashlib.sha256(p.read_bytes()[8 + int.from_bytes(p.read_bytes()[:8], "little") :]).hexdigest()[:12]
        for p in paths
    ]
    checkpoint = tmp_path / "photon_v1.safetensors"
    save_file({"x": torch.zeros(2)}, str(checkpoint))
    model = ResolvedModel("file", str(checkpoint), checkpoint)
    loras = [LoraChoice("ann", paths[0], 0.8), LoraChoice("ddpo_ann", paths[1], 1.25)]
    cfg = GenerateConfig(negative_prompt="blurry", num_inference_steps=20, guidance_scale=6.5)
    text = png_parameters("a portrait", loras, cfg, 5, 512, 768, model, ("Denoising strength: 0.45",))
    assert text == (
        "a portrait <lora:ann:0.8> <lora:ddpo_ann:1.25>\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 5, Size: 512x768, "
        f"Model hash: {hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:10]}, Model: photon_v1, RNG: CPU, "
        f'Lora hashes: "ann: {data_hash[0]}, ddpo_ann: {data_hash[1]}", Denoising strength: 0.45, '
        f"Version: EasyPhoto {__version__}"
    )
    plain = png_parameters("x", [], GenerateConfig(scheduler="Euler a", negative_prompt=""), 1, 64, 64, model)
    assert "Sampler: Euler a, CFG scale: 7," in plain and "Schedule type" not in plain and "Lora hashes" not in plain


def test_a_seed_asked_for_is_kept_and_only_a_negative_one_is_drawn_at_random(monkeypatch):
    from easyphoto_app import generate as g

    monkeypatch.setattr(g.random, "randrange", lambda n: n - 1)
    assert [g.pick_seed(s) for s in (0, 7, -1, -5)] == [0, 7, 2**31 - 1, 2**31 - 1]
