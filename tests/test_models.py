"""Which model a spec names and which Hub files a download takes: fast, no network (downloads themselves:
test_download.py, against a local Hub)."""

import json

import pytest
import torch

from easyphoto_app import demo_model, hub, model_loading
from easyphoto_app.device import pick_device
from easyphoto_app.errors import UserError

SD15_REPO = [
    "model_index.json",
    "README.md",
    "v1-5-pruned.safetensors",
    "v1-5-pruned.ckpt",
    "scheduler/scheduler_config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder/model.fp16.safetensors",
    "text_encoder/pytorch_model.bin",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.non_ema.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",  # this folder has the fp16 variant only
    "safety_checker/config.json",
    "safety_checker/model.safetensors",
    "feature_extractor/preprocessor_config.json",
]
CONFIGS = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "tokenizer/merges.txt",
    "tokenizer/vocab.json",
    "unet/config.json",
    "vae/config.json",
]


def test_a_download_takes_the_configs_and_one_weights_file_per_part():
    pipeline = [f for f in SD15_REPO if "/" in f or f == "model_index.json"]  # as download_hub_model passes them
    assert hub._pick_hub_files(pipeline, want_fp16=False) == sorted(
        CONFIGS
        + [
            "text_encoder/model.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.fp16.safetensors",
        ]
    )
    assert hub._pick_hub_files(pipeline, want_fp16=True) == sorted(
        CONFIGS
        + [
            "text_encoder/model.fp16.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/diffusion_pytorch_model.fp16.safetensors",
        ]
    )


def test_a_one_model_repo_takes_its_top_level_weights():
    controlnet = [
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors",
        "diffusion_pytorch_model.bin",
        "images/example.png",
    ]
    assert hub._pick_hub_files(controlnet, want_fp16=False) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert hub._pick_hub_files(controlnet, want_fp16=True) == [
        "config.json",
        "diffusion_pytorch_model.fp16.safetensors",
    ]
    ema_only = ["config.json", "unet/diffusion_pytorch_model.ema.safetensors"]
    assert hub._pick_hub_files(ema_only, want_fp16=False) == ["config.json"]  # never EMA weights by mistake
    plain_only = ["config.json", "unet/diffusion_pytorch_model.safetensors"]
    assert hub._pick_hub_files(plain_only, want_fp16=True) == plain_only  # no fp16 variant: the one there is


@pytest.fixture
def hub_repo(monkeypatch, tmp_path):
    """A Hub repository whose listing is repo["files"] ({path: size}); snapshot_download records what it is asked."""
    import huggingface_hub
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    repo = {"files": {}, "asked": []}

    class Api:
        def list_repo_tree(self, repo_id, recursive):
            assert recursive
            return [
                RepoFolder(path="unet", oid="x"),
                *(RepoFile(path=f, size=n, oid="x") for f, n in repo["files"].items()),
            ]

    def snapshot_download(repo_id, allow_patterns):
        repo["asked"].append((repo_id, allow_patterns))
        return str(tmp_path)

    def hf_hub_download(repo_id, filename):  # the family check reads the index and the UNet's config first
        path = tmp_path / "configs" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(repo["configs"].get(filename, {"_class_name": "StableDiffusionPipeline"})))
        return str(path)

    repo["configs"] = {}
    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return repo


def test_a_download_asks_for_the_chosen_files_only_and_says_how_much_first(hub_repo, tmp_path, caplog):
    hub_repo["files"] = {f: 3 * 2**20 for f in SD15_REPO}
    path, total = hub.download_hub_model("me/sd", want_fp16=True)
    chosen = hub._pick_hub_files([f for f in SD15_REPO if "/" in f or f == "model_index.json"], want_fp16=True)
    assert (path, total, hub_repo["asked"]) == (tmp_path, 3 * 2**20 * len(chosen), [("me/sd", chosen)])
    assert caplog.records[0].getMessage() == (
        f"Downloading me/sd: {3 * len(chosen)}.0 MB in {len(chosen)} files (once; it stays in the Hugging Face cache)."
    )
    hub_repo["files"] = {"config.json": 10, "diffusion_pytorch_model.safetensors": 2**30, "unet/x.safetensors": 5}
    assert hub.download_hub_model("me/net", False, index="config.json")[1] == 2**30 + 10  # a ControlNet: top level


