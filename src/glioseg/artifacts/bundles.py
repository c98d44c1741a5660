"""Model bundles: the shipped default model, sha256-verified loading, export and safe import.

A *bundle* is a run directory trimmed to what prediction needs (``config.yaml``, ``run.json``,
``<stage>/model.safetensors``) plus ``manifest.json``::

    {"format": "glioseg-bundle/1", "name": ..., "files": {"low/model.safetensors": "<sha256>", ...},
     "sizes": {"low/model.safetensors": <bytes>, ...}, "label_scheme": ..., "training": {...}, ...}

Every file listed is checked against its sha256 (and its size, where declared; older bundles have
no ``sizes``) before a model is loaded; a bundle with a file that is not listed, or a listed file
that is missing, is refused. Import accepts only a zip of such a bundle: no absolute paths, no
``..``, no links, no pickles (safetensors, JSON, YAML, text), sizes capped while extracting, and an
install name that is one plain folder name; it never removes anything outside the models home.
"""

from __future__ import annotations

import hashlib
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

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "glioseg-bundle/1"
ALLOWED_SUFFIXES = (".safetensors", ".json", ".yaml", ".yml", ".txt", ".md", ".csv", ".png")
MAX_BUNDLE_BYTES = 2 * 1024**3
INSTALL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}")
"""An installed model's folder name: one plain path component."""
CHUNK_BYTES = 1 << 20
MAX_EXPANSION = 10
MIN_CAP_BYTES = 16 * 1024**2
MAX_MANIFEST_BYTES = 16 * 1024**2
MAX_MEMBERS = 10_000
CAP_RULE = "10x the zip's size, at least 16 MiB, at most 2 GiB"
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError)
"""What reading a damaged, encrypted or exotic zip member raises (bad CRC, bad stream, unknown method)."""


class BundleError(Exception):
    """A model bundle is missing, tampered with, or unsafe."""


def default_model_dir() -> Path:
    """Folder of the model shipped inside the package (``glioseg/weights/default``)."""
    return Path(__file__).resolve().parents[1] / "weights" / "default"


def default_models_home() -> Path:
    """Where ``glioseg import-model`` installs bundles unless told otherwise."""
    return Path.home() / ".glioseg" / "models"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle: Path, label: str | None = None) -> dict[str, Any]:
    """Load ``manifest.json`` of a bundle.

    Args:
        bundle: bundle folder.
        label: how messages name the bundle (default: its folder).

    Raises:
        BundleError: missing or invalid manifest.
    """
    path, shown = Path(bundle) / MANIFEST, label or str(bundle)
    if not path.is_file():
        raise BundleError(f"{shown}: no {MANIFEST}; this is not a glioseg model bundle")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{shown}/{MANIFEST}: not valid JSON ({_one_line(exc)})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT \
            or not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{shown}/{MANIFEST}: not a {BUNDLE_FORMAT} manifest (needs 'format' and 'files')")
    return manifest


