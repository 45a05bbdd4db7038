"""Base models from the Hugging Face Hub: what to download, the download itself, the cache, and what a failed
download means, in words.

Only one failure falls back to the demo model: no network (model_loading.resolve_model says so). A gated or
private model, an id that does not exist, a full disk and a download cut off are each refused in one line that says
what to do.
"""

from __future__ import annotations

import errno
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from easyphoto_app import families
from easyphoto_app.errors import UserError
from easyphoto_app.workspace import free_bytes, no_space_message

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (bytes downloaded, bytes in all)


class HubUnreachable(Exception):
    """No network, or the Hub cannot be reached: the one download failure the demo model stands in for."""


def human_size(n: int) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB"


def _pick_hub_files(files: list[str], want_fp16: bool) -> list[str]:
    """Config files plus one safetensors file per component folder, or of a one-model repo's top level (a
    ControlNet): the fp16 variant when wanted and present."""
    skip = ("safety_checker/", "feature_extractor/")
    keep = [f for f in files if f.endswith((".json", ".txt")) and not f.startswith(skip)]
    weights = [f for f in files if f.endswith(".safetensors") and not f.startswith(skip)]
    by_folder: dict[str, list[str]] = {}
    for f in weights:
        by_folder.setdefault(f.rpartition("/")[0], []).append(f)
    for group in by_folder.values():
        fp16 = [f for f in group if ".fp16." in f]
        plain = [f for f in group if ".fp16." not in f and ".non_ema." not in f and ".ema." not in f]
        keep += fp16 if (want_fp16 and fp16) or not plain else plain
    return sorted(set(keep))


def download_hub_model(
    repo_id: str,
    want_fp16: bool,
    index: str = "model_index.json",
    what: str = "a diffusers model repository",
    progress: Progress | None = None,
) -> tuple[Path, int]:
    """Download (or resume) only what the pipeline (or one model, with index="config.json") needs; returns the
    snapshot folder and its size. huggingface_hub's progress bars show on the console and, through track_tqdm,
    in the UI; `progress` hears the bytes too (a job reports them as events). A failure raises UserError, or
    HubUnreachable when there is no network."""
    return _download(repo_id, lambda: _chosen_files(repo_id, want_fp16, index, what), progress)


def download_hub_files(repo_id: str, files: list[str], progress: Progress | None = None) -> tuple[Path, int]:
    """Exactly these files of a repository (an adapter and its image encoder), as download_hub_model downloads."""

    def chosen():
        sizes = _repo_sizes(repo_id)
        missing = [f for f in files if f not in sizes]
        if missing:
            raise UserError(f"{repo_id} has no {', '.join(missing)}: the repository changed; update EasyPhoto.")
        return list(files), sizes

    return _download(repo_id, chosen, progress)


def _download(repo_id: str, choose, progress: Progress | None) -> tuple[Path, int]:
    """choose() -> (files, sizes of the repository's files); then the space check, the download, the failures."""
    total = 0
    try:
        chosen, sizes = choose()
        total = sum(sizes[f] for f in chosen)
        need = total - _cached_bytes(repo_id)
        if need > free_bytes(hub_cache()):
            raise UserError(_no_space(repo_id, need))
        log.warning(
            "Downloading %s: %s in %d files (once; it stays in the Hugging Face cache).",
            repo_id,
            human_size(total),
            len(chosen),
        )
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - sorted below; what is not understood is raised as it was
        raise download_failure(repo_id, exc, total) or exc  # noqa: B904 - the cause is in the message, or it is exc
    try:
        folder = _snapshot(repo_id, chosen, progress and (lambda done: progress(done, total)))
    except Exception as exc:  # noqa: BLE001 - as above, but the connection worked until now
        raise download_failure(repo_id, exc, total, began=True) or exc  # noqa: B904 - as above
    if progress:
        progress(total, total)  # what was cached already (the configs the family check read) never passes the bar
    return folder, total


def _repo_sizes(repo_id: str) -> dict[str, int]:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    return {f.path: f.size for f in HfApi().list_repo_tree(repo_id, recursive=True) if isinstance(f, RepoFile)}


def _chosen_files(repo_id: str, want_fp16: bool, index: str, what: str) -> tuple[list[str], dict[str, int]]:
    """The files to download and the sizes of all the repository's files, after the checks that need no weights."""
    sizes = _repo_sizes(repo_id)
    if index not in sizes:
        raise UserError(f"{repo_id} is not {what} (no {index}).")
    if not any(f.endswith(".safetensors") for f in sizes):
        raise UserError(f"{repo_id} has no .safetensors weights; EasyPhoto never loads pickled weights.")
    pipeline = index == "model_index.json"  # a pipeline's parts are in folders; a single model's files are not
    if pipeline:
        _check_hub_family(repo_id, sizes)
    return _pick_hub_files([f for f in sizes if f == index or ("/" in f) == pipeline], want_fp16), sizes


def _snapshot(repo_id: str, files: list[str], progress: Callable[[int], None] | None) -> Path:
    from huggingface_hub import snapshot_download

    extra = {"tqdm_class": _bytes_bar(progress)} if progress else {}
    return Path(snapshot_download(repo_id, allow_patterns=files, **extra))