@pytest.mark.parametrize(
    "files, says",
    [
        (
            {"model_index.json": 1, "unet/diffusion_pytorch_model.bin": 5},
            "^me/sd has no .safetensors weights; EasyPhoto never loads pickled weights.$",
        ),
        (
            {"config.json": 1, "unet/diffusion_pytorch_model.safetensors": 5},
            r"^me/sd is not a diffusers model repository \(no model_index.json\).$",
        ),
    ],
)
def test_a_repository_without_what_we_load_is_refused_before_any_download(hub_repo, files, says):
    hub_repo["files"] = files
    with pytest.raises(UserError, match=says):
        hub.download_hub_model("me/sd", want_fp16=False)
    assert hub_repo["asked"] == []


def test_a_repository_of_another_family_is_refused_from_its_configs_before_any_download(hub_repo):
    hub_repo["files"] = {f: 3 * 2**20 for f in SD15_REPO}
    hub_repo["configs"] = {
        "model_index.json": {"_class_name": "StableDiffusionPipeline"},
        "unet/config.json": {"in_channels": 4, "cross_attention_dim": 1024},
    }
    with pytest.raises(UserError, match="^me/sd is a Stable Diffusion 2.x model; EasyPhoto works with"):
        hub.download_hub_model("me/sd", want_fp16=False)
    assert hub_repo["asked"] == []


@pytest.mark.parametrize(
    "spec, path",
    [
        ("./sd15.safetensors", True),
        ("/models/sd", True),
        ("~/sd", True),
        ("C:\\models\\sd", True),
        ("D:", True),
        ("models\\sd", True),
        ("a/b/c", True),
        ("runwayml/stable-diffusion-v1-5", False),
        ("demo", False),
        ("x", False),
    ],
)
def test_a_spec_that_looks_like_a_path_is_never_sent_to_the_hub(spec, path):
    assert model_loading._looks_like_path(spec) is path


@pytest.mark.parametrize(
    "n, text",
    [
        (0, "0.0 MB"),
        (5 * 2**20, "5.0 MB"),
        (2**30 - 2**19, "1023.5 MB"),
        (2**30, "1.00 GB"),
        (int(4.27 * 2**30), "4.27 GB"),
    ],
)
def test_human_sizes(n, text):
    assert hub.human_size(n) == text


def test_a_missing_path_is_one_clear_line_and_a_pickle_is_refused(tmp_path):
    with pytest.raises(UserError, match="^Model path ./nowhere does not exist.$"):
        model_loading.resolve_model("./nowhere", tmp_path)
    ckpt = str(tmp_path / "sd15.CKPT")
    with pytest.raises(UserError) as refused:
        model_loading.resolve_model(ckpt, tmp_path)
    assert str(refused.value) == (
        f"{ckpt} is a pickled checkpoint, which can run arbitrary code when loaded. "
        "Use the .safetensors version of this model instead (most model pages offer one)."
    )
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="neither a diffusers model folder"):
        model_loading.resolve_model(str(tmp_path / "notes.txt"), tmp_path)


SHIPPED = demo_model.FACE_MODEL


def files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def installed_files():
    from easyphoto_app.checkpoints import SD15_CONFIG

    shipped = [n for n in files(SHIPPED) if n != "README.md" and not n.endswith(".png")]
    return sorted(shipped + [f"tokenizer/{n}" for n in files(SD15_CONFIG / "tokenizer")])


def test_the_shipped_face_model_is_safetensors_only_and_fits_in_20_mb():
    names = files(SHIPPED)
    assert not any(n.endswith(model_loading.PICKLE_SUFFIXES) for n in names)
    weights = [n for n in names if n.endswith(".safetensors")]
    assert sorted(n.split("/")[0] for n in weights) == ["text_encoder", "unet", "vae"]
    assert sum((SHIPPED / n).stat().st_size for n in names) <= 20 * 2**20


