"""Temperature scaling, expected calibration error, reliability and coverage–accuracy curves.

Why: the model's softmax over ``logit_scale · cos`` is trained for ranking, not for telling a
user how far to trust the top answer. One scalar T (Guo et al. 2017) fitted on the validation
split after training turns scores into probabilities whose confidence matches accuracy, without
changing the ranking. ``calibration.json`` beside the checkpoint carries T (and the level
threshold and coordinate settings chosen on val, see ``answers.py``); the locator applies it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from llava_address.common.io import atomic_write_bytes, atomic_write_json, read_json

__all__ = ["CALIBRATION_FILE", "fit_temperature", "nll", "expected_calibration_error", "reliability_bins",
           "coverage_accuracy", "plot_reliability", "plot_coverage_accuracy", "save_calibration",
           "load_calibration"]

CALIBRATION_FILE = "calibration.json"


def _check(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits, labels = torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(labels, dtype=torch.long)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits must be (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("no validation images to fit a temperature on")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must index the {logits.shape[1]} candidates")
    return logits, labels


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``softmax(logits / temperature)``."""
    logits, labels = _check(logits, labels)
    return float(F.cross_entropy(logits / temperature, labels))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """T > 0 minimising the NLL of ``softmax(logits / T)``: LBFGS (strong Wolfe) over log T."""
    with torch.inference_mode(False), torch.enable_grad():  # callable from evaluation code
        logits, labels = (x.clone() for x in _check(logits, labels))  # plain tensors, not inference ones
        log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(logits / log_t.exp(), labels)
            loss.backward()
            return loss

        opt.step(closure)
    t = float(log_t.detach().exp())
    if not np.isfinite(t) or t <= 0:
        raise ValueError(f"temperature fit diverged (T={t})")
    return t


def reliability_bins(confidence, correct, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width confidence bins on [0, 1]: count, mean confidence and accuracy per bin."""
    conf, corr = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    if conf.shape != corr.shape or conf.ndim != 1:
        raise ValueError("confidence and correct must be 1-D arrays of the same length")
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)  # bin b holds (b/n, (b+1)/n]
    count = np.bincount(idx, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, n_bins) / count
        acc = np.bincount(idx, corr, n_bins) / count
    return {"count": count, "confidence": mean_conf, "accuracy": acc, "edges": np.linspace(0, 1, n_bins + 1)}


def expected_calibration_error(confidence, correct, n_bins: int = 15) -> float:
    """ECE: sum over bins of (share of images) · |accuracy − mean confidence|."""
    b = reliability_bins(confidence, correct, n_bins)
    if b["count"].sum() == 0:
        raise ValueError("no predictions to score")
    used = b["count"] > 0
    return float(np.sum(b["count"][used] / b["count"].sum() * np.abs(b["accuracy"][used] - b["confidence"][used])))


def coverage_accuracy(confidence, correct) -> dict[str, np.ndarray]:
    """Answer only when confidence ≥ threshold: coverage and accuracy of the answered, per threshold.

    Thresholds are the observed confidences (descending), so point i answers the i+1 most confident.
    """
    conf, corr = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    order = np.argsort(-conf, kind="stable")
    n = np.arange(1, len(conf) + 1)
    return {"threshold": conf[order], "coverage": n / len(conf), "accuracy": np.cumsum(corr[order]) / n}


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def plot_reliability(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
                     n_bins: int = 15) -> Path:
    """One reliability diagram per (title -> (confidence, correct)), e.g. before / after calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, (conf, corr)) in zip(axes[0], panels.items()):
        b = reliability_bins(conf, corr, n_bins)
        centers = (b["edges"][:-1] + b["edges"][1:]) / 2
        used = b["count"] > 0
        ax.bar(centers[used], b["accuracy"][used], width=1 / n_bins, edgecolor="k", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="0.4", label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
               title=f"{title}\nECE {expected_calibration_error(conf, corr, n_bins):.3f}")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(path, _png(fig))
    return Path(path)


def plot_coverage_accuracy(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
                           title: str = "answer only above a confidence threshold") -> Path:
    """Accuracy of the answered images against the share answered, one line per (label -> (conf, correct))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for label, (conf, corr) in curves.items():
        c = coverage_accuracy(conf, corr)
        ax.plot(c["coverage"], c["accuracy"], label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="coverage (share of images answered)",
           ylabel="accuracy of answered", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(path, _png(fig))
    return Path(path)


def save_calibration(model_dir: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``calibration.json`` beside the checkpoint (atomically); it must carry a positive temperature."""
    t = payload.get("temperature")
    if not isinstance(t, (int, float)) or not t > 0:
        raise ValueError(f"calibration: temperature must be a positive number, got {t!r}")
    path = Path(model_dir) / CALIBRATION_FILE
    atomic_write_json(path, payload)
    return path


def load_calibration(model_dir: str | Path) -> dict[str, Any] | None:
    """The checkpoint's calibration, or None when it was never calibrated; a bad file is an error."""
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    t = data.get("temperature")
    if not isinstance(t, (int, float)) or not t > 0:
        raise ValueError(f"{path}: temperature must be a positive number, got {t!r}")
    return data
