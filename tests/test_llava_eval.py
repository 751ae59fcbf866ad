"""Generative evaluation: answers parsed back to sub-streets and scored like AddressCLIP."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from _fixtures_llava import SUBS, make_clip_dir, make_dataset
from data_gen.contract import read_addresses, read_manifest
from llava_address.llava.build import build_llava
from llava_address.llava.evaluate import evaluate_generative, score_answers
from llava_address.llava.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import eval_llava  # noqa: E402


def test_score_answers_levels(tmp_path):
    data = make_dataset(tmp_path / "d", per_sub=1)
    vocab = read_addresses(data)
    truth = [SUBS[0][1], SUBS[1][1], SUBS[2][1], SUBS[3][1]]
    answers = [f"This photo was taken on {SUBS[0][1]}.",       # exact -> SSA and SA
               f"It is {SUBS[0][1]}.",                          # wrong block, right street -> SA only
               "Somewhere on Oak Rd.",                          # street only -> its first block == truth
               "no idea"]                                       # unparsed -> wrong
    metrics, preds = score_answers(answers, truth, [60.0, 60.01, 60.02, 60.03], [24.0] * 4, vocab)
    assert preds == [SUBS[0][1], SUBS[0][1], SUBS[2][1], None]
    assert metrics["SSA-1"] == pytest.approx(2 / 4) and metrics["SA-1"] == pytest.approx(3 / 4)
    assert metrics["parsed_rate"] == pytest.approx(3 / 4) and metrics["n_images"] == 4
    assert metrics["median_error_m"] == pytest.approx(0.0, abs=1.0)  # 2 of 3 parsed hit their midpoint
    assert math.isfinite(metrics["mean_error_m"]) and metrics["mean_error_m"] > 300  # one block off (~1.1 km)


def test_evaluate_generative_on_an_export(tmp_path):
    clip, data = make_clip_dir(tmp_path / "clip"), make_dataset(tmp_path / "data")
    tok = train_tokenizer([s for _, s in SUBS] * 10 + ["This photo was taken on"] * 10, vocab_size=300)
    model, processor = build_llava(clip, "tiny", tok, tiny=dict(hidden_size=32, intermediate_size=64,
                                                                num_hidden_layers=1, num_attention_heads=2))
    model.save_pretrained(tmp_path / "export")
    processor.save_pretrained(tmp_path / "export")
    out = tmp_path / "eval.json"
    assert eval_llava.main(["--export", str(tmp_path / "export"), "--data", str(data), "--max-new-tokens", "6",
                            "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["n_images"] == 4 and len(saved["answers"]) == 4 and saved["split"] == "test"
    # the file's numbers are the scoring of its own answers
    test = read_manifest(data, "test").set_index("image")
    rows = saved["answers"]
    rescored, parsed = score_answers([r["answer"] for r in rows], [r["truth"] for r in rows],
                                     [test.loc[r["image"], "lat"] for r in rows],
                                     [test.loc[r["image"], "lon"] for r in rows], read_addresses(data))
    assert [r["parsed"] for r in rows] == parsed
    for key in ("SSA-1", "SA-1", "parsed_rate"):
        assert saved[key] == pytest.approx(rescored[key])
    direct = evaluate_generative(tmp_path / "export", data, max_new_tokens=6, max_samples=2)
    assert direct["n_images"] == 2
    assert eval_llava.main(["--export", str(tmp_path / "nope"), "--data", str(data)]) == 2


@pytest.mark.parametrize("kind", ["oracle", "mute"])
def test_an_oracle_scores_100_and_a_mute_model_0(tmp_path, monkeypatch, kind):
    """Through the public evaluate_generative: answers must reach the right images' labels."""
    from llava_address.llava.generate import LlavaAddressAssistant

    data = make_dataset(tmp_path / "d", per_sub=3)
    truth_of = {str(data / r.image): r.sub_street for r in read_manifest(data).itertuples()}

    class Stub:
        def answer_batch(self, images, questions, max_new_tokens=64):
            assert questions == ["Where was this photo taken?"] * len(images)
            if kind == "mute":
                return [""] * len(images)
            return [f"This photo was taken on {truth_of[str(p)]}." for p in images]

    monkeypatch.setattr(LlavaAddressAssistant, "from_pretrained", classmethod(lambda cls, d, **kw: Stub()))
    out = tmp_path / "eval.json"
    m = evaluate_generative(tmp_path / "export", data, batch_size=3, out_json=out)
    assert m["n_images"] == 4  # one test image per sub-street
    expected = 1.0 if kind == "oracle" else 0.0
    assert m["SSA-1"] == expected and m["SA-1"] == expected and m["parsed_rate"] == expected
    if kind == "oracle":
        # each test image lies 0.002 deg of longitude (at 60 N: ~111 m) from its sub-street's midpoint
        assert m["mean_error_m"] == pytest.approx(111.3, abs=1.0)
        assert m["median_error_m"] == pytest.approx(111.3, abs=1.0)
    else:
        assert math.isnan(m["mean_error_m"])
    saved = json.loads(out.read_text())
    assert [a["parsed"] for a in saved["answers"]] == ([a["truth"] for a in saved["answers"]] if kind == "oracle"
                                                       else [None] * 4)