def test_the_shipped_face_model_is_shaped_like_sd15_small():
    """What the LoRA code relies on: SD1.5's tokenizer and block kinds, 4 latent channels, a text width the UNet
    attends to, and a marker whose resolution is what the autoencoder turns into the UNet's latent size."""
    from diffusers import AutoencoderKL

    config = {
        part: json.loads((SHIPPED / part / "config.json").read_text()) for part in ("unet", "vae", "text_encoder")
    }
    unet, vae, text = config["unet"], config["vae"], config["text_encoder"]
    assert "CrossAttnDownBlock2D" in unet["down_block_types"] and "CrossAttnUpBlock2D" in unet["up_block_types"]
    assert unet["in_channels"] == unet["out_channels"] == vae["latent_channels"] == 4
    assert unet["cross_attention_dim"] == text["hidden_size"]
    assert text["vocab_size"] == 49408 and text["max_position_embeddings"] == 77
    marker = demo_model.demo_marker(SHIPPED)
    assert marker["version"] == demo_model.DEMO_VERSION and marker["resolution"] == marker["train_resolution"]
    model = AutoencoderKL.from_pretrained(SHIPPED / "vae")  # the blocks themselves, not only the config's list
    side = marker["resolution"]
    latents = model.encode(torch.zeros(1, 3, side, side)).latent_dist.mean
    assert latents.shape == (1, 4, unet["sample_size"], unet["sample_size"])
    assert json.loads((SHIPPED / "model_index.json").read_text())["safety_checker"] == [None, None]


def test_its_label_counts_the_photos_and_people_its_sources_name_and_no_held_out_person_is_trained_on():
    sources = json.loads((SHIPPED / "sources.json").read_text())
    build = json.loads((SHIPPED / "build.json").read_text())
    train, held = sources["train"], sources["held_out"]
    assert len(held) >= 3 and all(set(e) >= {"person", "source", "licence"} and e["licence"] for e in train + held)
    assert not {e["person"] for e in held} & {e["person"] for e in train}
    assert build["photos"] == len({e["source"] for e in train})
    label = demo_model.demo_label()
    assert f"trained on {build['photos']} photos of {build['people']} people" in label
    assert label == model_loading.ResolvedModel(demo_model.DEMO, "demo", SHIPPED).label


def test_the_demo_is_installed_whole_and_again_only_for_a_new_version(tmp_path, caplog):
    caplog.set_level("INFO", logger="easyphoto_app.demo_model")
    folder = tmp_path / "models" / "demo"
    assert demo_model.ensure_demo_model(tmp_path) == folder
    assert files(folder) == installed_files() and not (folder.parent / "demo.building").exists()
    (folder / "unet" / "config.json").write_text("{}")  # touched, same version: kept as it is
    demo_model.ensure_demo_model(tmp_path)
    assert (folder / "unet" / "config.json").read_text() == "{}"
    marker = demo_model.demo_marker(folder)
    (folder / "easyphoto_demo.json").write_text(json.dumps({**marker, "version": demo_model.DEMO_VERSION - 1}))
    (folder / "stale.bin").write_bytes(b"an older demo's file")
    demo_model.ensure_demo_model(tmp_path)  # older: installed again, nothing of the old one left
    assert files(folder) == installed_files()
    assert json.loads((folder / "unet" / "config.json").read_text()) == json.loads(
        (SHIPPED / "unet" / "config.json").read_text()
    )
    assert [r.getMessage() for r in caplog.records] == [
        f"Installing the demo model in {folder}"
    ] * 2  # why a start waits


def test_a_missing_face_model_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_model, "FACE_MODEL", tmp_path / "gone")
    with pytest.raises(UserError, match="The built-in face model is missing from .*gone: reinstall EasyPhoto"):
        demo_model.ensure_demo_model(tmp_path)
    assert not (tmp_path / "models" / "demo").exists()


