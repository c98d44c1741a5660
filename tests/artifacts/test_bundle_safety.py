"""`import-model` with hostile or careless input: install names, atomic overwrite, corrupt files, zip bombs.

Every refusal is one line (``error: ...``, exit 1), never a traceback, and leaves the models home as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import struct
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from glioseg.artifacts.bundles import BundleError, verify_bundle
from glioseg.artifacts.install import import_model
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
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) < 500, result.output
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


# --- corrupt or fake weights ------------------------------------------------------------------


def _header_only(tensors: dict[str, object], data: bytes) -> bytes:
    header = json.dumps(tensors).encode()
    return struct.pack("<Q", len(header)) + header + data


def _torch_pickle() -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buffer)
    return buffer.getvalue()


FAKE_WEIGHTS = {
    "random_bytes": lambda: random.Random(0).randbytes(4096),
    "empty": lambda: b"",
    "truncated_data": lambda: _weights()[:-4],
    "truncated_header": lambda: _weights()[:20],
    "pickle": lambda: pickle.dumps({"w": [0.0] * 6}),
    "torch_save_renamed": _torch_pickle,
    "header_not_json": lambda: struct.pack("<Q", 5) + b"{{{{{",
    "header_lies_about_sizes": lambda: _header_only({"w": {"dtype": "F32", "shape": [1000],
                                                          "data_offsets": [0, 4000]}}, bytes(24)),
    "shape_does_not_fit_offsets": lambda: _header_only({"w": {"dtype": "F32", "shape": [2],
                                                             "data_offsets": [0, 12]}}, bytes(12)),
}


@pytest.mark.parametrize("kind", sorted(FAKE_WEIGHTS))
def test_import_refuses_fake_safetensors(tmp_path, kind):
    home = tmp_path / "home"
    files = {**_files(), "low/model.safetensors": FAKE_WEIGHTS[kind]()}  # the manifest's sha256 matches
    result = _import(_zip(tmp_path / "b.zip", files), "--models-home", home)
    _assert_one_line_error(result, "model.safetensors")
    assert not home.exists() or not any(home.iterdir())


def test_real_safetensors_pass_the_check(tmp_path):
    from glioseg.artifacts.bundles import default_model_dir
    from glioseg.artifacts.weights import safetensors_problem

    shipped = sorted(default_model_dir().rglob("*.safetensors"))  # one run, or every fold of an ensemble
    assert shipped and all(safetensors_problem(path) is None for path in shipped)
    (tmp_path / "w.safetensors").write_bytes(_weights())
    assert safetensors_problem(tmp_path / "w.safetensors") is None


def _run_dir(tmp_path: Path, weights: bytes) -> Path:
    """The shipped model's (first fold's) config and run.json (no manifest, so no sha256 check) with other weights."""
    import shutil

    from glioseg.artifacts.bundles import default_model_dir
    from glioseg.artifacts.folds import run_folders

    member = run_folders(default_model_dir())[0]  # the bundle itself, or fold_0 of a fold ensemble
    run = tmp_path / "run"
    (run / "low").mkdir(parents=True)
    for name in ("config.yaml", "run.json"):
        shutil.copyfile(member / name, run / name)
    (run / "low" / "model.safetensors").write_bytes(weights)
    return run


@pytest.mark.parametrize("kind", [*sorted(FAKE_WEIGHTS), "weights_of_another_network"])
def test_predict_with_fake_safetensors_is_one_line(make_synthetic_dataset, tmp_path, kind):
    dataset = make_synthetic_dataset(layout="brats2017", n_cases=1)
    weights = _weights() if kind == "weights_of_another_network" else FAKE_WEIGHTS[kind]()
    run = _run_dir(tmp_path, weights)
    result = runner.invoke(app, ["predict", "-i", str(dataset), "-o", str(tmp_path / "out"), "-m", str(run),
                                 "--device", "cpu"])
    _assert_one_line_error(result, str(run / "low" / "model.safetensors"))


# --- corrupt zips -----------------------------------------------------------------------------


def _patch_central_entry(path: Path, member: str, offset: int, value: int) -> Path:
    """Overwrite one 4-byte field of ``member``'s central directory entry (16: CRC, 20: compressed size,
    24: size)."""
    data = bytearray(path.read_bytes())
    entry = struct.unpack_from("<I", data, data.rfind(b"PK\x05\x06") + 16)[0]
    while data[entry:entry + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack_from("<HHH", data, entry + 28)
        if data[entry + 46:entry + 46 + n].decode() == member:
            struct.pack_into("<I", data, entry + offset, value)
            path.write_bytes(bytes(data))
            return path
        entry += 46 + n + m + k
    raise AssertionError(f"{member} not in {path}")


def _flip_member_data(path: Path, member: str) -> Path:
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        start = zf.getinfo(member).header_offset
    n, m = struct.unpack_from("<HH", data, start + 26)
    for i in range(3):
        data[start + 30 + n + m + 10 + i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


WEIGHTS = "low/model.safetensors"
CORRUPT_ZIPS = {
    "bad_crc": lambda p: _patch_central_entry(_zip(p, _files()), WEIGHTS, 16, 0xDEADBEEF),
    "flipped_stored_bytes": lambda p: _flip_member_data(_zip(p, _files(), compression=zipfile.ZIP_STORED), WEIGHTS),
    "flipped_deflated_bytes": lambda p: _flip_member_data(_zip(p, _files()), WEIGHTS),
    "size_smaller_than_data": lambda p: _patch_central_entry(_zip(p, _files()), WEIGHTS, 24, 10),
    "size_larger_than_data": lambda p: _patch_central_entry(_zip(p, _files()), WEIGHTS, 24, 10_000),
    "compressed_size_too_small": lambda p: _patch_central_entry(_zip(p, _files()), WEIGHTS, 20, 5),
    "truncated_zip": lambda p: p.write_bytes(_zip(p, _files()).read_bytes()[:300]) and p,
    "text_file": lambda p: p.write_text("hello") and p,
    "empty_file": lambda p: p.write_bytes(b"") or p,
    "missing_file": lambda p: p,
    "a_folder": lambda p: p.mkdir() or p,
}


@pytest.mark.parametrize("kind", sorted(CORRUPT_ZIPS))
def test_corrupt_zip_is_one_line(tmp_path, kind):
    home = tmp_path / "home"
    result = _import(CORRUPT_ZIPS[kind](tmp_path / "b.zip"), "--models-home", home)
    _assert_one_line_error(result, "b.zip")
    assert not home.exists() or not any(home.iterdir())


@pytest.mark.parametrize("kind", ["not_json", "not_utf8"])
def test_import_refuses_broken_json(tmp_path, kind):
    bad = b"{not json" if kind == "not_json" else b"\xff\xfe{}"
    result = _import(_zip(tmp_path / "b.zip", {**_files(), "run.json": bad}), "--models-home", tmp_path / "home")
    _assert_one_line_error(result, "run.json")


def test_export_to_unusable_path_is_one_line(tmp_path):
    home = tmp_path / "home"
    import_model(_zip(tmp_path / "b.zip", _files()), home)
    (tmp_path / "out").mkdir()
    result = runner.invoke(app, ["export-model", str(home / "demo"), str(tmp_path / "out")])
    _assert_one_line_error(result, "out")


# --- size caps: zip bombs ---------------------------------------------------------------------

MiB = 1024**2


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record how many bytes every read of a zip member returns."""
    counts: list[int] = []
    real_read = zipfile.ZipExtFile.read

    def read(self, n=-1):
        data = real_read(self, n)
        counts.append(len(data))
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", read)
    return counts


