import subprocess
import sys

import pytest

import glioseg

HEAVY = ("torch", "matplotlib", "scipy", "nibabel")


def test_import_of_package_and_cli_stays_light():
    # a fresh interpreter: this test process has imported torch already
    code = ("import sys, glioseg, glioseg.cli; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "", f"`import glioseg, glioseg.cli` imported {done.stdout.strip()}"


def test_public_api_names_resolve():
    assert set(glioseg.__all__) == {"__version__", *glioseg._EXPORTS}
    for name in glioseg.__all__:
        assert getattr(glioseg, name) is not None
    assert glioseg.Predictor.__module__ == "glioseg.inference.predictor"
    assert glioseg.read_case is glioseg.data.nifti.read_case
    assert set(glioseg.__all__) <= set(dir(glioseg))


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        glioseg.not_a_name  # noqa: B018
    from glioseg.data import checks  # submodules still import as usual

    assert checks.__name__ == "glioseg.data.checks"
