"""Provenance of an evaluation: the protocol and its parameters, the label schemes, the model.

:func:`evaluation_provenance` builds the ``summary["provenance"]`` record that ``summary.json``
and the HTML report carry::

    {"protocol": "brats2025", "protocol_parameters": {...},
     "label_schemes": {"ground_truth": {"scheme": ..., "evidence": ...}, "predictions": {...}},
     "ground_truth_form": "brats2017", "model": {...} or None}

``model`` comes from the ``glioseg predict`` manifest of the predictions folder
(``manifest*.jsonl``, :mod:`glioseg.inference.manifest`): the latest ``done`` record of every
evaluated case. It is None when the folder has no manifest (predictions made elsewhere). Each
record's ``model`` (``{"name", "sha256"}``) and ``options`` are collected; a manifest whose records
name no model (written before predict recorded it) gives ``name``/``sha256``/``options`` None and
says so in ``note``; several models over the cases are listed, not merged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from glioseg.evaluation.protocols import Protocol
from glioseg.inference.manifest import MANIFEST_GLOB, ManifestIndex


def evaluation_provenance(protocol: Protocol, schemes: dict[str, dict[str, str | None]], ground_truth_form: str,
                          pred_dir: Path, case_ids: Sequence[str]) -> dict[str, Any]:
    """The provenance record of one evaluation.

    Args:
        protocol: the scoring protocol.
        schemes: ``{"ground_truth": {"scheme", "evidence"}, "predictions": {...}}``.
        ground_truth_form: the layout the ground truths were found in (e.g. ``brats2017``,
            ``labels``, ``nnunet-labels``).
        pred_dir: predictions folder (its manifest, if any, names the model).
        case_ids: the evaluated cases.

    Returns:
        JSON-able dict (see the module docstring).
    """
    return {"protocol": protocol.name, "protocol_parameters": protocol.parameters(), "label_schemes": schemes,
            "ground_truth_form": ground_truth_form, "model": prediction_model(pred_dir, case_ids)}


def prediction_model(pred_dir: Path, case_ids: Sequence[str]) -> dict[str, Any] | None:
    """What the ``glioseg predict`` manifest of ``pred_dir`` says about the model, or None without one.

    Args:
        pred_dir: predictions folder.
        case_ids: the evaluated cases (their latest ``done`` records are read).

    Returns:
        ``{"name", "sha256", "options", "manifest", "runs", "cases_recorded"}`` (plus ``note`` or
        ``models`` when the records name no model or several), or None.
    """
    manifests = sorted(Path(pred_dir).glob(MANIFEST_GLOB))
    if not manifests:
        return None
    index = ManifestIndex(Path(pred_dir))
    index.refresh()
    records = [r for r in (index.latest_done(cid) for cid in case_ids) if r is not None]
    models = _distinct([_model_of(r) for r in records])
    options = _distinct([r.get("options") for r in records if r.get("options") is not None])
    out: dict[str, Any] = {"name": None, "sha256": None, "options": options[0] if len(options) == 1 else None,
                           "manifest": [m.name for m in manifests], "cases_recorded": len(records),
                           "runs": sorted({str(r.get("run")) for r in records if r.get("run") is not None})}
    named = [m for m in models if m.get("name") or m.get("sha256")]
    if len(named) == 1:
        out.update(name=named[0].get("name"), sha256=named[0].get("sha256"))
    elif named:
        out["models"] = named
        out["note"] = f"{len(named)} different models predicted these cases"
    else:
        out["note"] = "the manifest records no model (written by a glioseg predict that did not record it)"
    if len(options) > 1:
        out["options"] = options
    return out


def _model_of(record: dict[str, Any]) -> dict[str, Any]:
    """``{"name", "sha256"}`` of one manifest record (``model`` as a dict or a name)."""
    model = record.get("model")
    if isinstance(model, dict):
        return {"name": model.get("name"), "sha256": model.get("sha256")}
    return {"name": model if isinstance(model, str) else None, "sha256": record.get("model_sha256")}


def _distinct(items: list[Any]) -> list[Any]:
    """Items in first-seen order, duplicates (by JSON text) dropped."""
    seen: dict[str, Any] = {}
    for item in items:
        seen.setdefault(json.dumps(item, sort_keys=True, default=str), item)
    return list(seen.values())
