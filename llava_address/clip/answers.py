"""Answers a user can act on: fit them on val (``calibrate_checkpoint``) and give them (``build_answers``).

``calibrate_checkpoint(model_dir, data_dir)`` runs once after training, on the val split only:
1. temperature T (``calibration.py``);
2. the coarse-to-fine threshold (``hierarchy.py``) that keeps level-aware answers right ≥ target
   (with 95 % confidence on val);
3. the training-image gallery (kept beside the checkpoint) and the coordinate rule (k-NN vs
   midpoint, neighbours, top-k) with the smaller val median error, plus its radius scale;
all stored in ``calibration.json``. It then reports the test split: ECE before/after, reliability
diagram and coverage–accuracy PNGs, level metrics and coordinate accuracy for both rules.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llava_address.clip import coordinates as co
from llava_address.clip.calibration import (expected_calibration_error, fit_temperature, nll, plot_coverage_accuracy,
                                            plot_reliability, save_calibration)
from llava_address.clip.hierarchy import (LEVELS, Hierarchy, answer_levels, choose_threshold, coverage_ceiling,
                                          level_metrics)
from llava_address.common.geo import haversine_m
from llava_address.common.io import atomic_write_json, atomic_write_text

__all__ = ["build_answers", "calibrate_checkpoint", "calibration_markdown", "DEFAULT_TARGET"]

log = logging.getLogger(__name__)
DEFAULT_TARGET = 0.9
KNN_GRID = [(k, n) for k in (1, 3, 5) for n in (1, 4, 8, 16)]   # (top-k sub-streets, neighbours)


def _coordinates(locator, feats: np.ndarray, probs: np.ndarray, cfg: dict[str, Any]):
    """(lat, lon, spread, method) with the checkpoint's chosen rule; midpoints when no gallery is kept."""
    mids = co.midpoints_array(locator.default_candidates, locator.info["midpoint"])
    gal = locator.gallery
    if cfg.get("method") == "knn" and gal is not None:
        lat, lon, spread = co.knn_estimate(feats, probs, gal, k=cfg["k"], n_neighbours=cfg["n_neighbours"],
                                           scale=locator.scale)
        return lat, lon, spread, "knn"
    lat, lon, spread = co.midpoint_estimate(probs, mids)
    return lat, lon, spread, "midpoint"


def build_answers(locator, image_embeds: torch.Tensor, k: int = 5) -> list[dict[str, Any]]:
    """Structured answers for encoded images over the checkpoint's own candidates (see ``AddressLocator.answer``)."""
    cands = locator.default_candidates
    probs = locator.scores(image_embeds, cands).double().numpy()
    cal = locator.calibration
    hier = Hierarchy.from_candidates(locator.info)
    threshold = float(cal.get("level_threshold", 0.0))  # uncalibrated: every photo at sub-street level
    levels = answer_levels(hier, probs, threshold)
    coords = cal.get("coordinates", {})
    lat, lon, spread, method = _coordinates(locator, image_embeds.numpy(), probs, coords)
    radius = co.radius_m(spread, float(coords.get(f"radius_scale_{method}", 1.0)))
    top = np.argsort(-probs, axis=1)[:, :k]
    out = []
    for i in range(len(probs)):
        level, address, conf = levels.answer(i)
        out.append({"level": level, "address": address, "confidence": conf, "calibrated": bool(cal),
                    # did val support the level threshold's target? (None: uncalibrated or an older file)
                    "level_target_met": cal.get("level_target_met_on_val"),
                    **{lv: levels.best[lv][i] for lv in LEVELS},
                    **{f"{lv}_confidence": float(levels.confidence[lv][i]) for lv in LEVELS},
                    "lat": float(lat[i]), "lon": float(lon[i]), "radius_m": float(radius[i]),
                    "coordinate_method": method,
                    "top_k": [(cands[j], float(probs[i, j])) for j in top[i]]})
    return out


def _labels(df, cands: list[str]) -> np.ndarray:
    pos = {c: i for i, c in enumerate(cands)}
    unknown = sorted(set(df["sub_street"]) - set(pos))
    if unknown:
        raise ValueError(f"images labelled with sub-streets the checkpoint does not know, e.g. {unknown[:3]}")
    return np.array([pos[s] for s in df["sub_street"]])


def _truth(df) -> dict[str, list[str]]:
    return {"sub_street": list(df["sub_street"]), "street": list(df["street"]), "district": list(df["district"])}


