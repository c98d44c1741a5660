"""Shared fixtures: small seeded synthetic datasets and the optional real BraTS 2018 cases.

Session-scoped datasets are shared between tests: treat them as read-only (copy them into
``tmp_path`` before changing anything).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from glioseg.data.synthetic import default_affine, write_synthetic_dataset

SHARED_BRATS18 = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats18"


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BraTS 2017-2021 layout folder: 3 cases of 48^3, 1 mm LPS affine with an offset origin,
    labels 0/1/2/4. Read-only."""
    root = tmp_path_factory.mktemp("synthetic_brats2017")
    write_synthetic_dataset(root, 3, layout="brats2017", shape=(48, 48, 48), seed=0,
                            affine=default_affine((48, 48, 48)))
    return root


@pytest.fixture(scope="session")
def make_synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``make_synthetic_dataset(layout="msd", n_cases=2, shape=(32, 32, 32), **kw)``
    -> dataset root, written once per distinct arguments in the session. Read-only.

    Keyword arguments are those of :func:`glioseg.data.synthetic.write_synthetic_dataset`.
    """
    cache: dict[str, Path] = {}

    def make(layout: str = "brats2017", n_cases: int = 2, shape: tuple[int, int, int] = (32, 32, 32),
             seed: int = 0, **kwargs: object) -> Path:
        key = repr((layout, n_cases, tuple(shape), seed,
                    sorted((k, np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
                           for k, v in kwargs.items())))
        if key not in cache:
            root = tmp_path_factory.mktemp(f"synthetic_{layout}")
            write_synthetic_dataset(root, n_cases, layout=layout, shape=shape, seed=seed, **kwargs)
            cache[key] = root
        return cache[key]

    return make


@pytest.fixture(scope="session")
def shared_brats18() -> Path:
    """The 24 real BraTS 2018 cases in ../shared/data/brats18, or skip when absent."""
    if not SHARED_BRATS18.is_dir() or not any(SHARED_BRATS18.iterdir()):
        pytest.skip(f"real data not found at {SHARED_BRATS18}")
    return SHARED_BRATS18


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the network-backend tests (tests/interop) out of a session that runs other tests.

    OpenVINO's runtime does not survive sharing one pytest process with the rest of the suite:
    after a few hundred other tests (threads, forked DataLoader workers, spawned gloo processes,
    the tuned allocator), running OpenVINO models there ends the process with a segmentation
    fault (OpenVINO 2026.4, torch 2.13), and once OpenVINO has run, a later DDP test does too.
    ``make test`` therefore runs tests/interop in its own pytest process; a session that collects
    both is told so and runs the others.
    """
    interop = Path(__file__).parent / "interop"
    backend = [item for item in items if Path(str(item.path)).is_relative_to(interop)]
    if not backend or len(backend) == len(items):
        return
    config.hook.pytest_deselected(items=backend)
    items[:] = [item for item in items if item not in backend]
    config.stash[_DESELECTED_INTEROP] = len(backend)


_DESELECTED_INTEROP = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say where the deselected backend tests went."""
    count = config.stash.get(_DESELECTED_INTEROP, 0)
    if count:
        terminalreporter.write_line(f"{count} tests/interop tests deselected: they run in their own process "
                                    "(`python -m pytest tests/interop`, as `make test` does)")


@pytest.fixture()
def one_line_error() -> Callable[..., str]:
    """``check(result, *words)``: a CLI result failed cleanly, exit 1 and one ``error:`` line on stderr
    naming every word; returns that line."""

    def check(result: Any, *words: str) -> str:
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        for word in words:
            assert word in lines[0], (word, lines[0])
        return lines[0]

    return check
