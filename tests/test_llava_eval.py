"""Generative evaluation: answers parsed back to sub-streets and scored like AddressCLIP."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from _fixtures_llava import SUBS, make_clip_dir, make_dataset
from data_gen.contract import read_addresses, read_manifest
from llava_address.llava.build import build_llava
from llava_address.llava.evaluate import evaluate_generative, score_answers, seed_table
from llava_address.llava.generate import CONSTRAINED_ANSWER, AnswerTrie, LlavaAddressAssistant
from llava_address.llava.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import eval_llava  # noqa: E402


def test_score_answers_honest_levels(tmp_path):
    data = make_dataset(tmp_path / "d", per_sub=1)
    vocab = read_addresses(data)
    truth = [SUBS[0][1], SUBS[1][1], SUBS[2][1], SUBS[3][1], SUBS[3][1]]
    answers = [f"This photo was taken on {SUBS[0][1]}.",       # exact -> SSA and SA
               f"It is {SUBS[0][1]}.",                          # wrong block, right street -> SA only
               "Somewhere on Oak Rd.",                          # street only -> SA only, never SSA
               "no idea",                                       # unparsed -> wrong
               "It is Elm St betwen Oak Rd and Pine Way."]      # near spelling of the truth -> SSA, not "valid"
    metrics, parsed = score_answers(answers, truth, vocab, [60.0, 60.01, 60.02, 60.03, 60.03], [24.0] * 5)
    assert [p.kind for p in parsed] == ["exact", "exact", "street", "none", "fuzzy"]
    assert [p.sub_street for p in parsed] == [SUBS[0][1], SUBS[0][1], None, None, SUBS[3][1]]
    assert parsed[2].street == "Oak Rd"
    assert metrics["SSA-1"] == pytest.approx(2 / 5) and metrics["SA-1"] == pytest.approx(4 / 5)
    assert metrics["valid_address_rate"] == pytest.approx(2 / 5)
    assert metrics["full_address_rate"] == pytest.approx(3 / 5)
    assert metrics["street_only_rate"] == pytest.approx(1 / 5) and metrics["unparsed_rate"] == pytest.approx(1 / 5)
    assert metrics["n_images"] == 5
    assert metrics["median_error_m"] == pytest.approx(0.0, abs=1.0)  # 2 of 3 full answers hit their midpoint
    assert math.isfinite(metrics["mean_error_m"]) and metrics["mean_error_m"] > 300  # one block off (~1.1 km)


def test_score_answers_always_true_and_empty(tmp_path):
    vocab = read_addresses(make_dataset(tmp_path / "d", per_sub=1))
    truth = [s for _, s in SUBS] * 2
    right, _ = score_answers([f"The address is {t}." for t in truth], truth, vocab)
    assert right["SSA-1"] == right["SA-1"] == right["valid_address_rate"] == 1.0
    assert right["unparsed_rate"] == right["street_only_rate"] == 0.0
    assert math.isnan(right["median_error_m"])  # no GPS given: no distances
    empty, parsed = score_answers([""] * len(truth), truth, vocab)
    assert empty["SSA-1"] == empty["SA-1"] == empty["valid_address_rate"] == 0.0
    assert empty["unparsed_rate"] == 1.0 and {p.kind for p in parsed} == {"none"}
    with pytest.raises(ValueError, match="not in the vocabulary"):
        score_answers(["x"], ["Nowhere St"], vocab)
    with pytest.raises(ValueError, match="2 answers for 1 truths"):
        score_answers(["x", "y"], [truth[0]], vocab)


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
    rescored, parsed = score_answers([r["answer"] for r in rows], [r["truth"] for r in rows], read_addresses(data),
                                     [test.loc[r["image"], "lat"] for r in rows],
                                     [test.loc[r["image"], "lon"] for r in rows])
    assert [r["parsed"] for r in rows] == [p.sub_street for p in parsed]
    assert [r["kind"] for r in rows] == [p.kind for p in parsed]
    for key in ("SSA-1", "SA-1", "valid_address_rate", "street_only_rate", "unparsed_rate"):
        assert saved[key] == pytest.approx(rescored[key])
    direct = evaluate_generative(tmp_path / "export", data, max_new_tokens=6, max_samples=2)
    assert direct["n_images"] == 2
    assert eval_llava.main(["--export", str(tmp_path / "nope"), "--data", str(data)]) == 2


def _tiny_export(tmp_path):
    clip, data = make_clip_dir(tmp_path / "clip"), make_dataset(tmp_path / "data")
    tok = train_tokenizer([s for _, s in SUBS] * 10 + ["This photo was taken on"] * 10, vocab_size=300)
    torch.manual_seed(0)
    model, processor = build_llava(clip, "tiny", tok, tiny=dict(hidden_size=32, intermediate_size=64,
                                                                num_hidden_layers=1, num_attention_heads=2))
    model.save_pretrained(tmp_path / "export")
    processor.save_pretrained(tmp_path / "export")
    return tmp_path / "export", data


def test_constrained_decoding_yields_only_allowed_answers(tmp_path):
    export, data = _tiny_export(tmp_path)
    assistant = LlavaAddressAssistant.from_pretrained(export)
    images = sorted((data / "images").glob("*.png"))[:3]
    allowed = [[SUBS[0][1], SUBS[2][1]], [SUBS[3][1]], [s for _, s in SUBS]]
    answers = assistant.answer_batch(images, ["Where was this photo taken?"] * 3, max_new_tokens=2,
                                     allowed_addresses=allowed)
    for ans, ok in zip(answers, allowed):  # a random LM, yet every answer is one of the allowed sentences
        assert ans in {CONSTRAINED_ANSWER.format(address=a) for a in ok}, ans
    assert answers[1] == CONSTRAINED_ANSWER.format(address=SUBS[3][1])
    free = assistant.answer_batch(images[:1], ["Where was this photo taken?"], max_new_tokens=6)[0]
    assert free not in {CONSTRAINED_ANSWER.format(address=a) for _, a in SUBS}  # random LM unconstrained
    trie = AnswerTrie(assistant.processor.tokenizer, [SUBS[0][1]])
    assert trie.allowed([12345]) == [trie.eos]  # off the trie: end the answer
    with pytest.raises(ValueError, match="at least one"):
        AnswerTrie(assistant.processor.tokenizer, [])


def test_evaluate_constrained_plain_mode_names_real_addresses(tmp_path):
    export, data = _tiny_export(tmp_path)
    res = evaluate_generative(export, data, max_new_tokens=4, constrained=True)
    assert res["valid_address_rate"] == 1.0 and res["unparsed_rate"] == 0.0 and res["constrained"] is True
    with pytest.raises(ValueError, match="needs clip_dir"):
        evaluate_generative(export, data, candidates_k=3)


def test_seed_table_mean_std_over_demo_runs(tmp_path, capsys):
    runs = []
    for s, (clip, same, plain, grounded) in enumerate([(0.20, 0.21, 0.10, 0.22), (0.30, 0.29, 0.20, 0.28)]):
        d = tmp_path / f"s{s}" / "stages"
        d.mkdir(parents=True)
        (d / "clip_eval.json").write_text(json.dumps({"metrics": {"SSA-1": clip, "SA-1": clip + 0.1}}))
        (d / "llava_eval.json").write_text(json.dumps({"metrics": {
            "SSA-1": plain, "SA-1": 0.5, "valid_address_rate": 0.9, "street_only_rate": 0.05, "unparsed_rate": 0.05,
            "grounded_SSA-1": grounded, "grounded_valid_address_rate": 1.0, "grounded_clip_SSA-1": same,
            "conv_time_of_day_accuracy": 0.9 + s * 0.02, "conv_time_of_day_majority_rate": 0.3,
            "general_retention": 1.0, "general_base_right": 16, "general_tuned_right": 15 + s,
            "general_questions": 26}}))
        runs.append(str(tmp_path / f"s{s}"))
    assert eval_llava.main(["--seed-table", *runs]) == 0
    table = capsys.readouterr().out
    assert "| AddressCLIP (all test images) | 25.0 ± 7.1 | 35.0 ± 7.1 |" in table
    assert "| AddressCLIP (the LLaVA-evaluated images) | 25.0 ± 5.7 |" in table
    assert "| LLaVA plain | 15.0 ± 7.1 | 50.0 ± 0.0 | 90.0 ± 0.0 | 5.0 ± 0.0 | 5.0 ± 0.0 |" in table
    assert "| LLaVA grounded (top-5 in prompt) | 25.0 ± 4.2 |" in table
    # per run, against AddressCLIP on the same images: 22 >= 21 (1.05x) but 28 < 29 (0.97x)
    assert "| s0 | s1 | >= 1 x on every run | >= 1.05 x on every run |" in table
    assert "| LLaVA grounded (top-5 in prompt) | 22.0 (1.05x) | 28.0 (0.97x) | no | no |" in table
    assert "| AddressCLIP (all test images) | 20.0 | 30.0 | – | – |" in table
    assert "| time of day right vs caption | 91.0 ± 1.4 | majority class 30.0 ± 0.0 |" in table
    assert "base -> tuned per seed: 16 -> 15, 16 -> 16 (of 26)" in table
    # a run evaluated with eval_llava.py per mode (no demo marker) reads the same
    (tmp_path / "s1" / "stages" / "llava_eval.json").unlink()
    (tmp_path / "s1" / "llava_eval").mkdir()
    for mode, v in (("plain", 0.20), ("grounded", 0.28), ("grounded_rerank", 0.33)):
        (tmp_path / "s1" / "llava_eval" / f"eval_test_{mode}.json").write_text(json.dumps({"SSA-1": v, "split": "test",
                                                                                           "lambda": 0.1}))
    table = seed_table(runs)
    assert "| LLaVA grounded (top-5 in prompt) | 25.0 ± 4.2 |" in table
    assert "| AddressCLIP top-5 re-ranked by fusion, candidates in prompt | – | 33.0 (λ 0.1, 1.10x) | – | – |" in table
    with pytest.raises(SystemExit):
        eval_llava.main(["--data", "x"])  # --export missing


def test_verification_keeps_plausible_answers_else_addressclip_top1():
    from data_gen.qa.parse import ParsedAnswer
    from llava_address.llava.evaluate import verify_with_candidates

    cands = [[("A", 0.5), ("B", 0.3), ("C", 0.1)]] * 4
    parsed = [ParsedAnswer("exact", "B", "s"),    # 0.3 >= 0.5 * 0.5: kept
              ParsedAnswer("exact", "C", "s"),    # 0.1 < 0.25: AddressCLIP's top-1 instead
              ParsedAnswer("exact", "Z", "s"),    # not a candidate: top-1
              ParsedAnswer("none")]               # unparsed: top-1
    assert verify_with_candidates(parsed, cands) == ["B", "A", "A", "A"]
    assert verify_with_candidates(parsed[:2], cands[:2], ratio=0.1) == ["B", "C"]


def test_grounded_constrained_eval_answers_only_listed_candidates(tmp_path_factory):
    from _fixtures_app import tiny_app

    app = tiny_app(tmp_path_factory.mktemp("app"))
    out = tmp_path_factory.mktemp("ev") / "grounded.json"
    res = evaluate_generative(app.llava, app.data, max_samples=4, max_new_tokens=4, candidates_k=3,
                              clip_dir=app.clip, constrained=True, out_json=out)
    assert res["valid_address_rate"] == 1.0 and 0 <= res["clip_SSA-1"] <= res["clip_SSA-3"] <= 1
    assert 0 <= res["verified_SSA-1"] <= 1
    for row in json.loads(out.read_text())["answers"]:
        assert len(row["candidates"]) == 3 and row["parsed"] in {a for a, _ in row["candidates"]}


@pytest.mark.parametrize("kind", ["oracle", "mute"])
def test_an_oracle_scores_100_and_a_mute_model_0(tmp_path, monkeypatch, kind):
    """Through the public evaluate_generative: answers must reach the right images' labels."""
    from llava_address.llava.generate import LlavaAddressAssistant

    data = make_dataset(tmp_path / "d", per_sub=3)
    truth_of = {str(data / r.image): r.sub_street for r in read_manifest(data).itertuples()}

    class Stub:
        def answer_batch(self, images, questions, max_new_tokens=64, allowed_addresses=None):
            assert questions == ["Where was this photo taken?"] * len(images)
            if kind == "mute":
                return [""] * len(images)
            return [f"This photo was taken on {truth_of[str(p)]}." for p in images]

    monkeypatch.setattr(LlavaAddressAssistant, "from_pretrained", classmethod(lambda cls, d, **kw: Stub()))
    out = tmp_path / "eval.json"
    m = evaluate_generative(tmp_path / "export", data, batch_size=3, out_json=out)
    assert m["n_images"] == 4  # one test image per sub-street
    expected = 1.0 if kind == "oracle" else 0.0
    assert m["SSA-1"] == expected and m["SA-1"] == expected and m["full_address_rate"] == expected
    if kind == "oracle":
        # each test image lies 0.002 deg of longitude (at 60 N: ~111 m) from its sub-street's midpoint
        assert m["mean_error_m"] == pytest.approx(111.3, abs=1.0)
        assert m["median_error_m"] == pytest.approx(111.3, abs=1.0)
    else:
        assert math.isnan(m["mean_error_m"])
    saved = json.loads(out.read_text())
    assert [a["parsed"] for a in saved["answers"]] == ([a["truth"] for a in saved["answers"]] if kind == "oracle"
                                                       else [None] * 4)
