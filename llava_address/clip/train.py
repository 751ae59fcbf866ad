"""AddressCLIP training loop with accelerate (DDP on GPUs or gloo on CPU, grad accumulation, resume).

Launch: ``accelerate launch scripts/train_clip.py --config configs/clip/tiny.yaml`` (or plain python).
Contrastive negatives come from one micro-batch on all processes (features are gathered); gradient
accumulation sums gradients of per-micro-batch losses (log rows show the last micro-batch).
Output folder:
    model/          HF checkpoint (see checkpoint.py), refreshed at every evaluation and at the end
    state/          accelerate save_state (weights, optimizer, scheduler, RNG) + trainer_state.json
    tokenizer/      the tokenizer trained for a tiny model (reused on --resume so ids never change)
    log.csv         one row per logged step: every loss part, lr, logit scale, images/s
    eval.csv        periodic SSA/SA on the val split
    run_info.json   world size, steps, throughput (tests check num_processes here)
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import GradientAccumulationPlugin, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from data_gen.contract import read_addresses, read_manifest
from llava_address.clip.checkpoint import candidates_payload, save_checkpoint
from llava_address.clip.config import AddressCLIPConfig
from llava_address.clip.data import AddressCollator, AddressImageDataset, EpochPermutationSampler, train_transform
from llava_address.clip.losses import AddressCLIPLoss
from llava_address.clip.model import AddressCLIP, build_model
from llava_address.clip.optim import build_optimizer, build_scheduler, resolve_batch, resolve_steps
from llava_address.common.config import dump_config
from llava_address.common.io import atomic_write_json, read_json

__all__ = ["train", "text_corpus", "resolve_precision"]

log = logging.getLogger(__name__)
MODEL_INPUTS = ("pixel_values", "address_input_ids", "address_attention_mask", "semantic_input_ids",
                "semantic_attention_mask", "vocab_input_ids", "vocab_attention_mask")


def resolve_precision(p: str) -> str:
    """'auto' -> bf16 on a bf16-capable GPU, else fp32 (bf16 autocast is ~16× slower on CPU)."""
    if p != "auto":
        return p
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def text_corpus(data_dir: Path, prompt: str) -> list[str]:
    """Texts a tiny tokenizer is trained on: every address level, train captions, the prompt."""
    vocab = read_addresses(data_dir)
    df = read_manifest(data_dir, "train")
    return [*vocab.sub_street, *vocab.street, *vocab.district, *df["caption"].tolist(), prompt]


def _make_model(cfg: AddressCLIPConfig, data_dir: Path, out: Path, resume: bool, acc: Accelerator) -> AddressCLIP:
    tok_dir = out / "tokenizer"
    if cfg.model.backbone == "hf" and not cfg.model.pretrained_dir and resume and tok_dir.is_dir():
        from transformers import CLIPModel

        from llava_address.clip.model import make_image_processor, tiny_clip_config

        tok = AutoTokenizer.from_pretrained(tok_dir)
        return AddressCLIP(CLIPModel(tiny_clip_config(cfg.model.tiny, tok)), tok,
                           make_image_processor(cfg.model.tiny.image_size))
    model = build_model(cfg.model, text_corpus(data_dir, cfg.model.prompt))
    if acc.is_main_process and cfg.model.backbone == "hf" and not cfg.model.pretrained_dir:
        model.tokenizer.save_pretrained(tok_dir)
    return model


def _param_groups(model: torch.nn.Module, wd: float, lr: float, text_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """CLIP practice: no weight decay on biases, norms, embeddings' gains and the temperature.

    ``text_lr_scale`` != 1: the text tower and its projection get their own groups at lr × scale.
    """
    groups: dict[tuple[bool, bool], list] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "logit_scale" in n or "embedding" in n
        text = text_lr_scale != 1.0 and ("text_model" in n or "text_projection" in n)
        groups.setdefault((text, no_decay), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if nd else wd, "lr": lr * (text_lr_scale if text else 1.0)}
            for (text, nd), ps in sorted(groups.items())]


class _CsvLog:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled, self.fields = path, enabled, None

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        if self.fields is None:
            self.fields = list(row) if new else next(csv.reader(self.path.open()))
        with self.path.open("a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


def _truncate_log(path: Path, step: int) -> None:
    """Keep only rows up to ``step`` (a resumed run rewrites what the killed run logged after its last save)."""
    if not path.is_file():
        return
    if step == 0:
        path.unlink()
        return
    import pandas as pd

    from llava_address.common.io import atomic_write_text

    df = pd.read_csv(path)
    atomic_write_text(path, df[df["step"] <= step].to_csv(index=False))


def _save_state(acc: Accelerator, out: Path, step: int) -> None:
    """accelerate state for --resume, written to a temp folder then swapped in (kill-safe)."""
    tmp, final = out / "state.tmp", out / "state"
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    acc.wait_for_everyone()
    if acc.is_main_process:
        atomic_write_json(tmp / "trainer_state.json", {"step": step})
        prev = out / "state.prev"  # the previous save stays as a fallback for a broken newest one
        shutil.rmtree(prev, ignore_errors=True)
        if final.exists():
            final.replace(prev)
        tmp.replace(final)
    acc.wait_for_everyone()


STATE_FILES = ("trainer_state.json", "model.safetensors", "optimizer.bin")


def _resume_state(out: Path) -> Path | None:
    """The saved state to resume from: ``state/``, else ``state.prev/`` with a warning; None if none saved.

    Raises CheckpointError (one line naming the broken file and the flag) when states exist but none
    loads, or when the run's tokenizer (rebuilt from ``tokenizer/`` on resume) is broken.
    """
    from llava_address.common.checkpoint_files import CheckpointError, first_usable, folder_problem

    hint = "run without --resume to start fresh (scripts/demo.py: --fresh)"
    states = [d for d in (out / "state", out / "state.prev") if d.is_dir()]
    state = first_usable(states, lambda d: folder_problem(d, STATE_FILES), "state", hint)
    if state is not None and (out / "tokenizer").is_dir():
        tok = folder_problem(out / "tokenizer")
        if tok is not None:
            raise CheckpointError(f"cannot resume: {tok[0]} is unusable ({tok[1]}); {hint}")
    return state


def _evaluate(acc: Accelerator, model: AddressCLIP, cfg: AddressCLIPConfig, data_dir: Path, cands: dict,
              max_images: int | None) -> dict[str, float]:
    from llava_address.clip.evaluate import evaluate_locator
    from llava_address.clip.locator import AddressLocator

    was_training = model.training
    loc = AddressLocator(model, cands, device=acc.device, batch_size=cfg.eval.batch_size)
    try:
        metrics, _ = evaluate_locator(loc, data_dir, cfg.eval.split, max_images, progress=False)
    finally:
        model.train(was_training)
    return metrics


def train(cfg: AddressCLIPConfig, data_dir: str | Path | None = None, output_dir: str | Path | None = None,
          resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Train per ``cfg``; returns run info (steps, final metrics, paths). ``stop_after`` simulates a kill."""
    data_dir = Path(data_dir or cfg.data.dataset_dir or "")
    if not (data_dir / "manifest.parquet").is_file():
        raise FileNotFoundError(f"no dataset at {data_dir!s} (set data.dataset_dir or pass --data)")
    out = Path(output_dir or cfg.train.output_dir)
    tc = cfg.train
    if tc.torch_threads:
        torch.set_num_threads(tc.torch_threads)
    acc = Accelerator(mixed_precision=resolve_precision(tc.mixed_precision),
                      gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=tc.grad_accum,
                                                                              sync_with_dataloader=False))
    state_dir = _resume_state(out) if resume else None
    if resume and state_dir is None:
        log.warning("--resume: no saved state in %s, starting from step 0", out)
        resume = False
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        for f in ("log.csv", "eval.csv"):
            _truncate_log(out / f, read_json(state_dir / "trainer_state.json")["step"] if resume else 0)
        dump_config(cfg, out / "config.yaml")
    acc.wait_for_everyone()
    set_seed(tc.seed)
    tc = resolve_batch(tc, acc.num_processes)  # global batch -> per-process batch
    model = _make_model(cfg, data_dir, out, resume, acc)
    if cfg.model.freeze_text and model.backbone == "hf":
        model.clip.text_model.requires_grad_(False)
    vocab = read_addresses(data_dir)
    cands = candidates_payload(vocab, cfg.model.prompt if cfg.loss.prompt_address else None)
    ds = AddressImageDataset(data_dir, "train", vocab, model.image_processor,
                             train_transform(model.image_size, cfg.data)
                             if cfg.data.augment else None, seed=tc.seed)
    can_eval = len(read_manifest(data_dir, cfg.eval.split)) > 0
    if not can_eval:
        log.warning("split %r of %s is empty: no evaluation during training", cfg.eval.split, data_dir)
    sampler = EpochPermutationSampler(len(ds), tc.seed)
    vocab_negatives = cfg.loss.use_address and cfg.loss.address_negatives == "vocabulary"
    collate = AddressCollator(model.tokenize, cfg.model.prompt if cfg.loss.prompt_address else None,
                              with_semantic=cfg.loss.use_semantic,
                              vocabulary=list(vocab.sub_street) if vocab_negatives else None)
    dl = DataLoader(ds, batch_size=tc.batch_size, sampler=sampler, collate_fn=collate, drop_last=True,
                    num_workers=cfg.data.num_workers)
    if tc.text_lr_scale != 1.0 and model.backbone != "hf":
        raise ValueError(f"train.text_lr_scale applies to the hf backbone only, not {model.backbone!r}")
    optimizer = build_optimizer(_param_groups(model, tc.weight_decay, tc.lr, tc.text_lr_scale), tc)
    loss_fn = AddressCLIPLoss(cfg.loss)
    model, optimizer, dl = acc.prepare(model, optimizer, dl)
    tc = resolve_steps(tc, len(dl))  # epochs -> optimizer steps, on the sharded loader
    scheduler = build_scheduler(optimizer, tc)
    acc.register_for_checkpointing(scheduler)  # stepped by us once per optimizer step
    if len(dl) < 1:
        raise ValueError(f"train split has {len(ds)} images: fewer than one batch of {tc.batch_size} per process")
    step = 0
    if resume:
        acc.load_state(str(state_dir))
        step = int(read_json(state_dir / "trainer_state.json")["step"])
        log.info("resumed from step %d", step)
    raw: AddressCLIP = acc.unwrap_model(model)
    csv_log, eval_log = _CsvLog(out / "log.csv", acc.is_main_process), _CsvLog(out / "eval.csv", acc.is_main_process)
    imgs_per_step = tc.batch_size * tc.grad_accum * acc.num_processes
    bar = tqdm(total=tc.max_steps, initial=step, desc="train", disable=not acc.is_local_main_process)
    metrics: dict[str, float] = {}
    t_window, n_window, throughput = time.perf_counter(), 0, []
    model.train()
    while step < tc.max_steps:
        consumed = step * tc.grad_accum
        epoch, skip = divmod(consumed, len(dl))
        sampler.set_epoch(epoch)
        ds.set_epoch(epoch)
        it = acc.skip_first_batches(dl, skip) if skip else dl
        # accelerate's loaders re-set sampler/dataset epochs from their own counter on __iter__,
        # which restarts at 0 after a resume: align it with ours.
        if hasattr(it, "set_epoch"):
            it.set_epoch(epoch)
        for batch in it:
            with acc.accumulate(model):
                out_feats = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS})
                parts = loss_fn(out_feats, batch)
                acc.backward(parts["loss"])
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad()
            if not acc.sync_gradients:
                continue
            scheduler.step()
            with torch.no_grad():  # CLIP keeps the temperature at most 100
                raw.clip.logit_scale.clamp_(0, math.log(100.0))
            step += 1
            n_window += 1
            bar.update(1)
            if step % tc.log_every == 0 or step == tc.max_steps:
                dt = time.perf_counter() - t_window
                ips = n_window * imgs_per_step / max(dt, 1e-9)
                throughput.append(ips)
                row = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                       **{k: float(v.detach()) for k, v in parts.items()},
                       "logit_scale": float(raw.logit_scale().detach()), "images_per_s": ips}
                csv_log.write(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", ips=f"{ips:.0f}")
                t_window, n_window = time.perf_counter(), 0
            final = step == tc.max_steps
            t_pause = time.perf_counter()  # evaluation and saving are not training throughput
            if (tc.eval_every and step % tc.eval_every == 0) or final:
                if acc.is_main_process:
                    if can_eval:
                        metrics = _evaluate(acc, raw, cfg, data_dir, cands, cfg.eval.max_images)
                        eval_log.write({"step": step, **metrics})
                    save_checkpoint(raw, out / "model", cfg, cands, {"step": step, "split": cfg.eval.split, **metrics})
                acc.wait_for_everyone()
            if step % tc.save_every == 0 or final:
                _save_state(acc, out, step)
            t_window += time.perf_counter() - t_pause
            if stop_after is not None and step >= stop_after:
                bar.close()
                return {"step": step, "stopped": True, "num_processes": acc.num_processes}
            if final:
                break
    bar.close()
    info = {"step": step, "num_processes": acc.num_processes, "mixed_precision": acc.mixed_precision,
            "images_per_step": imgs_per_step, "images_per_s_mean": sum(throughput) / max(len(throughput), 1),
            "train_images": len(ds), "skipped_images": ds.skipped, "final_metrics": metrics,
            "model_dir": str(out / "model")}
    if acc.is_main_process:
        atomic_write_json(out / "run_info.json", info)
        _plot_training_curves(out)
    acc.wait_for_everyone()
    acc.end_training()
    return info


def _plot_training_curves(out: Path) -> None:
    """training_curves.png beside the logs: loss parts, and val SSA/SA when evaluated."""
    from llava_address.common.curves import plot_curves, read_csv_rows

    plot_curves({"losses": (read_csv_rows(out / "log.csv"), ["loss", "loss_address", "loss_semantic", "loss_geo"]),
                 "val accuracy": (read_csv_rows(out / "eval.csv"), ["SSA-1", "SA-1", "SSA-5", "SA-5"])},
                out / "training_curves.png", title="AddressCLIP training")
