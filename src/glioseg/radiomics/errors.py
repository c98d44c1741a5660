"""The one exception of the radiomics stage."""

from __future__ import annotations


class RadiomicsError(Exception):
    """A feature table, clinical table or fitted model a user gave cannot be used; the message
    names the file (and the case or column) and the fix."""