@pytest.mark.parametrize(
    "parts, files, cached",
    [
        (
            ["unet", "vae", "text_encoder"],
            ["unet/a.safetensors", "vae/b.safetensors", "text_encoder/c.safetensors"],
            True,
        ),
        (["unet", "vae", "text_encoder"], ["unet/a.safetensors", "vae/b.safetensors", "text_encoder/c.bin"], False),
        (["unet", "vae", "text_encoder"], ["unet/a.safetensors", "vae/b.safetensors"], False),
        (["unet", "vae"], ["unet/a.fp16.safetensors", "vae/b.safetensors"], True),  # a pipeline without a text encoder
    ],
)
def test_a_cached_hub_model_counts_only_when_each_part_has_safetensors_weights(hub_cache, parts, files, cached):
    from conftest import cache_repo

    snap = cache_repo(hub_cache, "me/sd", ["model_index.json", *files])
    index = {
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", "PNDMScheduler"],
        **{part: ["diffusers", "X"] for part in parts},
    }
    (snap / "model_index.json").write_text(json.dumps(index))
    assert hub.cached_hub_model("me/sd") == (snap if cached else None)
    assert hub.cached_hub_model("me/absent") is None
    assert hub.cached_hub_model("not a repo id!") is None


@pytest.fixture
def two_unets(demo_model_dir, tmp_path):
    """The demo folder with the UNet as plain (float32) and fp16-variant files; the fp16 file holds zeros so it
    is told apart."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "sd"
    shutil.copytree(demo_model_dir, folder)
    plain = folder / "unet" / "diffusion_pytorch_model.safetensors"
    zeros = {k: torch.zeros_like(v, dtype=torch.float16) for k, v in load_file(plain).items()}
    save_file(zeros, folder / "unet" / "diffusion_pytorch_model.fp16.safetensors")
    return folder, plain


def test_fp32_loads_the_plain_weights_and_fp16_the_fp16_variant(two_unets):
    folder, _ = two_unets
    model = model_loading.ResolvedModel("dir", "sd", folder)
    full = model_loading.load_pipeline(model, "cpu", torch.float32)
    half = model_loading.load_pipeline(model, "cpu", torch.float16)
    assert all(p.abs().sum() > 0 for p in full.unet.parameters() if p.dim() > 1)
    assert all(p.abs().sum() == 0 for p in half.unet.parameters()) and half.unet.dtype == torch.float16


def test_a_folder_with_only_fp16_weights_loads_in_any_precision(two_unets):
    folder, plain = two_unets
    plain.unlink()
    pipe = model_loading.load_pipeline(model_loading.ResolvedModel("dir", "sd", folder), "cpu", torch.float32)
    assert pipe.unet.dtype == torch.float32 and all(p.abs().sum() == 0 for p in pipe.unet.parameters())


def test_a_spec_resolves_to_the_folder_file_or_webui_folder_it_names(tmp_path, demo_model_dir):
    m = model_loading.resolve_model(str(demo_model_dir), tmp_path)
    assert (m.kind, m.path, m.label) == ("dir", demo_model_dir.resolve(), f"{demo_model_dir} (dir)")
    webui = tmp_path / "Stable-diffusion"
    webui.mkdir()
    (webui / "dream.safetensors").write_bytes(b"weights")
    m = model_loading.resolve_model(str(webui / "dream.safetensors"), tmp_path)
    assert (m.kind, m.path) == ("file", (webui / "dream.safetensors").resolve())
    m = model_loading.resolve_model(str(webui), tmp_path)  # a WebUI's folder with one checkpoint: that one
    assert (m.kind, m.source, m.path) == (
        "file",
        str(webui / "dream.safetensors"),
        (webui / "dream.safetensors").resolve(),
    )
    (webui / "anime.safetensors").write_bytes(b"weights")
    with pytest.raises(UserError) as two:
        model_loading.resolve_model(str(webui), tmp_path)
    assert str(two.value) == (
        f"{webui} holds 2 checkpoints; choose one: anime.safetensors, dream.safetensors "
        f"(e.g. --model {webui / 'anime.safetensors'})."
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=f"^{empty} holds no .safetensors checkpoint"):
        model_loading.resolve_model(str(empty), tmp_path)


@pytest.mark.parametrize("device, fp16", [("cuda", True), ("cpu", False)])
def test_a_hub_model_not_cached_is_downloaded_in_fp16_only_for_an_nvidia_gpu(tmp_path, monkeypatch, device, fp16):
    asked = []
    monkeypatch.setattr(model_loading, "cached_hub_model", lambda spec: None)
    monkeypatch.setattr(model_loading, "hub_unreachable", lambda spec: None)
    monkeypatch.setattr(
        model_loading,
        "download_hub_model",
        lambda spec, want_fp16, progress: asked.append((spec, want_fp16)) or (tmp_path, 2 * 2**30),
    )
    m = model_loading.resolve_model("me/sd", tmp_path, device=device)
    assert asked == [("me/sd", fp16)]
    assert (m.kind, m.source, m.path, m.note) == ("hub", "me/sd", tmp_path, "Downloaded me/sd (2.00 GB).")
    m = model_loading.resolve_model("me/sd", tmp_path, download=False)
    assert m.is_demo and "me/sd" in m.note and "not downloaded yet" in m.note and len(asked) == 1


def test_the_demo_draws_and_trains_at_its_markers_sizes_and_other_models_keep_the_size_asked(demo_model_dir):
    demo, other = (
        model_loading.ResolvedModel(demo_model.DEMO, "demo", SHIPPED),
        model_loading.ResolvedModel("hub", "me/sd", None),
    )
    side = demo_model.demo_marker(SHIPPED)["resolution"]
    assert demo_model.native_resolution(demo, 512, training=True) == demo_model.native_resolution(demo, 512) == side
    tiny = model_loading.ResolvedModel(
        demo_model.DEMO, "demo", demo_model_dir
    )  # the tests' random model trains smaller
    assert (demo_model.native_resolution(tiny, 512, training=True), demo_model.native_resolution(tiny, 512)) == (
        64,
        128,
    )
    assert (
        demo_model.native_resolution(model_loading.ResolvedModel(demo_model.DEMO, "demo", demo_model_dir.parent), 512)
        == 128
    )
    assert demo_model.native_resolution(other, 768, training=True) == demo_model.native_resolution(other, 768) == 768


def test_a_single_file_checkpoint_is_loaded_by_the_single_file_loader_safetensors_only(tmp_path, monkeypatch):
    class Loaded:
        def set_progress_bar_config(self, **kw):
            self.bar = kw

        def to(self, device):
            self.device = device
            return self

    calls = []
    monkeypatch.setattr(model_loading, "load_single_file", lambda path, **kw: calls.append((path, kw)) or Loaded())
    monkeypatch.setattr(
        model_loading,
        "checkpoint_family",
        lambda path: __import__("easyphoto_app.families.sd15").families.sd15,
    )
    pipe = model_loading.load_pipeline(
        model_loading.ResolvedModel("file", "x", tmp_path / "x.safetensors"), "cpu", torch.float16
    )
    assert calls == [
        (
            tmp_path / "x.safetensors",
            {"dtype": torch.float16, "safety_checker": None, "requires_safety_checker": False, "use_safetensors": True},
        )
    ]
    assert pipe.device == "cpu" and pipe.bar == {"disable": True}


def test_the_demo_schedules_noise_as_sd15_does():
    """Its scheduler is SD1.5's, down to the DDIM sampler RL and generation make of it (no clipping of x0)."""
    from diffusers import DDIMScheduler, PNDMScheduler

    from easyphoto_app.checkpoints import SD15_CONFIG

    demo = PNDMScheduler.from_pretrained(SHIPPED / "scheduler").config
    sd15 = PNDMScheduler.from_pretrained(SD15_CONFIG / "scheduler").config
    assert {k: v for k, v in demo.items() if k != "_diffusers_version"} == {
        k: v for k, v in sd15.items() if k != "_diffusers_version"
    }
    assert sd15["set_alpha_to_one"] is False and sd15["steps_offset"] == 1
    assert DDIMScheduler.from_config(demo).config.clip_sample is False


