"""``python -m glioseg.cli`` (used by torchrun) runs the ``glioseg`` app."""

from glioseg.cli import app

app()
