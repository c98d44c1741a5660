"""Installing and exporting model bundles as zips, safely.

An install name is one plain folder name inside the models home; a zip is checked member by
member (no paths outside the bundle, only listed file types, sizes capped while extracting, sha256
verified) and extracted into a temp folder inside the models home, then renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from glioseg.artifacts.bundles import (
    MANIFEST,
    MAX_BUNDLE_BYTES,
    BundleError,
    _safe_relpath,
    declared_sizes,
    read_manifest,
    verify_bundle,
)
from glioseg.utils import one_line

INSTALL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}")


CHUNK_BYTES = 1 << 20


MAX_EXPANSION = 10


MIN_CAP_BYTES = 16 * 1024**2


MAX_MANIFEST_BYTES = 16 * 1024**2


MAX_MEMBERS = 10_000


CAP_RULE = "10x the zip's size, at least 16 MiB, at most 2 GiB"


ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError)


def _check_zip_member(info: zipfile.ZipInfo, zip_path: Path) -> PurePosixPath | None:
    if info.is_dir():
        return None
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise BundleError(f"{zip_path}: member {info.filename!r} is a symbolic link; refused")
    return _safe_relpath(info.filename, str(zip_path))


def check_install_name(name: str, source: str) -> str:
    """Return ``name`` if it is one plain folder name (no separators, ``.``, ``..``, leading dot or NUL).

    Args:
        name: the install name asked for.
        source: where it came from, for the message (``--name`` or the bundle's manifest).

    Raises:
        BundleError: anything else; the message names the fix (``--name``).
    """
    if not INSTALL_NAME.fullmatch(name):
        raise BundleError(f"install name {name!r} from {source} is not a plain folder name (letters, digits, "
                          "'_', '-', '.', '+', not starting with '.', at most 100 characters); pass --name NAME")
    return name


def _manifest_name(manifest: dict[str, Any], zip_path: Path) -> str:
    """The install name a bundle asks for: its manifest's ``name``, else the zip's stem."""
    if "name" not in manifest:
        return check_install_name(zip_path.stem, f"the file name {zip_path.name!r}")
    return check_install_name(str(manifest["name"]), f"the manifest of {zip_path}")


def _install_dest(models_home: Path, name: str) -> Path:
    """``models_home/name``, refused unless it is (or will be) a real folder directly inside the models home."""
    dest = models_home / name
    home = models_home.resolve()
    if dest.is_symlink() or dest.resolve().parent != home:
        raise BundleError(f"{dest}: is a link or resolves outside the models home {home}; "
                          "remove it yourself or pass another --name")
    return dest


def _make_scratch(models_home: Path) -> Path:
    """An empty temporary folder inside the models home (so the final move is a rename on one file system)."""
    try:
        models_home.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".import-", dir=models_home))
    except OSError as exc:
        raise BundleError(f"{models_home}: cannot create or write the models home ({exc.strerror or exc}); "
                          "pass --models-home FOLDER") from exc


def _move_into_place(root: Path, dest: Path, overwrite: bool) -> None:
    """Rename ``root`` to ``dest``; an installed model is first moved aside, put back if the move fails,
    and removed only once the new one is in place."""
    if not (dest.exists() or dest.is_symlink()):
        os.rename(root, dest)
        return
    if not overwrite:
        raise BundleError(f"{dest}: a model named {dest.name!r} is already installed; pass --overwrite or --name")
    aside = Path(tempfile.mkdtemp(prefix=".previous-", dir=dest.parent))
    os.rename(dest, aside / dest.name)
    try:
        os.rename(root, dest)
    except OSError as exc:
        os.rename(aside / dest.name, dest)
        aside.rmdir()
        raise BundleError(f"{dest}: cannot move the new model into place ({exc.strerror or exc}); "
                          "the installed one is unchanged") from exc
    shutil.rmtree(aside)


def import_model(zip_path: Path | str, models_home: Path | str, name: str | None = None,
                 overwrite: bool = False) -> Path:
    """Install a zipped bundle safely into ``models_home/<name>``.

    The install name must be one plain folder name. The zip is checked member by member (no
    absolute paths, no ``..``, no links, only allowed file types, sizes capped while extracting:
    :func:`extraction_cap`), extracted into a temporary folder inside ``models_home``, verified
    (sha256 and sizes against the manifest, safetensors headers, JSON) and only then renamed into
    place; with ``overwrite`` the installed model is moved aside first and removed only once the
    new one is in place. Nothing outside ``models_home`` is ever removed, and a failed import
    leaves nothing behind.

    Args:
        zip_path: the bundle zip (files at its root or under one top folder).
        models_home: folder holding installed models.
        name: install name; the manifest's ``name`` by default.
        overwrite: replace an installed model of the same name.

    Returns:
        The installed bundle folder.

    Raises:
        BundleError: unsafe name, damaged, oversized, unsafe or tampered bundle, the target exists,
            or the install failed; always one line naming the file and the fix.
    """
    zip_path, models_home = Path(zip_path), Path(models_home)
    if name is not None:
        check_install_name(name, "--name")
    with _open_zip(zip_path) as zf:
        scratch = _make_scratch(models_home)
        try:
            return _install(zf, zip_path, (models_home, scratch / "bundle"), name, overwrite)
        except OSError as exc:
            raise BundleError(f"{models_home}: cannot install {zip_path.name} there ({one_line(exc)}); "
                              "free some space, check its permissions or pass --models-home FOLDER") from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _install(zf: zipfile.ZipFile, zip_path: Path, places: tuple[Path, Path], name: str | None,
             overwrite: bool) -> Path:
    """Extract into a temporary folder, verify, and rename into place; returns the install.

    Args:
        places: (the models home, the temporary folder to create inside it).
    """
    models_home, folder = places
    members, cap = _checked_members(zf, zip_path)
    folder.mkdir()
    manifest, room = _extract_manifest(zf, members.pop(MANIFEST), folder, zip_path, cap)
    dest = _install_dest(models_home, name if name is not None else _manifest_name(manifest, zip_path))
    if (dest.exists() or dest.is_symlink()) and not overwrite:  # say so before extracting the weights
        raise BundleError(f"{dest}: a model named {dest.name!r} is already installed; pass --overwrite or --name")
    _extract_listed(zf, members, manifest, folder, zip_path, (room, cap))
    manifest = verify_bundle(folder, label=str(zip_path))
    _check_contents(folder, manifest, zip_path)
    _move_into_place(folder, dest, overwrite)
    return dest


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    """Open a bundle zip; a missing, unreadable or damaged file is a one-line BundleError."""
    fix = "give a bundle zip made by `glioseg export-model`"
    if not zip_path.is_file():
        raise BundleError(f"{zip_path}: {'is a folder' if zip_path.is_dir() else 'no such file'}; {fix}")
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise BundleError(f"{zip_path}: not a zip file, or a damaged one ({one_line(exc)}); {fix}") from exc


def extraction_cap(zip_bytes: int) -> int:
    """Most bytes an import extracts from a zip of ``zip_bytes`` bytes.

    A bundle is mostly float weights, which barely compress, so ten times the zip's size (at least
    16 MiB for small bundles of text, at most :data:`MAX_BUNDLE_BYTES`) is far above any real one.
    """
    return min(MAX_BUNDLE_BYTES, max(MAX_EXPANSION * zip_bytes, MIN_CAP_BYTES))


def _checked_members(zf: zipfile.ZipFile, zip_path: Path) -> tuple[dict[str, zipfile.ZipInfo], int]:
    """The zip's members by bundle-relative name, checked before anything is written, and the size cap.

    Checked: member paths, links, file types, duplicates, and the declared total against
    :func:`extraction_cap`.
    """
    members = _bundle_members(zf, zip_path)
    cap = extraction_cap(zip_path.stat().st_size)
    declared = sum(info.file_size for info in members.values())
    if declared > cap:
        raise BundleError(f"{zip_path}: declares {declared} bytes uncompressed, more than the cap of {cap} "
                          f"({CAP_RULE}); refused (a zip bomb?)")
    return members, cap


def _extract_listed(zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], manifest: dict[str, Any],
                    folder: Path, zip_path: Path, budget: tuple[int, int]) -> None:
    """Extract every member but the manifest, in chunks, each stopped as soon as it passes its
    declared size (the manifest's ``sizes``, else the zip's own) or the running total passes the cap.

    Args:
        budget: (bytes left under the cap, the cap).

    Raises:
        BundleError: a member not listed in the manifest (before anything is written), or one too large.
    """
    listed, sizes = {str(PurePosixPath(n)) for n in manifest["files"]}, declared_sizes(manifest, str(zip_path))
    for name in members:
        if name not in listed:
            raise BundleError(f"{zip_path}: member {name!r} is not listed in the manifest; refused")
    room, cap = budget
    for name, info in members.items():
        size, source = (sizes[name], "the manifest") if name in sizes else (info.file_size, "the zip")
        room -= _extract_member(zf, info, folder / name, zip_path, (size, source), (room, cap))


def _extract_manifest(zf: zipfile.ZipFile, info: zipfile.ZipInfo, folder: Path, zip_path: Path,
                      cap: int) -> tuple[dict[str, Any], int]:
    """Extract and read the manifest; returns it and the bytes left under the cap."""
    if info.file_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{zip_path}: {MANIFEST} is {info.file_size} bytes, more than {MAX_MANIFEST_BYTES}; refused")
    written = _extract_member(zf, info, folder / MANIFEST, zip_path, (info.file_size, "the zip"), (cap, cap))
    return read_manifest(folder, str(zip_path)), cap - written


def _bundle_members(zf: zipfile.ZipFile, zip_path: Path) -> dict[str, zipfile.ZipInfo]:
    """The zip's files by bundle-relative name (one top folder stripped), each checked; the manifest among them."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise BundleError(f"{zip_path}: {len(infos)} members; a bundle has a handful, refused")
    files = [(info, rel) for info in infos if (rel := _check_zip_member(info, zip_path)) is not None]
    prefix = _top_folder([rel for _, rel in files], zip_path)
    members: dict[str, zipfile.ZipInfo] = {}
    for info, rel in files:
        name = str(rel.relative_to(prefix)) if prefix else str(rel)
        if name in members:
            raise BundleError(f"{zip_path}: member {name!r} appears twice; refused")
        members[name] = info
    return members