@pytest.mark.parametrize(
    "cuda, mps, pref, device",
    [
        (True, True, "auto", "cuda"),
        (False, True, "auto", "mps"),
        (False, False, "auto", "cpu"),
        (True, True, "cpu", "cpu"),
        (False, True, "mps", "mps"),
        (True, False, "cuda", "cuda"),
        (False, True, "cuda", "PyTorch sees no CUDA GPU"),
        (True, False, "mps", "no Apple GPU"),
        (True, True, "tpu", "Unknown device 'tpu'"),
    ],
)
def test_auto_prefers_an_nvidia_gpu_then_an_apple_gpu_and_a_device_asked_for_must_be_there(
    monkeypatch, cuda, mps, pref, device
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    if device in ("cuda", "mps", "cpu"):
        assert pick_device(pref) == device
    else:
        with pytest.raises(UserError, match=device):
            pick_device(pref)


@pytest.fixture
def no_hub_model(tmp_path, monkeypatch):
    """'me/sd' is not cached; the demo stands ready in tmp_path/demo."""
    monkeypatch.setattr(model_loading, "cached_hub_model", lambda spec: None)
    monkeypatch.setattr(model_loading, "ensure_demo_model", lambda data_dir: tmp_path / "demo")
    return tmp_path


def test_a_model_out_of_reach_falls_back_to_the_demo_and_says_how_to_get_it(no_hub_model, monkeypatch, caplog):
    monkeypatch.setattr(model_loading, "hub_unreachable", lambda spec: "HF_HUB_OFFLINE is set")
    m = model_loading.resolve_model("me/sd", no_hub_model)
    assert m.is_demo and m.path == no_hub_model / "demo" and m.source == "me/sd"
    assert m.note == (
        "Using the built-in demo model because me/sd is not available: it is not downloaded and the "
        "Hub cannot be reached. Connect to the internet and choose the model "
        "in Settings (or run 'python -m easyphoto_app --model me/sd doctor') to download it once."
    )
    # the reason's details (an errno) go to the log, not onto the page
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("WARNING", m.note + " (HF_HUB_OFFLINE is set)")]