def _safe_relpath(name: str, where: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or name.startswith(("/", "\\")) or ":" in name or "\\" in name:
        raise BundleError(f"{where}: unsafe path {name!r} (absolute or outside the bundle)")
    if rel.suffix not in ALLOWED_SUFFIXES:
        raise BundleError(f"{where}: file type of {name!r} not allowed (only {ALLOWED_SUFFIXES}; no pickles)")
    return rel


def verify_bundle(bundle: Path | str, label: str | None = None) -> dict[str, Any]:
    """Check every file of a bundle against the manifest's sha256.

    Args:
        bundle: bundle folder.
        label: how messages name the bundle (default: its folder; import names the zip instead of
            its temporary folder).

    Returns:
        The manifest.

    Raises:
        BundleError: a file is missing, unlisted, of a forbidden type, or its sha256 differs.
    """
    bundle = Path(bundle)
    shown = label or str(bundle)
    manifest = read_manifest(bundle, label)
    sizes = declared_sizes(manifest, shown)
    for name, expected in manifest["files"].items():
        rel = _safe_relpath(name, f"{shown}/{MANIFEST}")
        _check_listed_file(bundle / rel, f"{shown}/{rel}", str(expected), sizes.get(str(rel)))
    listed = {str(PurePosixPath(n)) for n in manifest["files"]} | {MANIFEST}
    for path in bundle.rglob("*"):
        rel_name = path.relative_to(bundle).as_posix()
        if path.is_file() and rel_name not in listed:
            raise BundleError(f"{shown}/{rel_name}: file not listed in the manifest; remove it or re-export the bundle")
    return manifest


def _check_listed_file(path: Path, shown: str, sha256: str, size: int | None) -> None:
    """One listed file: present, of the declared size (when declared) and with the declared sha256."""
    fix = "the file was modified or corrupted, reinstall the model"
    if not path.is_file():
        raise BundleError(f"{shown}: listed in the manifest but missing; reinstall the model")
    if size is not None and path.stat().st_size != size:
        raise BundleError(f"{shown}: {path.stat().st_size} bytes, the manifest declares {size}; {fix}")
    actual = sha256_file(path)
    if actual != sha256:
        raise BundleError(f"{shown}: sha256 {actual[:12]}... does not match the manifest ({sha256[:12]}...); {fix}")


def declared_sizes(manifest: dict[str, Any], where: str) -> dict[str, int]:
    """The byte size of each file the manifest declares (``sizes``; empty for older bundles).

    Raises:
        BundleError: ``sizes`` is not a map of file names to byte counts.
    """
    sizes = manifest.get("sizes", {})
    if not isinstance(sizes, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                              for v in sizes.values()):
        raise BundleError(f"{where}/{MANIFEST}: 'sizes' must map file names to byte counts; re-export the bundle")
    return {str(PurePosixPath(k)): v for k, v in sizes.items()}


def write_manifest(bundle: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Hash every file of a bundle folder and write its manifest (sha256 and size per file, atomically).

    Args:
        bundle: folder with config.yaml, run.json, stage weights.
        info: extra manifest fields (name, training, validation, ...).

    Returns:
        The manifest written.
    """
    from glioseg.utils import atomic_write

    files = {p.relative_to(bundle).as_posix(): sha256_file(p)
             for p in sorted(bundle.rglob("*")) if p.is_file() and p.name != MANIFEST}
    for name in files:
        _safe_relpath(name, str(bundle))
    sizes = {name: (bundle / name).stat().st_size for name in files}
    manifest = {"format": BUNDLE_FORMAT, **info, "files": files, "sizes": sizes}
    atomic_write(bundle / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    return manifest


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
            raise BundleError(f"{models_home}: cannot install {zip_path.name} there ({_one_line(exc)}); "
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
        raise BundleError(f"{zip_path}: not a zip file, or a damaged one ({_one_line(exc)}); {fix}") from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


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
        raise BundleError(f"{zip_path}: member {member.filename!r} is damaged ({_one_line(exc)}); "
                          "export or download the bundle again") from exc
    except OSError as exc:
        raise BundleError(f"{zip_path}: cannot extract {member.filename!r} into {target.parent} "
                          f"({_one_line(exc)}); free some space or pass --models-home FOLDER") from exc
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
                raise BundleError(f"{zip_path}: member {name!r} is not valid JSON ({_one_line(exc)}); {fix}") from exc


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


def resolve_model(spec: Path | str | None, models_home: Path | str | None = None) -> Path:
    """Find the model folder to use for prediction.

    Args:
        spec: a run directory or bundle folder, the name of an installed model, or None for the
            shipped default model.
        models_home: where installed models live (default :func:`default_models_home`).

    Returns:
        The folder. Bundles are verified when loaded (:func:`glioseg.artifacts.rundir.load_run`).

    Raises:
        BundleError: nothing found.
    """
    if spec is None:
        folder = default_model_dir()
        if not (folder / MANIFEST).is_file():
            raise BundleError(f"no model given (-m) and no default model shipped at {folder}; train one "
                              "with `glioseg train` and pass -m RUN_DIR, or `glioseg import-model ZIP`")
    else:
        folder = Path(spec)
        if not folder.exists():
            home = Path(models_home) if models_home is not None else default_models_home()
            candidate = home / str(spec)
            if not candidate.is_dir():
                raise BundleError(f"model {spec!r}: no such folder, and no installed model of that name in {home}")
            folder = candidate
    return folder


def _strip_local_paths(info: dict[str, Any]) -> dict[str, Any]:
    """run.json without the trainer's machine-local paths (they mean nothing elsewhere)."""
    info = json.loads(json.dumps(info))
    info.pop("preprocessed", None)
    if isinstance(info.get("split"), dict):
        info["split"].pop("splits_file", None)
    return info


def _copy_weights(src: Path, dst: Path, fp16: bool) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from glioseg.utils import atomic_write

    tensors = load_file(str(src))
    with safe_open(str(src), framework="pt") as fh:
        metadata = dict(fh.metadata() or {})
    if fp16:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        metadata["storage"] = "fp16"
    atomic_write(dst, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _copy_run(run_dir: Path, out_dir: Path, run_info: dict[str, Any], stages: list[str], fp16: bool) -> None:
    """Copy what prediction needs from a run: config.yaml, run.json, postprocess.json, best weights."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "config.yaml", out_dir / "config.yaml")
    (out_dir / "run.json").write_text(json.dumps(run_info, indent=1) + "\n")
    for name in stages:
        _copy_weights(run_dir / name / "model.safetensors", out_dir / name / "model.safetensors", fp16)
    if (run_dir / "postprocess.json").is_file():
        shutil.copyfile(run_dir / "postprocess.json", out_dir / "postprocess.json")


def make_bundle(run_dir: Path | str, out_dir: Path | str, info: dict[str, Any], fp16: bool = True,
                stages: list[str] | None = None) -> dict[str, Any]:
    """Turn a run directory into a bundle: config, run.json, postprocess.json, best weights per stage,
    manifest.

    Args:
        run_dir: a finished ``glioseg train`` run directory.
        out_dir: bundle folder to create (must not exist or be empty).
        info: manifest fields (name, training, validation, ...).
        fp16: store weights as float16 (halves the size; loaded back into float32 networks).
        stages: stages to include (default: every stage with ``model.safetensors``).

    Returns:
        The manifest.

    Raises:
        BundleError: no trained stage, or the output folder is not empty.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    for name in ("config.yaml", "run.json"):
        if not (run_dir / name).is_file():
            raise BundleError(f"{run_dir}: {name} missing; give a run directory made by `glioseg train`")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BundleError(f"{out_dir}: exists and is not empty; choose a new folder")
    run_info = json.loads((run_dir / "run.json").read_text())
    names = stages or [s for s in run_info.get("stage_order", []) if (run_dir / s / "model.safetensors").is_file()]
    if not names:
        raise BundleError(f"{run_dir}: no stage has model.safetensors; train first")
    run_info = _strip_local_paths(run_info)
    _copy_run(run_dir, out_dir, run_info, names, fp16)
    fields = {"label_scheme": run_info.get("label_scheme"), "normalisation": run_info.get("normalisation"),
              "stages": {n: run_info.get("stages", {}).get(n, {}) for n in names}, **info}
    return write_manifest(out_dir, fields)