def _choose_coordinates(feats, probs, df, gallery, mids, scale) -> dict[str, Any]:
    """The k-NN setting with the smallest val median error, against the midpoint rule; radius scales."""
    lat, lon = df["lat"].to_numpy(float), df["lon"].to_numpy(float)
    mlat, mlon, mspread = co.midpoint_estimate(probs, mids)
    merr = haversine_m(mlat, mlon, lat, lon)
    cfg: dict[str, Any] = {"method": "midpoint", "val_median_error_midpoint_m": float(np.median(merr)),
                           "radius_scale_midpoint": co.radius_scale_for(mspread, merr)}
    if gallery is None:
        return cfg
    best = None
    for k, n in KNN_GRID:
        klat, klon, kspread = co.knn_estimate(feats, probs, gallery, k=k, n_neighbours=n, scale=scale)
        err = haversine_m(klat, klon, lat, lon)
        if best is None or np.median(err) < best[0]:
            best = (float(np.median(err)), k, n, co.radius_scale_for(kspread, err))
    cfg.update(val_median_error_knn_m=best[0], k=best[1], n_neighbours=best[2], radius_scale_knn=best[3])
    if best[0] < cfg["val_median_error_midpoint_m"]:
        cfg["method"] = "knn"
    return cfg


@torch.inference_mode()
def calibrate_checkpoint(model_dir: str | Path, data_dir: str | Path, out_dir: str | Path | None = None,
                         split: str = "test", target: float = DEFAULT_TARGET, plots: bool = True,
                         keep_gallery: bool = True, progress: bool = True) -> dict[str, float]:
    """Fit on val, store ``calibration.json`` (+ gallery) in ``model_dir``, report ``split``; returns metrics."""
    from llava_address.clip.evaluate import embed_split
    from llava_address.clip.locator import AddressLocator

    model_dir, out = Path(model_dir), Path(out_dir or model_dir)
    loc = AddressLocator.from_pretrained(model_dir, calibrated=False)
    cands = loc.default_candidates
    text = loc.candidate_embeddings(cands)
    hier = Hierarchy.from_candidates(loc.info)
    mids = co.midpoints_array(cands, loc.info["midpoint"])
    scale = loc.scale
    data = {}
    for sp in ("val", split):
        df, feats, skipped = embed_split(loc, data_dir, sp, progress=progress)
        data[sp] = (df, feats.numpy(), (scale * feats @ text.t()).double(), torch.as_tensor(_labels(df, cands)))
    val_df, val_feats, val_logits, val_y = data["val"]
    t = fit_temperature(val_logits, val_y)
    probs = {sp: torch.softmax(v[2] / t, -1).numpy() for sp, v in data.items()}
    threshold, val_levels = choose_threshold(hier, probs["val"], _truth(val_df), target)
    gallery = None
    if keep_gallery:
        tr_df, tr_feats, _ = embed_split(loc, data_dir, "train", progress=progress)
        gallery = co.Gallery(tr_feats.numpy(), tr_df["lat"].to_numpy(float), tr_df["lon"].to_numpy(float),
                             _labels(tr_df, cands))
        gallery.save(model_dir, cands)
    coord_cfg = _choose_coordinates(val_feats, probs["val"], val_df, gallery, mids, scale / t)
    payload = {"temperature": t, "fitted_on": "val", "n_val_images": len(val_df),
               "val_nll_before": nll(val_logits, val_y), "val_nll_after": nll(val_logits, val_y, t),
               "level_threshold": threshold, "level_target": target,
               "val_level_aware_accuracy": val_levels["level_aware_accuracy"],
               "val_level_aware_accuracy_lower_bound": val_levels["level_aware_accuracy_lower_bound"],
               # False: no threshold met the target on val; the best one is kept, and users are told
               "level_target_met_on_val": bool(val_levels["level_aware_accuracy_lower_bound"] >= target),
               "coordinates": coord_cfg, "data": str(data_dir)}
    save_calibration(model_dir, payload)
    if not payload["level_target_met_on_val"]:
        log.warning("no threshold keeps level-aware answers >= %.0f%% right on val (best lower bound %.2f at "
                    "threshold %.2f): answers at a stated level are less reliable than the target",
                    100 * target, val_levels["level_aware_accuracy_lower_bound"], threshold)

    df, feats, logits, y = data[split]
    raw_p = torch.softmax(logits, -1).numpy()
    correct = raw_p.argmax(1) == y.numpy()
    conf_before, conf_after = raw_p.max(1), probs[split].max(1)
    metrics: dict[str, float] = {"temperature": t, "level_threshold": threshold,
                                 "level_target_met_on_val": float(payload["level_target_met_on_val"]),
                                 "val_level_aware_accuracy_lower_bound":
                                     val_levels["level_aware_accuracy_lower_bound"],
                                 "ECE_before": expected_calibration_error(conf_before, correct),
                                 "ECE_after": expected_calibration_error(conf_after, correct),
                                 "NLL_before": nll(logits, y), "NLL_after": nll(logits, y, t)}
    levels = level_metrics(answer_levels(hier, probs[split], threshold), _truth(df))
    metrics.update({k: v for k, v in levels.items() if k != "n_images"})
    # what any threshold could reach: a few percent means the model, not the rule, limits coverage
    metrics.update({f"val_{k}": v for k, v in coverage_ceiling(hier, probs["val"], _truth(val_df), target).items()})
    lat, lon = df["lat"].to_numpy(float), df["lon"].to_numpy(float)
    mlat, mlon, mspread = co.midpoint_estimate(probs[split], mids)
    merr = haversine_m(mlat, mlon, lat, lon)
    mid_m = co.within_metrics(merr, co.radius_m(mspread, coord_cfg["radius_scale_midpoint"]))
    metrics.update({f"midpoint_{k}": v for k, v in mid_m.items()})
    if gallery is not None:
        klat, klon, kspread = co.knn_estimate(feats, probs[split], gallery, k=coord_cfg["k"],
                                              n_neighbours=coord_cfg["n_neighbours"], scale=scale / t)
        kerr = haversine_m(klat, klon, lat, lon)
        metrics.update({f"knn_{k}": v for k, v in
                        co.within_metrics(kerr, co.radius_m(kspread, coord_cfg["radius_scale_knn"])).items()})
    metrics["n_images"] = float(len(df))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"calibration_{split}.json", metrics)
    atomic_write_text(out / f"calibration_{split}.md", calibration_markdown(metrics, payload, split))
    if plots:
        plot_reliability({f"{split}, before (T=1)": (conf_before, correct),
                          f"{split}, after (T={t:.2f})": (conf_after, correct)}, out / f"reliability_{split}.png")
        plot_coverage_accuracy({"sub-street, before": (conf_before, correct),
                                "sub-street, calibrated": (conf_after, correct)}, out / f"coverage_{split}.png")
    return metrics


