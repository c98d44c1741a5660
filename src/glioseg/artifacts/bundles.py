"""Model bundles: the shipped default model, sha256-verified loading, export and safe import.

A *bundle* is a run directory trimmed to what prediction needs (``config.yaml``, ``run.json``,
``<stage>/model.safetensors``) plus ``manifest.json``::

    {"format": "glioseg-bundle/1", "name": ..., "files": {"low/model.safetensors": "<sha256>", ...},
     "label_scheme": ..., "training": {...}, "validation": {...}, ...}

Every file listed is checked against its sha256 before a model is loaded; a bundle with a file
that is not listed, or a listed file that is missing, is refused. Import accepts only a zip of
such a bundle: no absolute paths, no ``..``, no links, no pickles (safetensors, JSON, YAML, text).
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
    for name, expected in manifest["files"].items():
        rel = _safe_relpath(name, f"{shown}/{MANIFEST}")
        path = bundle / rel
        if not path.is_file():
            raise BundleError(f"{shown}: file {name} listed in the manifest is missing; reinstall the model")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(f"{shown}/{rel}: sha256 {actual[:12]}... does not match the manifest "
                              f"({str(expected)[:12]}...); the file was modified or corrupted, reinstall the model")
    listed = {str(PurePosixPath(n)) for n in manifest["files"]} | {MANIFEST}
    for path in bundle.rglob("*"):
        rel_name = path.relative_to(bundle).as_posix()
        if path.is_file() and rel_name not in listed:
            raise BundleError(f"{shown}/{rel_name}: file not listed in the manifest; remove it or re-export the bundle")
    return manifest


def write_manifest(bundle: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Hash every file of a bundle folder and write its manifest (atomically).

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
    manifest = {"format": BUNDLE_FORMAT, **info, "files": files}
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


def _move_into_place(root: Path, dest: Path, scratch: Path, overwrite: bool) -> None:
    """Rename ``root`` to ``dest``; an installed model is first moved aside into ``scratch`` and put back on failure."""
    previous = None
    if dest.exists() or dest.is_symlink():
        if not overwrite:
            raise BundleError(f"{dest}: a model named {dest.name!r} is already installed; pass --overwrite or --name")
        previous = scratch / "previous"
        os.rename(dest, previous)
    try:
        os.rename(root, dest)
    except OSError as exc:
        if previous is not None:
            os.rename(previous, dest)
        raise BundleError(f"{dest}: cannot move the new model into place ({exc.strerror or exc}); "
                          "the installed one is unchanged") from exc


def import_model(zip_path: Path | str, models_home: Path | str, name: str | None = None,
                 overwrite: bool = False) -> Path:
    """Install a zipped bundle safely into ``models_home/<name>``.

    The install name must be one plain folder name. The zip is checked member by member (no
    absolute paths, no ``..``, no links, only allowed file types, bounded size), extracted into a
    temporary folder inside ``models_home``, verified (sha256 against the manifest, safetensors
    headers, JSON) and only then renamed into place; with ``overwrite`` the installed model is
    moved aside first and removed only once the new one is in place. Nothing outside
    ``models_home`` is ever removed, and a failed import leaves nothing behind.

    Args:
        zip_path: the bundle zip (files at its root or under one top folder).
        models_home: folder holding installed models.
        name: install name; the manifest's ``name`` by default.
        overwrite: replace an installed model of the same name.

    Returns:
        The installed bundle folder.

    Raises:
        BundleError: unsafe name, damaged, unsafe or tampered bundle, the target exists, or the
            install failed; always one line naming the file and the fix.
    """
    zip_path, models_home = Path(zip_path), Path(models_home)
    if name is not None:
        check_install_name(name, "--name")
    with _open_zip(zip_path) as zf:
        scratch = _make_scratch(models_home)
        try:
            root = _extract_checked(zf, zip_path, scratch / "bundle")
            manifest = verify_bundle(root, label=str(zip_path))
            _check_contents(root, manifest, zip_path)
            dest = _install_dest(models_home, name if name is not None else _manifest_name(manifest, zip_path))
            _move_into_place(root, dest, scratch, overwrite)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
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


def _extract_checked(zf: zipfile.ZipFile, zip_path: Path, folder: Path) -> Path:
    """Extract a zip into ``folder`` after checking every member (paths, links, types, total size).

    Returns:
        The bundle's root inside ``folder`` (the zip's root or its one top folder).
    """
    members = [(m, _check_zip_member(m, zip_path)) for m in zf.infolist()]
    if sum(m.file_size for m, _ in members) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{zip_path}: uncompressed size exceeds {MAX_BUNDLE_BYTES} bytes; refused")
    folder.mkdir()
    for member, rel in members:
        if rel is not None:
            target = folder.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            written = _copy_member(zf, member, target, zip_path)
            if written != member.file_size:
                raise BundleError(f"{zip_path}: member {member.filename!r} holds {written} bytes but the zip "
                                  f"declares {member.file_size}; the zip is damaged, export or download it again")
    return _bundle_root(folder, zip_path)


def _copy_member(zf: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, zip_path: Path) -> int:
    """Stream one zip member into ``target`` in chunks; returns the bytes written."""
    written = 0
    try:
        with zf.open(member) as src, open(target, "wb") as dst:
            while block := src.read(CHUNK_BYTES):
                written += len(block)
                dst.write(block)
    except ZIP_READ_ERRORS as exc:
        raise BundleError(f"{zip_path}: member {member.filename!r} is damaged ({_one_line(exc)}); "
                          "export or download the bundle again") from exc
    except OSError as exc:
        raise BundleError(f"{zip_path}: cannot extract {member.filename!r} into {target.parent} "
                          f"({_one_line(exc)}); free some space or pass --models-home FOLDER") from exc
    return written


def _bundle_root(folder: Path, zip_path: Path) -> Path:
    if (folder / MANIFEST).is_file():
        return folder
    subdirs = [p for p in folder.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / MANIFEST).is_file():
        return subdirs[0]
    raise BundleError(f"{zip_path}: no {MANIFEST} at the zip's root or in one top folder")


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