def _top_folder(names: list[PurePosixPath], zip_path: Path) -> str:
    """``""`` when the manifest is at the zip's root, else the one top folder that holds everything."""
    if PurePosixPath(MANIFEST) in names:
        return ""
    tops = {n.parts[0] for n in names if len(n.parts) > 1}
    top = next(iter(tops), "")
    if len(tops) == 1 and all(len(n.parts) > 1 for n in names) and PurePosixPath(top, MANIFEST) in names:
        return top
    raise BundleError(f"{zip_path}: no {MANIFEST} at the zip's root or in one top folder holding everything")


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, zip_path: Path,
                    declared: tuple[int, str], budget: tuple[int, int]) -> int:
    """Write one member to ``target``, refused unless it is exactly its declared size and fits the cap.

    Args:
        declared: (size, who declares it: "the manifest" or "the zip").
        budget: (bytes left under the cap, the cap).

    Returns:
        The bytes written.
    """
    (size, source), (room, cap) = declared, budget
    target.parent.mkdir(parents=True, exist_ok=True)
    written = _copy_member(zf, info, target, zip_path, min(size, room))
    if written is None and size <= room:
        raise BundleError(f"{zip_path}: member {info.filename!r} decompresses to more than the {size} bytes "
                          f"{source} declares; refused (damaged, or a zip bomb)")
    if written is None:
        raise BundleError(f"{zip_path}: extracting {info.filename!r} passes the cap of {cap} bytes ({CAP_RULE}); "
                          "refused (a zip bomb?)")
    for expected, who in ((size, source), (info.file_size, "the zip")):
        if written != expected:
            raise BundleError(f"{zip_path}: member {info.filename!r} holds {written} bytes but {who} declares "
                              f"{expected}; the zip is damaged, export or download it again")
    return written


