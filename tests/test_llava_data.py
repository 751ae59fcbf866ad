"""Vicuna v1 rendering and answer-only label masking (exact token spans), dataset skips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionConfig

from _fixtures_llava import label_spans, make_dataset
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
        spans = label_spans(labels[row])
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
    n = int((full["labels"][0] != IGNORE_INDEX).nonzero()[0]) + 3  # three tokens of the first answer stay
    cut = LlavaCollator(processor, max_length=n)([{"image": image, "conversations": CONV}])
    assert cut["input_ids"].shape[1] == n
    assert torch.equal(cut["input_ids"][0], full["input_ids"][0, :n])
    assert torch.equal(cut["labels"][0], full["labels"][0, :n]) and (cut["labels"][0] != IGNORE_INDEX).sum() == 3


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


def test_dialogues_cut_before_their_first_answer_are_skipped_and_counted(processor, tmp_path):
    from llava_address.llava.data import image_token_count, prompt_length

    image = Image.new("RGB", (32, 32))
    n_img = image_token_count(processor)
    assert n_img == 4
    full = LlavaCollator(processor)([{"image": image, "conversations": CONV}])
    first_answer = int((full["labels"][0] != IGNORE_INDEX).nonzero()[0])
    assert prompt_length(processor, CONV, n_img) == first_answer  # exact, not an estimate
    # the collator: a row with no answer token left is dropped; a batch with none left is an error
    collate = LlavaCollator(processor, max_length=first_answer + 1)
    long_q = [{"from": "human", "value": "<image>\n" + "Where was this photo taken? " * 30}, CONV[1]]
    batch = collate([{"image": image, "conversations": CONV}, {"image": image, "conversations": long_q}, None])
    assert batch["input_ids"].shape[0] == 1 and collate.dropped == 1
    assert batch["labels"][0, first_answer] != IGNORE_INDEX
    with pytest.raises(ValueError, match=f"no answer token within max_length={first_answer + 1}"):
        collate([{"image": image, "conversations": long_q}])
    with pytest.raises(ValueError, match="failed to decode"):
        collate([None])
    # the dataset: skipped up front, counted; nothing left is an error, never a train_loss of 0.0
    data = make_dataset(tmp_path / "d", per_sub=2)
    recs = json.loads((data / "qa" / "qa.json").read_text())
    recs[0]["conversations"] = long_q
    (data / "qa" / "long.json").write_text(json.dumps(recs))
    ds = LlavaJsonDataset(data / "qa" / "long.json", data, processor=processor, max_length=first_answer + 30)
    assert len(ds) == 3 and ds.skipped == {"answer beyond max_length": 1}
    with pytest.raises(ValueError, match="no usable records.*answer beyond max_length"):
        LlavaJsonDataset(data / "qa" / "long.json", data, processor=processor, max_length=8)


def test_corrupt_image_is_skipped_and_counted_not_a_crash(tmp_path):
    data = make_dataset(tmp_path / "d", per_sub=2)
    ds = LlavaJsonDataset(data / "qa" / "qa.json", data)
    path = data / ds.records[1]["image"]
    path.write_bytes(path.read_bytes()[:60])  # truncated PNG
    assert ds[1] is None and ds[1] is None  # every epoch, counted once
    assert ds.skipped == {"corrupt image": 1}
    assert ds[0]["image"].mode == "RGB"


def test_records_that_are_not_objects_are_counted_skips(tmp_path):
    from llava_address.llava.data import dialogue_texts

    data = make_dataset(tmp_path / "d", per_sub=2)
    recs = json.loads((data / "qa" / "qa.json").read_text())
    recs += [17, None, ["a", "list"], {"image": recs[0]["image"]}, {"image": 5, "conversations": CONV},
             {"image": recs[0]["image"], "conversations": "hello"},
             {"image": recs[0]["image"], "conversations": ["not a turn", 3]}]
    (data / "qa" / "junk.json").write_text(json.dumps(recs))
    ds = LlavaJsonDataset(data / "qa" / "junk.json", data)
    assert len(ds) == 4 and ds.skipped == {"malformed record": 6, "bad conversation": 1}
    texts = dialogue_texts(recs)  # the tokenizer corpus: junk left out, no AttributeError
    assert len(texts) == 9 * 4  # 8 records + the one with a bad "image" but good turns
    assert texts[1] == "This photo was taken on Main St between 1st Ave and 2nd Ave."


def test_training_whose_answers_are_all_cut_stops_with_a_reason(tmp_path, capsys):
    """Never a `train_loss 0.0` run that overwrites the export: stage 2 refuses before training."""
    import importlib.util

    from _fixtures_llava import make_clip_dir, tiny_overrides

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("train_llava_script", root / "scripts" / "train_llava.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    clip, data, out = make_clip_dir(tmp_path / "clip"), make_dataset(tmp_path / "data", per_sub=2), tmp_path / "run"
    sets = tiny_overrides(clip, data, out) + ["data.max_length=32", "stage2.without_stage1=true"]
    rc = script.main(["--config", str(root / "configs/llava/llava_tiny.yaml"), "--stage", "2"]
                     + [a for s in sets for a in ("--set", s)])
    err = capsys.readouterr().err
    assert rc == 2 and "no usable records" in err and "'answer beyond max_length': 4" in err
    assert not (out / "export").exists() and not (out / "stage2" / "run.json").exists()


def test_collator_pads_without_library_warnings(processor, monkeypatch):
    """A saved tokenizer may carry a max_length init kwarg (the demo's does, from the warm-up):
    padding to the longest must not make transformers warn on every batch."""
    import warnings

    monkeypatch.setitem(processor.tokenizer.init_kwargs, "max_length", 256)
    short = CONV[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = LlavaCollator(processor)([{"image": Image.new("RGB", (32, 32)), "conversations": CONV},
                                          {"image": Image.new("RGB", (32, 32)), "conversations": short}])
    assert batch["input_ids"].shape[0] == 2 and (batch["attention_mask"][1] == 0).any()  # padded, not cut