def test_only_a_connection_that_fails_before_the_download_falls_back_to_the_demo(no_hub_model, monkeypatch, caplog):
    failure = {}

    def download(spec, want_fp16, progress):
        raise failure["raise"]

    monkeypatch.setattr(model_loading, "hub_unreachable", lambda spec: None)
    monkeypatch.setattr(model_loading, "download_hub_model", download)
    failure["raise"] = hub.HubUnreachable("ConnectError: [Errno 101] Network is unreachable")
    m = model_loading.resolve_model("me/sd", no_hub_model)
    assert (
        m.is_demo
        and "because me/sd is not available: the connection to the Hub failed before the download began." in m.note
    )
    assert caplog.records[0].getMessage() == m.note + " (ConnectError: [Errno 101] Network is unreachable)"
    failure["raise"] = UserError("me/sd has no .safetensors weights; EasyPhoto never loads pickled weights.")
    with pytest.raises(UserError, match="never loads pickled weights"):  # a refusal is said, not fallen back from
        model_loading.resolve_model("me/sd", no_hub_model)
    failure["raise"] = RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):  # an internal error is not hidden behind the demo either
        model_loading.resolve_model("me/sd", no_hub_model)


def test_the_hub_is_asked_once_briefly_and_only_a_missing_repo_is_refused(monkeypatch):
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    asked, answer = [], {}

    class Response:
        def close(self):
            pass

    def urlopen(url, timeout):
        asked.append((url, timeout))
        if answer.get("raise"):
            raise answer["raise"]
        return Response()

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://hub.test")
    assert hub.hub_unreachable("me/sd") is None
    assert asked[0][0].full_url == "http://hub.test/api/models/me/sd" and 0 < asked[0][1] <= 5  # 5 s at most offline
    for error, why in [
        (urllib.error.URLError("Name or service not known"), "Name or service not known"),
        (TimeoutError("timed out"), "TimeoutError"),
        (urllib.error.HTTPError("u", 503, "Unavailable", {}, None), None),
    ]:  # reachable, busy: the download says
        answer["raise"] = error
        assert hub.hub_unreachable("me/sd") == why
    for code in (401, 404):
        answer["raise"] = urllib.error.HTTPError("u", code, "Not Found", {}, None)
        with pytest.raises(UserError, match="^me/sd was not found on the Hugging Face Hub"):
            hub.hub_unreachable("me/sd")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    n = len(asked)
    assert hub.hub_unreachable("me/sd") == "HF_HUB_OFFLINE is set" and len(asked) == n