def _copy_member(zf: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, zip_path: Path,
                 limit: int) -> int | None:
    """Stream one zip member into ``target`` in chunks; the bytes written, or None once it passes ``limit``."""
    written = 0
    try:
        with zf.open(member) as src, open(target, "wb") as dst:
            while block := src.read(min(CHUNK_BYTES, limit + 1 - written)):
                written += len(block)
                if written > limit:
                    return None
                dst.write(block)
    except ZIP_READ_ERRORS as exc:
        raise BundleError(f"{zip_path}: member {member.filename!r} is damaged ({one_line(exc)}); "
                          "export or download the bundle again") from exc
    except OSError as exc:
        raise BundleError(f"{zip_path}: cannot extract {member.filename!r} into {target.parent} "
                          f"({one_line(exc)}); free some space or pass --models-home FOLDER") from exc
    return written


def _check_contents(root: Path, manifest: dict[str, Any], zip_path: Path) -> None:
    """Refuse listed weights that are not well-formed safetensors and JSON files that do not parse.

    A matching sha256 proves only that the files are the ones the manifest's author listed.
    """
    from glioseg.artifacts.weights import safetensors_problem

    fix = "the bundle is damaged or not made by glioseg; export or download it again"
    for name in manifest["files"]:
        path = root / name
        if name.endswith(".safetensors") and (problem := safetensors_problem(path)):
            raise BundleError(f"{zip_path}: member {name!r} is not a valid safetensors file ({problem}); {fix}")
        if name.endswith(".json"):
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise BundleError(f"{zip_path}: member {name!r} is not valid JSON ({one_line(exc)}); {fix}") from exc


def export_model(bundle_dir: Path | str, zip_path: Path | str) -> Path:
    """Zip a verified bundle folder (files at the zip root), atomically.

    Raises:
        BundleError: the folder does not verify against its manifest.
    """
    from glioseg.utils import atomic_write

    bundle_dir, zip_path = Path(bundle_dir), Path(zip_path)
    if zip_path.is_dir():
        raise BundleError(f"{zip_path}: is a folder; give the path of the .zip file to write")
    manifest = verify_bundle(bundle_dir)

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(bundle_dir / MANIFEST, MANIFEST)
            for name in manifest["files"]:
                zf.write(bundle_dir / name, name)

    return atomic_write(zip_path, write)


