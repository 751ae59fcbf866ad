"""The address-text template: the paper's addresses carry the neighbourhood.

``apply_address_template`` renames sub-street pieces with ``partition.address_template`` (e.g.
"{sub_street}, {district}") at build time, keeping the plain name where the map has no district.
Renaming the pieces themselves means training text, candidates and QA answers all use one rule.
"""

from __future__ import annotations

import numpy as np

from data_gen.partition import SubStreet

__all__ = ["apply_address_template"]


def apply_address_template(pieces: list[SubStreet], assigned: np.ndarray, template: str) -> np.ndarray:
    """Rename pieces in place by ``template``; returns the per-image names renamed alike."""
    if template == "{sub_street}":
        return np.asarray(assigned, dtype=object)
    rename = {}
    for p in pieces:
        new = template.format(sub_street=p.name, district=p.district) if p.district else p.name
        rename[p.name] = new
        p.name = new
    if len(set(rename.values())) != len(rename):
        raise ValueError(f"partition.address_template {template!r} maps two sub-streets to one address")
    return np.array([rename.get(n, n) for n in assigned], dtype=object)
