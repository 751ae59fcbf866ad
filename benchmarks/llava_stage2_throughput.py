"""Stage-2 training throughput (samples/s, tokens/s) of our trainer against a plain ``transformers.Trainer`` + peft
run on the same model, data and batch, in one run; then answers/s of the assistant (plain and grounded prompts).

    python benchmarks/llava_stage2_throughput.py --demo outputs/demo [--steps 6] [--batch 8] [--answers 32]

Both training rows start from the demo's assembled base (``<demo>/llava/base``, SmolLM2 + AddressCLIP tower),
its stage-1 projector and its stage-2 dialogues, with the LoRA settings of the demo's LLaVA config. The
plain row is what a transformers user writes: ``get_peft_model`` + ``Trainer`` with the same collator and the
default random sampler; ours adds the length-grouped batches, the sparse-logits loss and the projector's
own learning rate (as the config sets them). Tokens
are the non-padding tokens the model saw (image tokens included). The first step of each row is warm-up
and not timed. Goal: ours >= 1.0x the plain run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transformers import AutoProcessor, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from llava_address.app.demo_config import load_demo_config  # noqa: E402
from llava_address.llava.config import load_llava_config  # noqa: E402
from llava_address.llava.data import LlavaCollator, LlavaJsonDataset  # noqa: E402


class _Clock(TrainerCallback):
    """Wall time and real tokens of every step after the first."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.steps = 0

    def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
        if state.global_step == 1:
            self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
        if state.global_step > 1:
            self.steps += 1
        self.t1 = time.perf_counter()


class _CountingCollator(LlavaCollator):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.tokens: list[int] = []
        self.padded: list[int] = []

    def __call__(self, batch):
        out = super().__call__(batch)
        self.tokens.append(int(out["attention_mask"].sum()))
        self.padded.append(int(out["attention_mask"].numel()))
        return out


def _row(name: str, clock: _Clock, coll: _CountingCollator, batch: int) -> dict:
    seconds = clock.t1 - clock.t0
    toks = sum(coll.tokens[1:1 + clock.steps])
    padded = sum(coll.padded[1:1 + clock.steps])
    return {"run": name, "steps": clock.steps, "seconds": seconds, "samples_per_s": clock.steps * batch / seconds,
            "tokens_per_s": toks / seconds, "padding": 1 - toks / max(padded, 1)}


def train_rows(demo: Path, steps: int, batch: int) -> list[dict]:
    from peft import LoraConfig, get_peft_model

    from llava_address.llava import train as T

    dc = load_demo_config(ROOT / "configs" / "demo.yaml")
    cfg = load_llava_config(ROOT / dc.llava.config, [f"output_dir={demo / 'llava'}", f"model.clip_dir={demo / 'clip/model'}",
                                              f"data.dataset_dir={demo / 'data'}",
                                              f"data.qa_json={(demo / 'qa/qa.json').resolve()}",
                                              f"data.align_json={(demo / 'qa/align.json').resolve()}"])
    sc = cfg.stage2
    base = demo / "llava" / "base"
    processor = AutoProcessor.from_pretrained(base, local_files_only=True)
    dataset = LlavaJsonDataset(cfg.data.resolve(cfg.data.qa_json), cfg.data.dataset_dir, "train",
                               processor=processor, max_length=cfg.data.max_length)
    rows = []
    for name in ("plain Trainer + peft", "ours (llava_address.llava.train)"):
        torch.manual_seed(0)
        model = T._load_model(cfg, 2, sc, base)
        T.freeze_for_stage(model, 2, False, "frozen")
        ours = name.startswith("ours")
        if ours:
            model = T.apply_lora(model, sc)
        else:
            model = get_peft_model(model, LoraConfig(r=sc.lora_r, lora_alpha=sc.lora_alpha, lora_dropout=sc.lora_dropout,
                                                     target_modules=sc.lora_target, modules_to_save=[T.PROJECTOR],
                                                     task_type="CAUSAL_LM"))
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch, max_steps=steps + 1,
                                     learning_rate=sc.lr, report_to=[], remove_unused_columns=False, save_strategy="no",
                                     logging_steps=10**6, dataloader_pin_memory=False, seed=0,
                                     train_sampling_strategy="group_by_length" if ours and sc.group_by_length
                                     else "random")
            coll, clock = _CountingCollator(processor, cfg.data.max_length), _Clock()
            cls = T.ProjectorLrTrainer if ours else Trainer
            kw = {"projector_lr": sc.projector_lr, "sparse_logits": sc.sparse_logits} if ours else {}
            trainer = cls(model=model, args=args, train_dataset=dataset, data_collator=coll, callbacks=[clock], **kw)
            trainer.train()
        rows.append(_row(name, clock, coll, batch))
        print(rows[-1], flush=True)
    return rows


def answer_rows(demo: Path, n: int) -> list[dict]:
    from data_gen.contract import read_manifest
    from data_gen.qa.prompt import grounded_question
    from llava_address.llava.generate import LlavaAddressAssistant

    assistant = LlavaAddressAssistant.from_pretrained(demo / "llava" / "export")
    test = read_manifest(demo / "data", "test").head(n)
    images = [demo / "data" / p for p in test["image"]]
    rows = []
    cands = [(a, 0.2) for a in test["sub_street"].head(5)]
    for name, q in (("answers, plain prompt", "Where was this photo taken?"),
                    ("answers, grounded prompt (5 candidates)", grounded_question("Where was this photo taken?", cands))):
        t0 = time.perf_counter()
        for lo in range(0, len(images), 16):
            assistant.answer_batch(images[lo:lo + 16], [q] * len(images[lo:lo + 16]), max_new_tokens=24)
        rows.append({"run": name, "answers": len(images), "answers_per_s": len(images) / (time.perf_counter() - t0)})
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", default="outputs/demo", help="a finished demo folder (llava/base, qa/, data/)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per training row (after 1 warm-up step)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--answers", type=int, default=32, help="test photos answered per answer row")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    demo = Path(a.demo)
    rows = train_rows(demo, a.steps, a.batch)
    print("\n| stage-2 run | steps | samples/s | tokens/s | padding |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['steps']} | {r['samples_per_s']:.2f} | {r['tokens_per_s']:.0f} | {r['padding']:.0%} |")
    print(f"\nours / plain: {rows[1]['samples_per_s'] / rows[0]['samples_per_s']:.2f}x samples/s")
    ans = answer_rows(demo, a.answers)
    print("\n| generation | answers | answers/s |\n|---|---|---|")
    for r in ans:
        print(f"| {r['run']} | {r['answers']} | {r['answers_per_s']:.2f} |")


if __name__ == "__main__":
    main()