def _bytes_bar(progress: Callable[[int], None]):
    """A tqdm class for snapshot_download that also hands the count of its bytes bar to `progress` (the bar's own
    total grows as each file starts; the caller knows the whole)."""
    from tqdm.auto import tqdm

    class BytesBar(tqdm):
        # counted here: a disabled bar (output to a log file, not a terminal) counts nothing itself
        def __init__(self, *args, **kwargs):
            self.bytes_bar, self.arrived = str(kwargs.get("desc")).startswith("Downloading bytes"), 0
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if self.bytes_bar:
                self.arrived += int(n or 0)
                progress(self.arrived)
            return super().update(n)

    return BytesBar


def _check_hub_family(repo_id: str, files) -> None:
    """Refuse a repository of another model family before its weights are downloaded: its model_index.json and UNet
    config (a few kB) say what it is."""
    from huggingface_hub import hf_hub_download

    index = json.loads(Path(hf_hub_download(repo_id, "model_index.json")).read_text())
    unet = None
    if "unet/config.json" in files:
        unet = json.loads(Path(hf_hub_download(repo_id, "unet/config.json")).read_text())
    families.of_index(index, unet, repo_id)


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _repo_cache(repo_id: str) -> Path:
    return hub_cache() / f"models--{repo_id.replace('/', '--')}"


def _cached_bytes(repo_id: str, suffix: str = "") -> int:
    """Bytes of this repository in the cache: all its blobs, or those whose name ends in `suffix` (".incomplete":
    the parts of downloads that were cut off, which huggingface_hub resumes)."""
    blobs = _repo_cache(repo_id) / "blobs"
    return sum(f.stat().st_size for f in blobs.glob(f"*{suffix}") if f.is_file()) if blobs.is_dir() else 0


def _no_space(repo_id: str, need: int) -> str:
    return no_space_message(
        hub_cache(),
        need,
        f"downloading {repo_id}",
        "Free some space (or set HF_HOME to a folder on a bigger drive) and try again.",
    )


def not_found_message(repo_id: str) -> str:
    return (
        f"{repo_id} was not found on the Hugging Face Hub: check the name. If it is a private model, log in "
        "once with 'hf auth login' (or set HF_TOKEN to an access token) and try again."
    )


def _causes(exc: BaseException):
    """exc and the exceptions it was raised from (huggingface_hub wraps a network error in its own)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def download_failure(repo_id: str, exc: BaseException, total: int, began: bool = False) -> Exception | None:
    """What a failed download means: a UserError saying what to do, HubUnreachable for no network before the
    download `began` (a connection lost after it is a download cut off), or None for a failure this does not
    understand (raised as it is: an internal error with its traceback in the log)."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    causes = list(_causes(exc))
    first = lambda kind: next((c for c in causes if isinstance(c, kind)), None)  # noqa: E731
    if first(GatedRepoError):
        return UserError(
            f"{repo_id} is a gated model: it downloads only for a logged-in account that accepted its "
            f"terms. Open {constants.ENDPOINT}/{repo_id} and accept them, then log in once with "
            "'hf auth login' (or set HF_TOKEN to an access token) and try again."
        )
    if first(RepositoryNotFoundError):
        return UserError(not_found_message(repo_id))
    if any(isinstance(c, OSError) and c.errno == errno.ENOSPC for c in causes):
        return UserError(_no_space(repo_id, max(total - _cached_bytes(repo_id), 0)))
    http = first(HfHubHTTPError)
    if http is not None and http.response is not None:
        return UserError(
            f"The Hugging Face Hub answered '{http.response.status_code} {http.response.reason_phrase}' "
            f"while downloading {repo_id}: try again later."
        )
    network = first((httpx2.TransportError, OfflineModeIsEnabled, ConnectionError))
    if network is not None and began:
        # huggingface_hub retries a broken file from where it broke, five times, then deletes the part; the files
        # that arrived whole stay in its cache, so a new run fetches only the rest
        kept = _cached_bytes(repo_id) - _cached_bytes(repo_id, ".incomplete")
        return UserError(
            f"The download of {repo_id} was cut off: {human_size(kept)} of {human_size(total)} arrived "
            "and is kept. Run the same command again when the connection is back: it downloads only "
            "what is missing."
        )
    if network is not None:
        return HubUnreachable(f"{type(network).__name__}: {network}")
    return None


def hub_unreachable(repo_id: str, timeout: float = 5.0) -> str | None:
    """Why the Hub cannot be reached, or None. One quick request, so an offline start falls back
    to the demo model at once instead of after huggingface_hub's retries (about 25 s)."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    token = get_token()  # a private model's page answers 401 without it
    request = urllib.request.Request(
        f"{constants.ENDPOINT}/api/models/{repo_id}", headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404):
            raise UserError(not_found_message(repo_id)) from None
    except (urllib.error.URLError, OSError) as exc:
        return getattr(exc, "reason", None) and str(exc.reason) or type(exc).__name__
    return None


def cached_hub_model(repo_id: str) -> Path | None:
    """The cached snapshot, if the files the pipeline needs are there. (snapshot_download with
    local_files_only would call a snapshot incomplete because we skip the repo's other weights.)"""
    from huggingface_hub import try_to_load_from_cache

    try:
        index = try_to_load_from_cache(repo_id, "model_index.json")
    except Exception:  # noqa: BLE001 - an invalid id is simply "not cached"
        return None
    if not isinstance(index, str):
        return None
    folder = Path(index).parent
    needed = [
        name
        for name, spec in json.loads(Path(index).read_text()).items()
        if isinstance(spec, list) and name in ("unet", "vae", "text_encoder", "text_encoder_2")
    ]
    return folder if all(any((folder / name).glob("*.safetensors")) for name in needed) else None
