"""The preprocessed cache under a full disk and bad settings: the batch stops, nothing is half-written."""

from __future__ import annotations

import errno

import pytest

import glioseg.preprocessing.cache as cache
from glioseg.data.layouts import find_cases
from glioseg.preprocessing.cache import is_disk_error, list_preprocessed, preprocess_dataset


@pytest.mark.parametrize("code,stops", [(errno.ENOSPC, True), (errno.EDQUOT, True), (errno.EROFS, True),
                                        (errno.EIO, False)])
def test_disk_errors_are_told_apart(code, stops):
    assert is_disk_error(OSError(code, "x")) is stops
    assert not is_disk_error(ValueError("x"))


def test_full_disk_stops_the_batch(make_synthetic_dataset, tmp_path, monkeypatch):
    cases = find_cases(make_synthetic_dataset(n_cases=3, shape=(24, 24, 24)))
    calls = []
    real_save = cache.save_preprocessed

    def save(pc, root, extra_meta=None):
        calls.append(pc.case_id)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(pc, root, extra_meta)

    monkeypatch.setattr(cache, "save_preprocessed", save)
    with pytest.raises(OSError, match="No space left"):
        preprocess_dataset(cases, tmp_path / "pre")
    assert len(calls) == 2  # the third case was not tried
    assert list_preprocessed(tmp_path / "pre") == [cases[0].case_id]  # complete, and only that one
    assert not [p for p in (tmp_path / "pre").iterdir() if p.name.startswith(".")]  # no temp folders


def test_other_write_errors_fail_only_their_case(make_synthetic_dataset, tmp_path, monkeypatch):
    cases = find_cases(make_synthetic_dataset(n_cases=3, shape=(24, 24, 24)))
    real_save = cache.save_preprocessed

    def save(pc, root, extra_meta=None):
        if pc.case_id == cases[1].case_id:
            raise OSError(errno.EIO, "Input/output error")
        return real_save(pc, root, extra_meta)

    monkeypatch.setattr(cache, "save_preprocessed", save)
    result = preprocess_dataset(cases, tmp_path / "pre")
    assert [r.case_id for r in result.failed] == [cases[1].case_id]
    assert "Input/output error" in (result.failed[0].error or "")
    assert len(list_preprocessed(tmp_path / "pre")) == 2


@pytest.mark.parametrize("spacing", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_spacing_is_refused_before_any_case(spacing, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "preprocess_files", lambda *a, **k: pytest.fail("a case was read"))
    with pytest.raises(ValueError, match="spacing"):
        preprocess_dataset([], tmp_path / "pre", spacing_mm=spacing)
    assert not (tmp_path / "pre").exists()
