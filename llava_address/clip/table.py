"""The comparison table: baselines beside zero-shot, address-only, AddressCLIP full and ablations.

Every variant trains from the same base config on the same data, budget and seeds; only loss
switches differ. Each (variant, seed) run writes ``result.json`` and is skipped when it exists,
so an interrupted table resumes. Beside them, on the same images (`llava_address.clip.baselines`):
chance, raw-pixel 1-NN and k-NN, caption-only lookup (computed once, ``baselines.json``) and a
k-NN over the image embeddings of one trained variant (per seed, ``embedding_knn_of``).
Output: ``table.json`` (all runs + mean ± std) and ``table.md``.
"""

from __future__ import annotations

import logging
import re
import statistics
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from pydantic import Field

from llava_address.clip.baselines import MODEL_FREE
from llava_address.common.config import StrictModel, load_config
from llava_address.common.io import atomic_write_json, atomic_write_text, read_json

__all__ = ["Variant", "TableConfig", "run_table", "summarise", "table_markdown", "slug"]

log = logging.getLogger(__name__)
COLUMNS = ("SSA-1", "SSA-5", "SA-1", "SA-5", "mean_error_m", "median_error_m")


class Variant(StrictModel):
    name: str
    overrides: list[str] = Field(default_factory=list, description="--set style overrides of the base config")
    train: bool = Field(True, description="False: evaluate the initial model zero-shot with address prompts")


class TableConfig(StrictModel):
    base_config: str = Field("configs/clip/synthcity_tiny.yaml", description="AddressCLIP config all runs share")
    data: str = "data/synthcity_helsinki"
    output_dir: str = "outputs/clip_table"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    splits: list[str] = Field(default_factory=lambda: ["test", "val"], min_length=1)
    overrides: list[str] = Field(default_factory=list, description="applied to every variant (budget)")
    jobs: int = Field(2, ge=1, description="runs in parallel (one torch thread each)")
    variants: list[Variant] = Field(min_length=1)
    baselines: bool = Field(True, description="add chance, raw-pixel k-NN and caption-only lookup rows")
    embedding_knn_of: str | None = Field(None, description="variant whose trained image embeddings also "
                                         "serve a k-NN (k=10) against the training images")


