"""Artifacts: run directories (what training writes and inference reads) and model bundles."""