def calibration_markdown(m: dict[str, float], payload: dict[str, Any], split: str) -> str:
    """The calibration report as a small markdown table."""
    rows = [("temperature T (fitted on val)", f"{m['temperature']:.3f}"),
            (f"ECE (15 bins), {split}, before → after", f"{m['ECE_before']:.3f} → {m['ECE_after']:.3f}"),
            ("level threshold (chosen on val)", f"{m['level_threshold']:.2f}"),
            (f"target {payload['level_target']:.0%} met on val (95 % lower bound of the answered's accuracy)",
             f"{'yes' if m['level_target_met_on_val'] else 'NO'} "
             f"({m['val_level_aware_accuracy_lower_bound']:.2f})"),
            ("level-aware accuracy of answered", f"{m['level_aware_accuracy']:.3f}"),
            ("answered", f"{m['answered']:.3f}"),
            ("coverage sub-street / street / district / none",
             " / ".join(f"{m[f'coverage_{lv}']:.2f}" for lv in (*LEVELS, "none"))),
            (f"val: most photos any cut could answer at ≥ {payload['level_target']:.0%} right, "
             "sub-street / street / district",
             " / ".join(f"{m.get(f'val_coverage_ceiling_{lv}', float('nan')):.2f}" for lv in LEVELS))]
    rows += [(f"{lv} top-1 accuracy", f"{m[f'{lv}_accuracy']:.3f}") for lv in LEVELS if f"{lv}_accuracy" in m]
    for rule in ("midpoint", "knn"):
        if f"{rule}_median_error_m" in m:
            rows.append((f"{rule}: median error / within 25, 50, 100, 250 m / inside radius",
                         f"{m[f'{rule}_median_error_m']:.0f} m / "
                         + ", ".join(f"{m[f'{rule}_within_{d}m']:.2f}" for d in (25, 50, 100, 250))
                         + f" / {m[f'{rule}_inside_radius']:.2f}"))
    rows.append(("coordinate rule used", payload["coordinates"]["method"]))
    return (f"### Calibrated answers ({split}, {int(m['n_images'])} images)\n\n| | |\n|---|---|\n"
            + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n")