def slug(name: str) -> str:
    """Folder name for a variant: 'AddressCLIP w/o L_geo' -> 'AddressCLIP_w_o_L_geo'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "variant"


def _run_one(tc: dict[str, Any], variant: dict[str, Any], seed: int) -> dict[str, Any]:
    """One (variant, seed): train (or not) then evaluate every split. Runs in a worker process."""
    import torch

    from data_gen.contract import read_addresses
    from llava_address.clip.checkpoint import candidates_payload
    from llava_address.clip.config import load_clip_config
    from llava_address.clip.evaluate import evaluate_locator
    from llava_address.clip.locator import AddressLocator

    torch.set_num_threads(1)
    out = Path(tc["output_dir"]) / slug(variant["name"]) / f"seed{seed}"
    done = out / "result.json"
    if done.is_file():
        return read_json(done)
    cfg = load_clip_config(tc["base_config"], [*tc["overrides"], *variant["overrides"], f"train.seed={seed}",
                                               "train.torch_threads=1"])
    info: dict[str, Any] = {"variant": variant["name"], "seed": seed}
    if variant["train"]:
        from llava_address.clip.train import train

        run = train(cfg, tc["data"], out)
        loc = AddressLocator.from_pretrained(run["model_dir"])
        info.update(steps=run["step"], images_per_s=run["images_per_s_mean"])
    else:
        from accelerate.utils import set_seed

        from llava_address.clip.model import build_model
        from llava_address.clip.train import text_corpus

        set_seed(seed)
        model = build_model(cfg.model, text_corpus(Path(tc["data"]), cfg.model.prompt))
        loc = AddressLocator(model, candidates_payload(read_addresses(tc["data"]), cfg.model.prompt))
    for split in tc["splits"]:
        info[split], _ = evaluate_locator(loc, tc["data"], split, progress=False)
    if variant["train"] and variant["name"] == tc.get("embedding_knn_of"):
        from llava_address.clip.baselines import embedding_knn

        info["embedding_knn"] = {split: embedding_knn(lambda ims: loc.encode_images(ims).numpy(), tc["data"], split)
                                 for split in tc["splits"]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(done, info)
    return info


def summarise(runs: list[dict[str, Any]], splits: list[str]) -> dict[str, Any]:
    """variant -> split -> metric -> {mean, std, values}."""
    out: dict[str, Any] = {}
    for r in runs:
        for split in splits:
            for k in COLUMNS:
                out.setdefault(r["variant"], {}).setdefault(split, {}).setdefault(k, []).append(r[split][k])
    for v in out.values():
        for split, cols in v.items():
            for k, vals in cols.items():
                cols[k] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                           "values": vals}
    return out


def table_markdown(summary: dict[str, Any], split: str, seeds: list[int], n_images: int | None = None) -> str:
    head = "| variant | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS) + "\n"
    rows = []
    for name, v in summary.items():
        n = len(v[split][COLUMNS[0]]["values"])
        if 1 < len(seeds) != n and not (n == 1 and name in MODEL_FREE):
            name = f"{name} ({n} seed{'s' if n > 1 else ''} only)"
        cells = []
        for k in COLUMNS:
            m, s, one = v[split][k]["mean"], v[split][k]["std"], len(v[split][k]["values"]) == 1
            if "error" in k:
                cells.append(f"{m:.0f}" if one else f"{m:.0f} ± {s:.0f}")
            else:
                cells.append(f"{100 * m:.1f}" if one else f"{100 * m:.1f} ± {100 * s:.1f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    imgs = f", {n_images} images" if n_images else ""
    return (f"#### split: {split} (mean ± std over seeds {seeds}{imgs}; accuracies in %, errors in m; "
            "rows without ± are deterministic baselines)\n\n"
            + head + "\n".join(rows) + "\n")


def embedding_knn_name(variant: str) -> str:
    return f"image-embedding k-NN ({variant}, k=10)"


def _baseline_runs(tc: TableConfig, out: Path) -> list[dict[str, Any]]:
    """Model-free baselines (deterministic: one 'run' each), cached in baselines.json."""
    if not tc.baselines:
        return []
    from llava_address.clip.baselines import run_baselines

    path = out / "baselines.json"
    cached = read_json(path) if path.is_file() else {}
    if cached.get("data") != str(tc.data) or set(cached.get("splits", [])) != set(tc.splits):
        per_split = {sp: run_baselines(tc.data, sp) for sp in tc.splits}
        cached = {"data": str(tc.data), "splits": list(tc.splits), "metrics": per_split}
        atomic_write_json(path, cached)
    names = list(cached["metrics"][tc.splits[0]])
    return [{"variant": n, "seed": None, **{sp: cached["metrics"][sp][n] for sp in tc.splits}} for n in names]


def _embedding_knn_runs(runs: list[dict[str, Any]], of: str | None) -> list[dict[str, Any]]:
    return [{"variant": embedding_knn_name(of), "seed": r["seed"], **r["embedding_knn"]}
            for r in runs if of and r["variant"] == of and "embedding_knn" in r]


def _finished(tc: TableConfig, v: Variant, seed: int) -> bool:
    return (Path(tc.output_dir) / slug(v.name) / f"seed{seed}" / "result.json").is_file()


def run_table(config: str | Path, overrides: list[str] = (), seeds: list[int] | None = None,
              finished_only: bool = False) -> dict[str, Any]:
    """Train/evaluate every (variant, seed) and write the table. ``finished_only``: train nothing,
    tabulate the runs that already finished (rows name their seed count when it is short)."""
    tc = load_config(config, TableConfig, overrides)
    if seeds:
        tc.seeds = list(seeds)
    out = Path(tc.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # variant-major in config order: list the variants that matter most first, so an interrupted
    # table has all seeds of those (finished runs are reused by the next call)
    jobs = [(v.model_dump(), s) for v in tc.variants for s in tc.seeds
            if not finished_only or not v.train or _finished(tc, v, s)]
    if not jobs:
        raise ValueError(f"no finished runs under {out}")
    tcd = tc.model_dump()
    if tc.jobs == 1:
        runs = [_run_one(tcd, v, s) for v, s in jobs]
    else:
        with ProcessPoolExecutor(tc.jobs, mp_context=get_context("spawn")) as pool:
            futs = [pool.submit(_run_one, tcd, v, s) for v, s in jobs]
            runs = []
            for f in futs:
                runs.append(f.result())
                log.info("done %s seed %s: test SSA-1 %.3f", runs[-1]["variant"], runs[-1]["seed"],
                         runs[-1][tc.splits[0]]["SSA-1"])
    runs_all = [*_baseline_runs(tc, out), *runs, *_embedding_knn_runs(runs, tc.embedding_knn_of)]
    summary = summarise(runs_all, tc.splits)
    md = "\n".join(table_markdown(summary, sp, tc.seeds, int(runs[0][sp]["n_images"])) for sp in tc.splits)
    atomic_write_json(out / "table.json", {"config": tcd, "summary": summary, "runs": runs_all})
    atomic_write_text(out / "table.md", md)
    return {"summary": summary, "markdown": md, "runs": runs}