def test_member_larger_than_the_manifest_declares_is_stopped_while_extracting(tmp_path, monkeypatch):
    home = tmp_path / "home"
    honest = _files()
    bomb = {**honest, "low/model.safetensors": bytes(12 * MiB)}  # 12 MiB of zeros (under the cap): a ~12 KiB zip
    zip_path = _zip(tmp_path / "b.zip", bomb, described=honest)  # the manifest declares the real weights' size
    reads = _count_reads(monkeypatch)
    result = _import(zip_path, "--models-home", home)
    _assert_one_line_error(result, "low/model.safetensors", "declares")
    assert sum(reads) <= MiB  # stopped right after the declared size, not after 12 MiB
    assert not any(home.iterdir())


@pytest.mark.parametrize("sizes", [True, False], ids=["manifest_sizes", "legacy_manifest"])
def test_bundle_expanding_past_the_cap_is_refused_before_writing(tmp_path, monkeypatch, sizes):
    from glioseg.artifacts.install import extraction_cap

    home = tmp_path / "home"
    zip_path = _zip(tmp_path / "b.zip", {**_files(), "notes.txt": bytes(40 * MiB)}, sizes=sizes)  # honest manifest
    assert zip_path.stat().st_size < MiB and extraction_cap(zip_path.stat().st_size) == 16 * MiB
    reads = _count_reads(monkeypatch)
    result = _import(zip_path, "--models-home", home)
    _assert_one_line_error(result, "cap")
    assert sum(reads) <= MiB
    assert not any(home.iterdir())


