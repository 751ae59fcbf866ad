"""The offline end-to-end demo as stages, each a thin call into the package that owns it.

data (data_gen.builder) -> clip (llava_address.clip.train) -> clip_eval (clip.evaluate) ->
qa (data_gen.qa) -> llava_stage1 / llava_stage2 + export (llava.train) -> llava_eval
(llava.evaluate) -> chat (app.chat_session on a held-out test image).
Stages are reused across runs via :mod:`llava_address.app.stages` markers; ``summary.json``
collects every number and every artefact path.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from llava_address.app.demo_config import EVAL_MODES, DemoConfig
from llava_address.app.stages import Stage, StageOutput, StageRunner
from llava_address.common.io import atomic_write_json

__all__ = ["run_demo", "format_summary", "SUMMARY_FILE", "ARTIFACT_DEFAULTS", "demo_artifact"]

log = logging.getLogger(__name__)
SUMMARY_FILE = "summary.json"
CHAT_MODES = {"": "plain", "grounded_": "candidate-grounded", "rerank_": "re-ranked by fusion"}  # metric prefix: name
# Where the demo puts the models (relative to its --out); chat.py / web.py default to these.
ARTIFACT_DEFAULTS = {"dataset": "data", "clip_model": "clip/model", "llava_export": "llava/export"}


def demo_artifact(name: str, out_dir: str | Path = "outputs/demo") -> Path:
    """Path of a demo artefact: from the last summary if there is one, else the conventional place."""
    out = Path(out_dir)
    try:
        from llava_address.common.io import read_json

        return Path(read_json(out / SUMMARY_FILE)["artifacts"][name])
    except (FileNotFoundError, ValueError, KeyError):
        return out / ARTIFACT_DEFAULTS[name]


def _files(ref) -> tuple[str, ...]:
    return (ref.config,) if ref.config else ()


class _Demo:
    """Holds the config and paths; one method per stage (each returns a StageOutput)."""

    def __init__(self, cfg: DemoConfig, out: Path):
        self.cfg, self.out = cfg, out
        self.data = out / "data"
        self.clip_dir = out / "clip"
        self.qa_dir = out / "qa"
        self.llava_dir = out / "llava"
        self.clip_model: Path = out / ARTIFACT_DEFAULTS["clip_model"]
        self.export: Path = out / ARTIFACT_DEFAULTS["llava_export"]

    # ---- data -------------------------------------------------------------------------------
    def data_stage(self, resume: bool) -> StageOutput:
        from data_gen.build_config import BuildConfig
        from data_gen.builder import build_dataset
        from llava_address.common.config import load_config
        from llava_address.common.io import read_json

        bc = load_config(self.cfg.data.config, BuildConfig, self.cfg.data.overrides)
        build_dataset(bc, self.data, overwrite=True)
        stats = read_json(self.data / "stats.json")
        from data_gen.contract import read_addresses, read_manifest

        df, vocab = read_manifest(self.data), read_addresses(self.data)
        per_split = {f"images_{s}": int((df["split"] == s).sum()) for s in ("train", "val", "test")}
        metrics = {"images": int(len(df)), **per_split,
                   "sub_streets": len(vocab.sub_street), "streets": len(vocab.street), "districts": len(vocab.district)}
        dropped = stats.get("dropped")
        if isinstance(dropped, dict):
            metrics["dropped"] = int(sum(v for v in dropped.values() if isinstance(v, (int, float))))
        return StageOutput(metrics, {"dataset": str(self.data), "dataset_map": str(self.data / "map.png")}
                           if (self.data / "map.png").is_file() else {"dataset": str(self.data)})

    # ---- AddressCLIP ------------------------------------------------------------------------
    def clip_stage(self, resume: bool) -> StageOutput:
        from llava_address.clip.config import load_clip_config
        from llava_address.clip.train import train

        cc = load_clip_config(self.cfg.clip.config, self.cfg.clip.overrides)
        if not resume:  # a changed config or upstream: never continue an older run
            shutil.rmtree(self.clip_dir, ignore_errors=True)
        info = train(cc, self.data, self.clip_dir, resume=resume)
        self.clip_model = Path(info["model_dir"])
        keep = ("step", "images_per_s_mean", "train_images")
        metrics = {k: info[k] for k in keep if k in info}
        metrics.update({f"val_{k}": v for k, v in (info.get("final_metrics") or {}).items() if k[:2] in ("SS", "SA")})
        return StageOutput(metrics, {"clip_model": str(self.clip_model)})

    def clip_eval_stage(self, resume: bool) -> StageOutput:
        from llava_address.clip.evaluate import evaluate, metrics_markdown

        split = self.cfg.clip_eval.split
        out = self.out / "clip_eval"
        cal = self._calibrate(out, split)
        metrics = evaluate(self.clip_model, self.data, split=split, out_dir=out, plots=self.cfg.clip_eval.plots)
        print("\n" + metrics_markdown(metrics, f"AddressCLIP / {split}"), flush=True)
        metrics.update(cal)
        arts = {"clip_eval": str(out / f"eval_{split}.json")}
        if (out / f"eval_{split}_map.png").is_file():
            arts["clip_eval_map"] = str(out / f"eval_{split}_map.png")
        return StageOutput({k: float(v) for k, v in metrics.items()}, arts)

    def _calibrate(self, out: Path, split: str) -> dict[str, float]:
        """Calibrated answers (issue 15) when the dataset has a val split: the summary's calibration numbers."""
        from data_gen.contract import read_manifest
        from llava_address.clip.answers import calibrate_checkpoint, calibration_markdown
        from llava_address.clip.calibration import load_calibration

        if split == "val" or read_manifest(self.data, "val").empty:
            log.warning("no separate val split: AddressCLIP stays uncalibrated")
            return {}
        cal = calibrate_checkpoint(self.clip_model, self.data, out, split, plots=self.cfg.clip_eval.plots)
        print("\n" + calibration_markdown(cal, load_calibration(self.clip_model), split), flush=True)
        keep = ("temperature", "ECE_before", "ECE_after", "level_threshold", "level_target_met_on_val",
                "level_aware_accuracy", "answered",
                "district_accuracy", "midpoint_median_error_m", "knn_median_error_m")
        return {k: cal[k] for k in keep if k in cal}

    # ---- QA ---------------------------------------------------------------------------------
    def qa_stage(self, resume: bool) -> StageOutput:
        from data_gen.qa import QAConfig, build_qa
        from llava_address.common.config import load_config

        qc = load_config(self.cfg.qa.config, QAConfig, self.cfg.qa.overrides)
        self.qa_dir.mkdir(parents=True, exist_ok=True)
        stats = build_qa(self.data, self.qa_dir / "qa.json", self.qa_dir / "align.json", qc)
        qa_all = stats["qa"].get("all", {})
        metrics = {"dialogues": qa_all.get("dialogues"), "turns": qa_all.get("turns_total"),
                   "align_pairs": stats.get("stage1", {}).get("all", {}).get("dialogues")}
        return StageOutput(metrics, {"qa_json": str(self.qa_dir / "qa.json"),
                                     "align_json": str(self.qa_dir / "align.json")})

    # ---- LLaVA ------------------------------------------------------------------------------
    def llava_config(self):
        from llava_address.llava.config import load_llava_config

        qa = self.qa_dir.resolve()  # absolute: the LLaVA config resolves relative JSON paths under dataset_dir
        base = [f"output_dir={self.llava_dir}", f"model.clip_dir={self.clip_model}", f"data.dataset_dir={self.data}",
                f"data.align_json={qa / 'align.json'}", f"data.qa_json={qa / 'qa.json'}"]
        return load_llava_config(self.cfg.llava.config, base + list(self.cfg.llava.overrides))

    def llava_stage(self, stage: int, resume: bool) -> StageOutput:
        from llava_address.llava.train import train_stage

        if not resume:  # stage 1 also rebuilds the base (it holds the AddressCLIP tower)
            for p in ([self.llava_dir] if stage == 1 else [self.llava_dir / "stage2", self.llava_dir / "export"]):
                shutil.rmtree(p, ignore_errors=True)
        rec = train_stage(self.llava_config(), stage, resume=resume)
        metrics = {k: rec.get(k) for k in ("global_step", "train_loss", "samples", "trainable_params")}
        arts = {f"llava_stage{stage}": str(self.llava_dir / f"stage{stage}")}
        if stage == 2:
            self.export = Path(rec.get("export_dir") or self.export)
            arts["llava_export"] = str(self.export)
        return StageOutput(metrics, arts)

    def llava_eval_stage(self, resume: bool) -> StageOutput:
        """Generative eval in each configured mode (plain / grounded, free / constrained) on the same images."""
        from llava_address.llava.evaluate import evaluate_generative, evaluate_rerank

        ec = self.cfg.llava_eval
        nums: dict[str, float] = {}
        arts: dict[str, str] = {}
        for mode in ec.modes:
            out = self.out / "llava_eval" / f"eval_{ec.split}_{mode}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            grounded = mode.startswith("grounded")
            if mode.endswith("rerank"):  # lambda fitted on val, stored in the export's rerank.json for chat / web
                metrics = evaluate_rerank(self.export, self.data, self.clip_model, grounded=grounded,
                                          candidates_k=ec.candidates, split=ec.split, fit_split="val",
                                          question=self.cfg.chat.question, batch_size=ec.batch_size,
                                          max_samples=ec.max_images, out_json=out)
            else:
                metrics = evaluate_generative(self.export, self.data, split=ec.split, question=self.cfg.chat.question,
                                              batch_size=ec.batch_size, max_samples=ec.max_images,
                                              max_new_tokens=ec.max_new_tokens, out_json=out,
                                              candidates_k=ec.candidates if grounded else 0,
                                              clip_dir=self.clip_model if grounded else None,
                                              constrained=mode.endswith("constrained"))
            mode_nums = {k: float(v) for k, v in metrics.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)}
            print("\n" + _metrics_table(mode_nums, f"LLaVA (generated answers, {mode}) / {ec.split}"), flush=True)
            # the first mode keeps the plain metric names (README / older summaries); others are prefixed
            nums.update(mode_nums if not nums else {f"{mode}_{k}": v for k, v in mode_nums.items()})
            arts[f"llava_eval_{mode}"] = str(out)
        if ec.conversation:
            conv = self._conversation_eval()
            nums.update({k: float(v) for k, v in conv.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
            arts["llava_eval_conversation"] = str(self.out / "llava_eval" / f"eval_{ec.split}_conversation.json")
        return StageOutput(nums, arts)

    def _conversation_eval(self) -> dict[str, Any]:
        """Time of day / weather against the captions; general-question retention against the base LM."""
        from data_gen.contract import read_manifest
        from llava_address.llava.eval_conversation import evaluate_conditions, evaluate_retention
        from llava_address.llava.generate import LlavaAddressAssistant
        from llava_address.llava.pretrained_lm import resolve_text_model

        ec = self.cfg.llava_eval
        assistant = LlavaAddressAssistant.from_pretrained(self.export)
        cond = evaluate_conditions(assistant, self.data, ec.split, ec.conversation_max_images, ec.batch_size)
        out: dict[str, Any] = {f"conv_{k}": v for k, v in cond.items()}
        text = self.llava_config().model.text
        report: dict[str, Any] = {"conditions": cond}
        if text != "tiny":
            image = self.data / read_manifest(self.data, ec.split).iloc[0]["image"]
            ret = evaluate_retention(assistant, resolve_text_model(text), image)
            report["retention"] = ret
            out.update({f"general_{k}": v for k, v in ret.items() if k != "items"})
        atomic_write_json(self.out / "llava_eval" / f"eval_{ec.split}_conversation.json", report)
        print("\n" + _metrics_table({k: v for k, v in out.items() if isinstance(v, float)},
                                     f"LLaVA conversation / {ec.split}"), flush=True)
        return out

    # ---- chat -------------------------------------------------------------------------------
    def chat_stage(self, resume: bool) -> StageOutput:
        from data_gen.contract import read_manifest
        from llava_address.app.chat_session import ChatSession, load_assistant, load_locator

        cc = self.cfg.chat
        test = read_manifest(self.data, "test")
        if test.empty:
            raise ValueError(f"{self.data}: no held-out test image to chat about")
        row = test.iloc[min(cc.image_index, len(test) - 1)]
        image = self.data / row["image"]
        assistant, locator = load_assistant(self.export), load_locator(self.clip_model)
        print(f"\nchat about held-out test image {image} (true address: {row['sub_street']})")
        metrics: dict[str, Any] = {"image": str(row["image"]), "true_address": str(row["sub_street"])}
        modes = [("", False, None)] + ([("grounded_", True, None)] if cc.grounded else [])
        if cc.rerank:
            from llava_address.llava.rerank import load_rerank

            modes.append(("rerank_", cc.grounded, load_rerank(self.export, cc.grounded).lam))
        for pre, grounded, lam in modes:
            session = ChatSession(assistant, locator, k=cc.candidates, max_new_tokens=cc.max_new_tokens,
                                  grounded=grounded, rerank_lambda=lam)
            session.set_image(image)
            print(f"-- {CHAT_MODES[pre]} mode --")
            turns = []
            more = cc.more_questions if not pre else []
            for q in [cc.question] + ([cc.follow_up] if cc.follow_up else []) + more:
                print(f"Q: {q}\nA: ", end="", flush=True)
                a = session.ask(q, on_text=lambda t: print(t, end="", flush=True))
                print()
                turns.append({"question": q, "answer": a})
            first_pred = session.answer_address(turn=0)
            metrics.update({f"{pre}turns": turns, f"{pre}first_answer_address": first_pred,
                            f"{pre}first_answer_correct": first_pred == row["sub_street"]})
        from llava_address.app.chat_session import format_candidates

        print("AddressCLIP candidates:\n" + "\n".join(format_candidates(session.candidates)), flush=True)
        metrics["candidates"] = [[a, round(s, 4)] for a, s in session.candidates]
        return StageOutput(metrics, {"chat_image": str(image)})


def run_demo(cfg: DemoConfig, out_dir: str | Path, fresh: bool = False, only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run (or reuse) every stage; write and return the summary."""
    out = Path(out_dir)
    if cfg.torch_threads:
        import torch

        torch.set_num_threads(cfg.torch_threads)
    d, runner, t0 = _Demo(cfg, out), StageRunner(out, fresh=fresh), time.perf_counter()
    stages = [
        Stage("data", d.data_stage, cfg.data.model_dump(), _files(cfg.data)),
        Stage("clip", d.clip_stage, cfg.clip.model_dump(), _files(cfg.clip), ("data",)),
        Stage("clip_eval", d.clip_eval_stage, cfg.clip_eval.model_dump(), (), ("clip",)),
        Stage("qa", d.qa_stage, cfg.qa.model_dump(), _files(cfg.qa), ("data",)),
        Stage("llava_stage1", lambda r: d.llava_stage(1, r), cfg.llava.model_dump(), _files(cfg.llava), ("clip", "qa")),
        Stage("llava_stage2", lambda r: d.llava_stage(2, r), cfg.llava.model_dump(), _files(cfg.llava),
              ("llava_stage1",)),
        Stage("llava_eval", d.llava_eval_stage, cfg.llava_eval.model_dump(), (), ("llava_stage2",)),
        Stage("chat", d.chat_stage, cfg.chat.model_dump(), (),
              ("llava_stage2", "clip") + (("llava_eval",) if cfg.chat.rerank else ())),
    ]
    for i, st in enumerate(stages, 1):
        if only and st.name not in only:
            rec = runner.peek(st)
            if rec is None:
                continue
        else:
            print(f"\n=== [{i}/{len(stages)}] {st.name} ===", flush=True)
            rec = runner.run(st)
        arts = rec.get("artifacts", {})  # a reused stage tells later stages where its outputs are
        d.clip_model = Path(arts.get("clip_model", d.clip_model))
        d.export = Path(arts.get("llava_export", d.export))
        if not only or st.name in only:
            print(f"=== {st.name}: {rec['status']} ({rec['seconds']:.1f}s) ===", flush=True)
    summary = {"out_dir": str(out), "wall_seconds_this_run": round(time.perf_counter() - t0, 1),
               "stage_seconds_total": round(sum(r["seconds"] for r in runner.records.values()), 1),
               "stages": {n: {k: r.get(k) for k in ("status", "seconds", "cpu_seconds", "metrics", "artifacts",
                                                    "finished_at")}
                          for n, r in runner.records.items()},
               "artifacts": runner.artifacts(), "config": cfg.model_dump()}
    atomic_write_json(out / SUMMARY_FILE, summary)
    return summary


def split_n(metrics: dict[str, Any]) -> str:
    n = metrics.get("n_images")
    return f"{n:.0f}" if isinstance(n, (int, float)) else "the"


def _metrics_table(metrics: dict[str, float], title: str) -> str:
    rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in metrics.items())
    return f"### {title}\n\n| metric | value |\n|---|---|\n{rows}\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable summary: per stage status, time and numbers; then artefact paths."""
    lines = ["", "=" * 72, "llava-address demo summary", "=" * 72,
             f"{'stage':<14}{'status':<8}{'seconds':>9}{'cpu s':>8}  numbers"]
    for name, rec in summary["stages"].items():
        nums = {k: v for k, v in rec["metrics"].items() if not isinstance(v, (list, dict))}
        text = ", ".join(f"{k}={_fmt(v)}" for k, v in nums.items())
        cpu = rec.get("cpu_seconds")
        lines.append(f"{name:<14}{rec['status']:<8}{rec['seconds']:>9.1f}{cpu if cpu is not None else '-':>8}  {text}")
    ev = summary["stages"].get("llava_eval", {}).get("metrics", {})
    clip = summary["stages"].get("clip_eval", {}).get("metrics", {})
    if "SSA-1" in ev and "SSA-1" in clip:  # every mode vs AddressCLIP on the images LLaVA answered
        same = ev.get("grounded_clip_SSA-1", ev.get("grounded_constrained_clip_SSA-1"))
        ref = same if same is not None else clip["SSA-1"]
        lines.append(f"  AddressCLIP SSA-1 {clip['SSA-1']:.3f} on all {split_n(clip)} test images"
                     + (f", {same:.3f} on the {ev.get('n_images', 0):.0f} LLaVA answered" if same is not None else "")
                     + "; LLaVA answers on those images:")
        for mode in EVAL_MODES:
            pre = "" if mode == "plain" else f"{mode}_"
            if f"{pre}SSA-1" in ev:
                lines.append(f"    {mode:<22}SSA-1 {ev[pre + 'SSA-1']:.3f}  SA-1 {ev[pre + 'SA-1']:.3f}  "
                             f"valid address {ev[pre + 'valid_address_rate']:.3f}  "
                             f"({ev[pre + 'SSA-1'] / max(ref, 1e-9):.2f}x AddressCLIP)")
    if "conv_time_of_day_accuracy" in ev:
        lines.append(f"    time of day right {ev['conv_time_of_day_accuracy']:.3f} (majority class "
                     f"{ev['conv_time_of_day_majority_rate']:.3f}), weather {ev['conv_weather_accuracy']:.3f} "
                     f"({ev['conv_weather_majority_rate']:.3f})"
                     + (f"; general questions {ev['general_tuned_right_of_base_right']:.0f} of the base LM's "
                        f"{ev['general_base_right']:.0f} right kept" if "general_retention" in ev else ""))
    chat = summary["stages"].get("chat", {}).get("metrics", {})
    for pre, mode in CHAT_MODES.items():
        for turn in chat.get(f"{pre}turns", []):
            lines.append(f"  chat ({mode}) Q: {turn['question']}\n  chat ({mode}) A: {turn['answer']}")
    lines += [f"stage time total: {summary['stage_seconds_total']:.1f}s; "
              f"this run: {summary['wall_seconds_this_run']:.1f}s",
              "", "artefacts:"]
    width = max([len(k) for k in summary["artifacts"]] + [len("summary")]) + 2
    lines += [f"  {k:<{width}}{v}" for k, v in summary["artifacts"].items()]
    lines.append(f"  {'summary':<{width}}{Path(summary['out_dir']) / SUMMARY_FILE}")
    return "\n".join(lines)
