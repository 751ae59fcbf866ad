"""The data contract between stages (shared/DESIGN.md), in one place.

A dataset is a folder::

    images/            image files (paths in the manifest are relative to the folder)
    manifest.parquet   one row per image, columns MANIFEST_COLUMNS (readable by `datasets`)
    addresses.json     candidate address vocabulary per level + per-sub-street geometry info
    network.geojson    the road network + sub-street pieces (lon/lat), for maps and web views
    stats.json         build report (kept / dropped and why, class counts)

Every later stage reads datasets only through :func:`read_manifest` / :func:`read_addresses`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from llava_address.common.io import atomic_path, atomic_write_json, read_json

__all__ = [
    "MANIFEST_COLUMNS", "SPLITS", "MANIFEST_FILE", "ADDRESSES_FILE", "STATS_FILE", "NETWORK_FILE",
    "join_caption_address", "AddressVocabulary", "read_manifest", "read_addresses", "write_manifest",
    "write_addresses", "load_hf_dataset",
]

MANIFEST_FILE = "manifest.parquet"
ADDRESSES_FILE = "addresses.json"
STATS_FILE = "stats.json"
NETWORK_FILE = "network.geojson"
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS: dict[str, str] = {
    "image": "string",            # path relative to the dataset folder
    "lat": "float64",
    "lon": "float64",
    "street": "string",           # "Main St"
    "sub_street": "string",       # "Main St between 1st Ave and 2nd Ave"
    "district": "string",         # "" when the map has none
    "caption": "string",          # scene caption (SynthCity) or BLIP caption
    "split": "string",            # train / val / test, spatially disjoint along each street
    "geocode_confidence": "float64",  # share of votes for the winning street, in (0, 1]
}


def join_caption_address(caption: str, address: str) -> str:
    """THE documented rule joining a caption to an address for the image-semantic loss.

    "{caption}, at {address}" — e.g. "a street with red brick houses and trees, at Main St
    between 1st Ave and 2nd Ave". A trailing period in the caption is dropped first.
    """
    caption = caption.strip().rstrip(".")
    if not caption:
        return address
    return f"{caption}, at {address}"


@dataclass
class AddressVocabulary:
    """Candidate addresses per level plus what each sub-street is (street, district, geometry).

    ``sub_street_info[name]`` = {"street": str, "district": str, "midpoint": [lat, lon],
    "length_m": float, "from": str|None, "to": str|None}.
    """

    sub_street: list[str]
    street: list[str]
    district: list[str]
    sub_street_info: dict[str, dict[str, Any]] = field(default_factory=dict)

    def street_of(self, sub_street: str) -> str:
        try:
            return self.sub_street_info[sub_street]["street"]
        except KeyError:
            raise KeyError(f"unknown sub-street address: {sub_street!r}") from None

    def midpoint(self, sub_street: str) -> tuple[float, float]:
        info = self.sub_street_info.get(sub_street)
        if info is None:
            raise KeyError(f"unknown sub-street address: {sub_street!r}")
        lat, lon = info["midpoint"]
        return float(lat), float(lon)

    def to_json(self) -> dict[str, Any]:
        return {"sub_street": self.sub_street, "street": self.street, "district": self.district,
                "sub_street_info": self.sub_street_info}


def read_addresses(dataset_dir: str | Path) -> AddressVocabulary:
    data = read_json(Path(dataset_dir) / ADDRESSES_FILE)
    missing = {"sub_street", "street", "district"} - set(data)
    if missing:
        raise ValueError(f"{dataset_dir}/{ADDRESSES_FILE}: missing keys {sorted(missing)}")
    return AddressVocabulary(list(data["sub_street"]), list(data["street"]), list(data["district"]),
                             dict(data.get("sub_street_info", {})))


def write_addresses(dataset_dir: str | Path, vocab: AddressVocabulary) -> None:
    atomic_write_json(Path(dataset_dir) / ADDRESSES_FILE, vocab.to_json())


def _check_columns(df: pd.DataFrame, where: str) -> None:
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: manifest lacks columns {missing}")
    bad = set(df["split"].unique()) - set(SPLITS)
    if bad:
        raise ValueError(f"{where}: unknown split values {sorted(bad)}")


def read_manifest(dataset_dir: str | Path, split: str | None = None) -> pd.DataFrame:
    """Read the manifest (optionally one split); image paths stay relative to ``dataset_dir``."""
    path = Path(dataset_dir) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"not a llava-address dataset (no {MANIFEST_FILE}): {dataset_dir}")
    df = pd.read_parquet(path)
    _check_columns(df, str(path))
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        df = df[df["split"] == split].reset_index(drop=True)
    return df


def write_manifest(dataset_dir: str | Path, df: pd.DataFrame) -> None:
    """Validate and write the manifest atomically (temp file + rename)."""
    _check_columns(df, "write_manifest")
    df = df.astype({k: v for k, v in MANIFEST_COLUMNS.items()})
    with atomic_path(Path(dataset_dir) / MANIFEST_FILE) as tmp:
        df.to_parquet(tmp, index=False)


def load_hf_dataset(dataset_dir: str | Path, split: str | None = None):
    """The manifest as a `datasets.Dataset` (image column = absolute path)."""
    import datasets

    df = read_manifest(dataset_dir, split)
    df = df.assign(image=[str(Path(dataset_dir) / p) for p in df["image"]])
    return datasets.Dataset.from_pandas(df, preserve_index=False)