def test_absolute_cap(tmp_path, monkeypatch):
    import glioseg.artifacts.install as install

    monkeypatch.setattr(install, "MAX_BUNDLE_BYTES", MiB)
    assert install.extraction_cap(10 * MiB) == MiB
    files = {**_files(), "notes.txt": random.Random(0).randbytes(2 * MiB)}  # incompressible
    result = _import(_zip(tmp_path / "b.zip", files, compression=zipfile.ZIP_STORED), "--models-home", tmp_path / "h")
    _assert_one_line_error(result, "cap")
    assert not any((tmp_path / "h").iterdir())


def test_members_checked_before_extraction(tmp_path, monkeypatch):
    files = _files()
    dup = tmp_path / "dup.zip"
    with zipfile.ZipFile(dup, "w") as zf:
        zf.writestr("manifest.json", _manifest(files))
        for member, data in files.items():
            zf.writestr(member, data)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("run.json", b'{"evil": 1}')
    unlisted = _zip(tmp_path / "unlisted.zip", {**files, "extra.txt": b"x"}, described=files)
    reads = _count_reads(monkeypatch)
    _assert_one_line_error(_import(dup, "--models-home", tmp_path / "h"), "run.json", "twice")
    _assert_one_line_error(_import(unlisted, "--models-home", tmp_path / "h"), "extra.txt", "not listed")
    assert sum(reads) < 4096  # at most the manifests were read
    assert not any((tmp_path / "h").iterdir())


def test_bundle_under_one_top_folder_installs(tmp_path):
    files = _files()
    path = tmp_path / "top.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("demo-v2/manifest.json", _manifest(files))
        for member, data in files.items():
            zf.writestr(f"demo-v2/{member}", data)
    installed = import_model(path, tmp_path / "home")
    assert installed == tmp_path / "home" / "demo" and verify_bundle(installed)["name"] == "demo"
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["demo"]


BAD_MANIFESTS = {
    "a_list": b"[]",
    "not_json": b"{oops",
    "no_files": json.dumps({"format": "glioseg-bundle/1", "name": "demo"}).encode(),
    "sizes_not_counts": json.dumps({"format": "glioseg-bundle/1", "name": "demo", "files": {},
                                    "sizes": {"run.json": "big"}}).encode(),
}


@pytest.mark.parametrize("kind", sorted(BAD_MANIFESTS))
def test_bad_manifest_is_one_line(tmp_path, kind):
    path = tmp_path / "b.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", BAD_MANIFESTS[kind])
    result = _import(path, "--models-home", tmp_path / "home")
    _assert_one_line_error(result, "b.zip", "manifest.json")
    assert not any((tmp_path / "home").iterdir())
