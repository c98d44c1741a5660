"""Artifacts: run directories (what training writes and inference reads), weights, resume rules and model bundles."""
