"""Vicuna v1 rendering and answer-only label masking (exact token spans), dataset skips."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionConfig

from _fixtures_llava import make_dataset
from llava_address.llava.build import make_processor
from llava_address.llava.chat_template import SYSTEM_PROMPT, llava_json_to_messages
from llava_address.llava.data import IGNORE_INDEX, LlavaCollator, LlavaJsonDataset
from llava_address.llava.tokenizer import train_tokenizer

CONV = [{"from": "human", "value": "<image>\nWhere was this photo taken?"},
        {"from": "gpt", "value": "This photo was taken on Main St between 1st Ave and 2nd Ave."},
        {"from": "human", "value": "Which street is that?"},
        {"from": "gpt", "value": "It is Main St."}]


@pytest.fixture(scope="module")
def processor():
    tok = train_tokenizer([t["value"] for t in CONV] * 20 + [SYSTEM_PROMPT] * 5, vocab_size=320)
    vision = CLIPVisionConfig(image_size=32, patch_size=16, hidden_size=32, num_attention_heads=2)
    improc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return make_processor(tok, improc, vision)


def test_template_renders_vicuna_v1(processor):
    text = processor.apply_chat_template(llava_json_to_messages(CONV, None), tokenize=False)
    assert text == ("<s>" + SYSTEM_PROMPT + " USER: <image>\nWhere was this photo taken? ASSISTANT: This photo was "
                    "taken on Main St between 1st Ave and 2nd Ave.</s>USER: Which street is that? ASSISTANT: "
                    "It is Main St.</s>")
    prompt = processor.apply_chat_template(llava_json_to_messages(CONV[:2], None)[:1], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt.endswith("USER: <image>\nWhere was this photo taken? ASSISTANT:")


def test_labels_are_exactly_the_answers(processor):
    tok = processor.tokenizer
    image = Image.new("RGB", (50, 40), (200, 30, 30))
    short = CONV[:2]
    batch = LlavaCollator(processor)([{"image": image, "conversations": CONV},
                                      {"image": image, "conversations": short}])
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape == labels.shape and batch["pixel_values"].shape == (2, 3, 32, 32)
    image_id = tok.convert_tokens_to_ids("<image>")
    assert (ids[0] == image_id).sum() == 4  # (32/16)^2 patches, CLS dropped ("default" strategy)
    assert ids[0, 0] == tok.bos_token_id and (ids[0] == tok.bos_token_id).sum() == 1
    # contiguous unmasked spans == " answer</s>" token ids, nothing else is learned
    for row, conv in zip(range(2), (CONV, short)):
        keep = (labels[row] != IGNORE_INDEX).nonzero().flatten().tolist()
        spans, cur = [], [keep[0]]
        for i in keep[1:]:
            if i == cur[-1] + 1:
                cur.append(i)
            else:
                spans.append(cur)
                cur = [i]
        spans.append(cur)
        answers = [t["value"] for t in conv if t["from"] == "gpt"]
        assert len(spans) == len(answers)
        for span, ans in zip(spans, answers):
            expect = tok(" " + ans, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            assert labels[row, span].tolist() == expect
            assert ids[row, span].tolist() == expect
    # padding (row 1 is shorter) is masked and attention-free
    pad = batch["attention_mask"][1] == 0
    assert pad.any() and (labels[1][pad] == IGNORE_INDEX).all()
    assert (labels[ids == image_id] == IGNORE_INDEX).all()


def test_collator_truncates_tail_only(processor):
    image = Image.new("RGB", (32, 32))
    full = LlavaCollator(processor)([{"image": image, "conversations": CONV}])
    cut = LlavaCollator(processor, max_length=40)([{"image": image, "conversations": CONV}])
    assert cut["input_ids"].shape[1] == 40
    assert torch.equal(cut["input_ids"][0], full["input_ids"][0, :40])


def test_bad_conversations_are_rejected_with_reason():
    with pytest.raises(ValueError, match="turn 1: expected 'assistant'"):
        llava_json_to_messages([CONV[0], CONV[0]], None)
    with pytest.raises(ValueError, match="complete human/gpt pairs"):
        llava_json_to_messages(CONV[:1], None)


def test_dataset_counts_skips(tmp_path):
    data = make_dataset(tmp_path / "d", per_sub=2)
    recs = json.loads((data / "qa" / "qa.json").read_text())
    recs.append({"id": "x", "image": "images/missing.png", "conversations": CONV})
    recs.append({"id": "y", "image": recs[0]["image"], "conversations": [CONV[1]]})
    recs.append("not a record")
    (data / "qa" / "bad.json").write_text(json.dumps(recs))
    ds = LlavaJsonDataset(data / "qa" / "bad.json", data, split="train")
    assert len(ds) == 4  # 4 sub-streets x 1 train image
    assert ds.skipped == {"missing image": 1, "bad conversation": 1, "malformed record": 1}
    item = ds[0]
    assert item["image"].mode == "RGB" and item["conversations"][0]["from"] == "human"
    with pytest.raises(ValueError, match="no usable records"):
        LlavaJsonDataset(data / "qa" / "bad.json", data, split="val")
    with pytest.raises(FileNotFoundError, match="LLaVA JSON not found"):
        LlavaJsonDataset(data / "nope.json", data)
