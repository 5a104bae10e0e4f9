"""Models shipped inside installed Python packages: found with `importlib.util.find_spec`
(nothing is imported), and a model split across several packages joined into one file."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from moltis_desktop.modelstore.catalog import PackageSource, Wording

JOIN_CHUNK_BYTES = 4 * 1024 * 1024


def package_path(package: str, inner: str) -> Path | None:
    """`inner` inside an installed package, if both exist; the package is not imported."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / inner
        if candidate.exists():
            return candidate
    return None


def find_parts(source: PackageSource) -> list[Path] | None:
    """Every part's path, in order, when all of the packages are installed; else None."""
    found: list[Path] = []
    for package, inner in source.parts:
        path = package_path(package, inner)
        if path is None:
            return None
        found.append(path)
    return found


def join_parts(
    parts: list[Path],
    target: Path,
    *,
    sha256: str,
    label: str,
    packages: tuple[str, ...],
    wording: Wording,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Concatenate `parts` into `target` (blocking: run it in a thread) and return the
    SHA-256 of the whole. Written to `<target>.part` then renamed; when `sha256` is set and
    differs, nothing is left behind and `wording.checksum` is raised."""
    total = sum(p.stat().st_size for p in parts)
    partial = target.with_name(target.name + ".part")
    os.makedirs(target.parent, exist_ok=True)
    hasher = hashlib.sha256()
    done = 0
    try:
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    while chunk := fh.read(JOIN_CHUNK_BYTES):
                        out.write(chunk)
                        hasher.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    got = hasher.hexdigest()
    if sha256 and got != sha256.lower():
        partial.unlink(missing_ok=True)
        raise wording.checksum(
            f"{label}: checksum mismatch of the joined package parts (expected {sha256}, got "
            f"{got}): a part is damaged or from another version; reinstall "
            f"{' '.join(packages)} (pip install --force-reinstall), or remove them to "
            f"download the model instead ({wording.download_hint(label)})"
        )
    os.replace(partial, target)
    return got
