"""`import-model` with hostile or careless input: install names, atomic overwrite, corrupt files, zip bombs.

Every refusal is one line (``error: ...``, exit 1), never a traceback, and leaves the models home as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from glioseg.artifacts.bundles import BundleError, import_model, verify_bundle
from glioseg.cli import app

runner = CliRunner()


def _weights() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"w": torch.arange(6, dtype=torch.float32)}, metadata={"stage": "low"})


def _files() -> dict[str, bytes]:
    return {"config.yaml": b"a: 1\n", "run.json": b'{"stages": ["low"]}', "low/model.safetensors": _weights()}


def _manifest(files: dict[str, bytes], name: str = "demo", sizes: bool = True) -> bytes:
    manifest: dict[str, object] = {"format": "glioseg-bundle/1", "name": name,
                                   "files": {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}}
    if sizes:
        manifest["sizes"] = {k: len(v) for k, v in files.items()}
    return json.dumps(manifest).encode()


def _zip(path: Path, files: dict[str, bytes], name: str = "demo", sizes: bool = True,
         described: dict[str, bytes] | None = None, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A bundle zip holding ``files``; its manifest describes ``described`` (default: ``files``)."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.writestr("manifest.json", _manifest(files if described is None else described, name, sizes))
        for member, data in files.items():
            zf.writestr(member, data)
    return path


def _import(*args: object) -> Result:
    return runner.invoke(app, ["import-model", *map(str, args)])


def _assert_one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.exception, result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- install names and the destination --------------------------------------------------------


def test_dotdot_name_with_overwrite_touches_nothing_outside(tmp_path):
    outer = tmp_path / "outer"
    home = outer / "home"
    (home / "other").mkdir(parents=True)
    (home / "other" / "kept.txt").write_text("keep")
    (outer / "precious.txt").write_text("keep")
    zip_path = _zip(tmp_path / "b.zip", _files())
    result = _import(zip_path, "--models-home", home, "--name", "..", "--overwrite")
    _assert_one_line_error(result, "install name", "--name")
    assert (outer / "precious.txt").read_text() == "keep"
    assert sorted(p.name for p in home.iterdir()) == ["other"]
    assert (home / "other" / "kept.txt").read_text() == "keep"


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "a\\b", "../x", ".hidden", "nul\0byte", "/abs", "a/../.."])
def test_bad_install_names_refused(tmp_path, name):
    home = tmp_path / "home"
    home.mkdir()
    result = _import(_zip(tmp_path / "b.zip", _files()), "--models-home", home, "--name", name, "--overwrite")
    _assert_one_line_error(result, "install name")
    assert not any(home.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.zip", "home"]


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../../x", ""])
def test_bad_manifest_names_refused(tmp_path, name):
    home = tmp_path / "home"
    home.mkdir()
    result = _import(_zip(tmp_path / "b.zip", _files(), name=name), "--models-home", home, "--overwrite")
    _assert_one_line_error(result, "install name", "--name")
    assert not any(home.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.zip", "home"]


def test_install_that_links_outside_the_home_is_not_replaced(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.txt").write_text("keep")
    home = tmp_path / "home"
    home.mkdir()
    (home / "demo").symlink_to(elsewhere, target_is_directory=True)
    result = _import(_zip(tmp_path / "b.zip", _files()), "--models-home", home, "--overwrite")
    _assert_one_line_error(result, "demo")
    assert (home / "demo").is_symlink() and (elsewhere / "data.txt").read_text() == "keep"
    assert [p.name for p in home.iterdir()] == ["demo"]


def test_overwrite_replaces_and_leaves_no_temp_folder(tmp_path):
    home = tmp_path / "home"
    import_model(_zip(tmp_path / "v1.zip", _files()), home)
    v2 = _zip(tmp_path / "v2.zip", {**_files(), "config.yaml": b"a: 2\n"})
    result = _import(v2, "--models-home", home, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (home / "demo" / "config.yaml").read_bytes() == b"a: 2\n"
    assert [p.name for p in home.iterdir()] == ["demo"]


def test_overwrite_keeps_the_old_install_when_the_move_fails(tmp_path, monkeypatch):
    home = tmp_path / "home"
    import_model(_zip(tmp_path / "v1.zip", _files()), home)
    before = verify_bundle(home / "demo")
    v2 = _zip(tmp_path / "v2.zip", {**_files(), "config.yaml": b"a: 2\n"})
    real_rename, calls = os.rename, []

    def rename_failing_once(src, dst, *args, **kwargs):  # the move of the new bundle into place fails
        if Path(dst) == home / "demo" and not calls:
            calls.append(src)
            raise OSError(28, "No space left on device")
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename_failing_once)
    with pytest.raises(BundleError, match="demo"):
        import_model(v2, home, overwrite=True)
    assert calls and verify_bundle(home / "demo") == before
    assert (home / "demo" / "config.yaml").read_bytes() == b"a: 1\n"
    assert [p.name for p in home.iterdir()] == ["demo"]
