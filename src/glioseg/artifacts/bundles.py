"""Model bundles: the shipped default model, sha256-verified loading, export and safe import
(making a bundle from runs, single or a fold ensemble: :mod:`glioseg.artifacts.shipping`).

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
from pathlib import Path, PurePosixPath
from typing import Any

from glioseg.utils import one_line

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "glioseg-bundle/1"
ALLOWED_SUFFIXES = (".safetensors", ".json", ".yaml", ".yml", ".txt", ".md", ".csv", ".png")
MAX_BUNDLE_BYTES = 2 * 1024**3


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
        raise BundleError(f"{shown}/{MANIFEST}: not valid JSON ({one_line(exc)})") from exc
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


def model_identity(folder: Path | str) -> dict[str, Any]:
    """Name and sha256 of a model folder, as prediction manifests and evaluation provenance record it.

    A bundle or export is identified by the sha256 of its ``manifest.json`` (which lists every
    member's sha256); a run directory (or folder of ``fold_<k>`` runs) by the sha256 of its weight
    files' sha256s, sorted by path.

    Args:
        folder: a resolved model folder (:func:`resolve_model`).

    Returns:
        ``{"name", "path", "sha256", "kind"}`` with ``kind`` ``"bundle"`` or ``"run"``.
    """
    folder = Path(folder).resolve()
    manifest = folder / MANIFEST
    if manifest.is_file():
        name = str(json.loads(manifest.read_text()).get("name") or folder.name)
        return {"name": name, "path": str(folder), "sha256": sha256_file(manifest), "kind": "bundle"}
    weights = sorted(p for p in folder.rglob("model.safetensors") if p.is_file())
    digest = hashlib.sha256("".join(f"{p.relative_to(folder)}:{sha256_file(p)}\n" for p in weights).encode())
    return {"name": folder.name, "path": str(folder), "sha256": digest.hexdigest(), "kind": "run"}
