"""LLaVA training options: text-only LM warm-up, stage-1 'plain' template, extra stage-2 JSON, vision-tower
tuning, and the candidate-grounded chat session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _fixtures_llava import SUBS, make_clip_dir, make_dataset, tiny_overrides
from llava_address.common.config import ConfigError
from llava_address.llava.chat_template import PLAIN_TEMPLATE, SYSTEM_PROMPT
from llava_address.llava.config import load_llava_config
from llava_address.llava.data import LlavaCollator, LlavaJsonDataset
from llava_address.llava.train import PROJECTOR, _with_extra, apply_lora, freeze_for_stage, prepare_base

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "llava" / "llava_tiny.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava_opts")
    clip, data = make_clip_dir(root / "clip"), make_dataset(root / "data")
    cfg = load_llava_config(CONFIG, tiny_overrides(clip, data, root / "run") + ["warmup.max_steps=8", "warmup.lr=1e-2",
                                                                              "warmup.batch_size=8"])
    torch.manual_seed(0)
    return cfg, prepare_base(cfg), data


def test_warmup_trains_only_the_lm_once(run):
    from llava_address.llava.warmup import WARMUP_MARKER, warm_up_base

    cfg, base, _ = run
    before = load_file(str(base / "model.safetensors"))
    rec = warm_up_base(cfg, base)
    after = load_file(str(base / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("language_model" in k for k in changed) and any("lm_head" in k for k in changed)
    assert not any("vision_tower" in k or PROJECTOR in k for k in changed)
    assert rec["steps"] == 8 and rec["texts"] == 40  # 20 train dialogues in qa.json + 20 in align.json
    assert rec["last_loss"] < rec["first_loss"]
    assert json.loads((base / WARMUP_MARKER).read_text()) == rec
    assert warm_up_base(cfg, base) == rec  # marker: not trained twice
    assert load_file(str(base / "model.safetensors")).keys() == after.keys()


def test_warmup_is_tiny_only():
    with pytest.raises(ConfigError, match="tiny LM only"):
        load_llava_config(CONFIG, ["model.text=/models/vicuna-7b", "model.clip_dir=x", "data.dataset_dir=y"])


def test_plain_template_learns_only_the_caption(run):
    from transformers import AutoProcessor

    _, base, data = run
    processor = AutoProcessor.from_pretrained(base)
    ds = LlavaJsonDataset(data / "qa" / "align.json", data)
    batch = LlavaCollator(processor, 256, PLAIN_TEMPLATE)([ds[0]])
    tok = processor.tokenizer
    text = tok.decode(batch["input_ids"][0], skip_special_tokens=False)
    assert SYSTEM_PROMPT not in text and "Describe" not in text and "USER" not in text
    learned = tok.decode(batch["labels"][0][batch["labels"][0] != -100])
    assert learned == ds[0]["conversations"][1]["value"] + "\n"
    n_image = int((batch["input_ids"][0] == processor.tokenizer.convert_tokens_to_ids("<image>")).sum())
    assert n_image > 0 and bool((batch["labels"][0][batch["input_ids"][0] == tok.convert_tokens_to_ids("<image>")]
                                 == -100).all())


def test_vision_tower_options(run):
    from transformers import LlavaForConditionalGeneration

    cfg, base, _ = run
    model = LlavaForConditionalGeneration.from_pretrained(base)
    freeze_for_stage(model, 2, full_lm=True, vision="unfrozen")
    assert all(p.requires_grad for n, p in model.named_parameters() if "vision_tower" in n)
    freeze_for_stage(model, 1, vision="unfrozen")  # stage 1: projector only, whatever is asked
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        {n for n, _ in model.named_parameters() if PROJECTOR in n}
    sc = cfg.stage2.model_copy(update={"lora": True, "vision": "lora", "lora_r": 2, "lora_alpha": 4})
    freeze_for_stage(model, 2, vision="lora")
    peft_model = apply_lora(model, sc)
    tower_lora = [n for n, _ in peft_model.named_parameters() if "vision_tower" in n and "lora_" in n]
    lm_lora = [n for n, _ in peft_model.named_parameters() if "language_model" in n and "lora_" in n]
    assert tower_lora and lm_lora
    for bad, msg in ((["stage2.vision=lora", "stage2.lora=false"], "stage2.vision: lora needs"),
                     (["stage1.vision=unfrozen"], "stage1.vision"), (["stage2.template=plain"], "stage2.template")):
        with pytest.raises(ConfigError, match=msg):
            load_llava_config(CONFIG, [o for o in tiny_overrides(Path("c"), Path("d"), Path("o"))] + bad)


def test_extra_json_is_mixed_into_stage2(run, tmp_path):
    cfg, _, data = run
    img_dir = tmp_path / "general"
    (img_dir / "imgs").mkdir(parents=True)
    src = next((data / "images").glob("*.png"))
    (img_dir / "imgs" / "a.png").write_bytes(src.read_bytes())
    recs = [{"id": "g1", "image": "imgs/a.png", "conversations": [
                {"from": "human", "value": "<image>\nWhat colour dominates?"}, {"from": "gpt", "value": "Red."}]},
            {"id": "g2", "image": "imgs/missing.png", "conversations": [
                {"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Hello."}]}]
    (tmp_path / "general.json").write_text(json.dumps(recs))
    extra = json.dumps([{"path": str(tmp_path / "general.json"), "image_dir": str(img_dir)}])
    cfg = load_llava_config(None, [f"{k}={v}" for k, v in (("output_dir", cfg.output_dir),
                                                          ("model.clip_dir", cfg.model.clip_dir),
                                                          ("data.dataset_dir", cfg.data.dataset_dir))]
                            + [f"data.extra_json={extra}"])
    qa = LlavaJsonDataset(cfg.data.resolve(cfg.data.qa_json), cfg.data.dataset_dir, "train")
    mixed = _with_extra(qa, cfg)
    assert len(mixed) == len(qa) + 1 and mixed[len(qa)]["conversations"][1]["value"] == "Red."
    assert mixed.skipped == {"missing image": 1}


def test_grounded_chat_session_puts_candidates_in_the_first_question():
    from llava_address.app.chat_session import ChatSession
    from data_gen.qa.prompt import grounded_question

    class Echo:
        def __init__(self):
            self.seen = []

        def answer(self, image, question, history=None, max_new_tokens=64, streamer=None):
            self.seen.append(question)
            return f"This photo was taken on {SUBS[1][1]}."

    class Loc:
        def locate(self, images, candidates=None, k=5):
            return [[(SUBS[1][1], 0.6), (SUBS[0][1], 0.3)][:k]]

    from PIL import Image
    bot = Echo()
    session = ChatSession(bot, Loc(), k=2, grounded=True)
    session.set_image(Image.new("RGB", (8, 8)))
    session.ask("Where was this photo taken?")
    session.ask("Which street is it on?")
    assert bot.seen == [grounded_question("Where was this photo taken?", session.candidates), "Which street is it on?"]
    assert "1. " + SUBS[1][1] + " (0.60)" in bot.seen[0]
    plain = ChatSession(Echo(), Loc(), k=2)
    plain.set_image(Image.new("RGB", (8, 8)))
    plain.ask("Where was this photo taken?")
    assert plain.assistant.seen == ["Where was this photo taken?"]
