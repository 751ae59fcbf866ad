"""Merge-by-count and the address-text template: the two partition rules the paper adds.

- AddressCLIP merges sub-streets with fewer than 5 images into a neighbour: a candidate seen by a
  handful of photos cannot be learned and only adds confusers. ``merge_by_count`` merges the
  piece with the fewest images (below ``min_images``) into the touching piece of the same street
  that has fewer images (ties: name order), repeatedly; the merged piece spans the outer crossings
  and is named by the partition rule ("S between A and C"). A piece with no touching neighbour
  on its street stays as it is (counted by the caller through the stats' per-sub-street minimum).
- The paper's addresses carry the neighbourhood; ``apply_address_template`` renames pieces with
  ``partition.address_template`` (e.g. "{sub_street}, {district}"), keeping the plain name where
  the map has no district, so training text, candidates and QA answers all use one rule.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import shapely
from shapely.ops import linemerge

from data_gen.partition import SubStreet, _label

__all__ = ["merge_by_count", "apply_address_template"]

_TOUCH_M = 1.0


def _merge(p: SubStreet, q: SubStreet, taken: set[str]) -> SubStreet:
    ends_p, ends_q = {p.from_street, p.to_street} - {None}, {q.from_street, q.to_street} - {None}
    shared = ends_p & ends_q
    outer = sorted((ends_p | ends_q) - shared) or sorted(ends_p | ends_q)
    a, b = (outer + [None, None])[:2]
    name = base = _label(p.street, a, b)
    i = 2
    while name in taken:
        name, i = f"{base} ({i})", i + 1
    geom = linemerge(shapely.union(p.geometry, q.geometry))
    bigger = p if p.length_m >= q.length_m else q
    return SubStreet(name, p.street, a, b, geom, bigger.district)


def merge_by_count(pieces: list[SubStreet], assigned: np.ndarray, min_images: int) -> tuple[list[SubStreet], np.ndarray]:
    """(pieces after merging, per-image sub-street names after merging); ``assigned`` is per image."""
    assigned = np.asarray(assigned, dtype=object)
    if min_images <= 0:
        return pieces, assigned
    counts = Counter(assigned.tolist())
    rename: dict[str, str] = {}
    taken = {p.name for p in pieces}
    by_street: dict[str, list[SubStreet]] = {}
    for p in pieces:
        if counts.get(p.name, 0) > 0:
            by_street.setdefault(p.street, []).append(p)
    out = [p for p in pieces if counts.get(p.name, 0) == 0]
    for street in sorted(by_street):
        group, stuck = by_street[street], set()
        while True:
            small = sorted((p for p in group if counts[p.name] < min_images and p.name not in stuck),
                           key=lambda p: (counts[p.name], p.name))
            if not small:
                break
            p = small[0]
            nbrs = [q for q in group if q is not p and q.geometry.distance(p.geometry) <= _TOUCH_M]
            if not nbrs:
                stuck.add(p.name)
                continue
            q = min(nbrs, key=lambda q: (counts[q.name], q.name))
            m = _merge(p, q, taken)
            taken.add(m.name)
            counts[m.name] = counts.pop(p.name) + counts.pop(q.name)
            for old in (p.name, q.name):
                rename[old] = m.name
            group = [g for g in group if g is not p and g is not q] + [m]
        out.extend(group)

    def final(n: str) -> str:
        while n in rename:
            n = rename[n]
        return n

    return sorted(out, key=lambda p: p.name), np.array([final(n) if n else n for n in assigned], dtype=object)


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
