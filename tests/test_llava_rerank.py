"""Fusion re-ranking: LLaVA's answer log-likelihood is the chat-template span score; lambda = 0 is AddressCLIP."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _fixtures_llava import SUBS, make_clip_dir, make_dataset
from data_gen.qa.prompt import grounded_question
from llava_address.llava.build import build_llava
from llava_address.llava.chat_template import history_to_messages
from llava_address.llava.generate import CONSTRAINED_ANSWER, AnswerTrie, LlavaAddressAssistant
from llava_address.llava.rerank import (answer_logprobs, fit_lambda, fused_scores, load_rerank, rerank,
                                        save_rerank, RerankSettings)
from llava_address.llava.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import eval_llava  # noqa: E402

ADDRS = [s for _, s in SUBS]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerank")
    clip, data = make_clip_dir(root / "clip"), make_dataset(root / "data", per_sub=3)
    tok = train_tokenizer(ADDRS * 10 + ["This photo was taken on", "AddressCLIP candidates"] * 10, vocab_size=300)
    torch.manual_seed(0)
    model, processor = build_llava(clip, "tiny", tok, tiny=dict(hidden_size=32, intermediate_size=64,
                                                                num_hidden_layers=2, num_attention_heads=2))
    model.save_pretrained(root / "export")
    processor.save_pretrained(root / "export")
    return LlavaAddressAssistant.from_pretrained(root / "export"), root / "export", clip, data


def _generated_logprob(assistant, image, question, address) -> float:
    """Sum of the per-step log-probs of the answer that constrained generation emits for one allowed address."""
    proc, model = assistant.processor, assistant.model
    image = Image.open(image).convert("RGB")
    inputs = proc.apply_chat_template([history_to_messages(image, question, None)], add_generation_prompt=True,
                                      tokenize=True, return_dict=True, return_tensors="pt")
    trie = AnswerTrie(proc.tokenizer, [address])
    n = inputs["input_ids"].shape[1]
    out = model.generate(**inputs, max_new_tokens=64, do_sample=False, output_logits=True,
                         return_dict_in_generate=True,
                         prefix_allowed_tokens_fn=lambda b, ids: trie.allowed(ids[n:].tolist()))
    new = out.sequences[0, n:]
    assert proc.decode(new, skip_special_tokens=True).strip() == CONSTRAINED_ANSWER.format(address=address)
    steps = torch.stack(out.logits, dim=1)[0].float().log_softmax(-1)  # raw logits, before the constraint
    return float(steps.gather(-1, new[:, None]).sum())


def test_answer_logprob_is_the_sum_of_the_generated_span_token_logprobs(tiny):
    assistant, _, _, data = tiny
    images = sorted((data / "images").glob("*.png"))[:2]
    cands = [(a, 0.25) for a in ADDRS]
    questions = ["Where was this photo taken?", grounded_question("Where was this photo taken?", cands[:3])]
    answers = [[CONSTRAINED_ANSWER.format(address=a) for a in ADDRS], [CONSTRAINED_ANSWER.format(address=ADDRS[2])]]
    # one batched forward over 5 rows of different lengths (right padding) ...
    batched = answer_logprobs(assistant, images, questions, answers, batch_size=8)
    assert [len(b) for b in batched] == [4, 1]
    # ... equals, row by row, the log-probs that step-by-step generation assigns to the same tokens
    for img, q, lps, addrs in ((images[0], questions[0], batched[0], ADDRS), (images[1], questions[1], batched[1],
                                                                              [ADDRS[2]])):
        for lp, a in zip(lps, addrs):
            assert lp < 0 and lp == pytest.approx(_generated_logprob(assistant, img, q, a), abs=1e-4)
    # batch size does not change the numbers; the image matters
    again = answer_logprobs(assistant, images, questions, answers, batch_size=1)
    np.testing.assert_allclose(np.concatenate(again), np.concatenate(batched), atol=1e-5)
    other = answer_logprobs(assistant, images[::-1][:1], questions[:1], answers[:1])[0]
    assert not np.allclose(other, batched[0])
    with pytest.raises(ValueError, match="2 images, 1 questions"):
        answer_logprobs(assistant, images, questions[:1], answers)


def test_lambda_zero_is_addressclip_and_the_fit_prefers_it_on_ties(tiny):
    assistant, _, _, data = tiny
    images = sorted((data / "images").glob("*.png"))[:3]
    cands = [[(ADDRS[2], 0.5), (ADDRS[0], 0.3), (ADDRS[1], 0.2)],
             [(ADDRS[3], 0.4), (ADDRS[1], 0.4), (ADDRS[0], 0.2)],   # a tie: AddressCLIP's order is kept
             [(ADDRS[1], 0.9), (ADDRS[3], 0.1)]]
    zero = rerank(assistant, images, ["Where was this photo taken?"] * 3, cands, lam=0.0)
    assert [[r.address for r in rows] for rows in zero] == [[a for a, _ in c] for c in cands]
    for rows, c in zip(zero, cands):
        assert [r.fused for r in rows] == pytest.approx([math.log(p) for _, p in c])
    big = rerank(assistant, images, ["Where was this photo taken?"] * 3, cands, lam=1e6)  # LLaVA alone decides
    for rows in big:
        assert [r.llava_logp for r in rows] == sorted((r.llava_logp for r in rows), reverse=True)

    clip = np.array([[0.6, 0.3, 0.1]] * 4)
    llava = np.array([[-9.0, -1.0, -5.0], [-9.0, -1.0, -5.0], [-1.0, -9.0, -5.0], [-1.0, -9.0, -5.0]])
    helps = np.array([1, 1, 0, -1])  # LLaVA fixes two, breaks none
    lam, curve = fit_lambda(clip, llava, helps, criterion="accuracy")
    assert curve[0.0] == 0.25 and curve[lam] == 0.75 and lam == min(k for k, v in curve.items() if v == 0.75)
    assert 0 < lam <= 1.0 and fused_scores(clip, llava, lam).argmax(1).tolist() == [1, 1, 0, 0]
    lam, nll = fit_lambda(clip, llava, helps)  # maximum likelihood of the truth under softmax(fused)
    q = np.exp(fused_scores(clip, llava, lam)[:3])
    q /= q.sum(1, keepdims=True)
    assert nll[lam] == pytest.approx(-np.mean(np.log(q[[0, 1, 2], [1, 1, 0]]))) and nll[lam] < nll[0.0] and lam > 0
    assert nll[0.0] == pytest.approx(-np.mean(np.log([0.3, 0.3, 0.6])))  # lambda = 0: AddressCLIP's probabilities
    against = np.array([[-9.0, -1.0, -5.0]] * 4)  # LLaVA always prefers a wrong candidate: AddressCLIP stays
    for criterion in ("accuracy", "nll"):
        lam, curve = fit_lambda(clip, against, np.array([0, 0, 0, 0]), criterion=criterion)
        assert lam == 0.0
    assert fit_lambda(clip, llava, np.array([-1] * 4))[0] == 0.0  # no listed truth: nothing to fit
    with pytest.raises(ValueError, match="criterion"):
        fit_lambda(clip, llava, helps, criterion="best")
    assert fused_scores(clip, llava, math.inf).tolist() == llava.tolist()


def test_eval_rerank_fits_on_val_saves_and_reproduces_addressclip_at_zero(tmp_path_factory, capsys):
    import shutil

    from _fixtures_app import tiny_app

    app = tiny_app(tmp_path_factory.mktemp("app"))
    tmp_path = tmp_path_factory.mktemp("rr")
    export = tmp_path / "export"
    shutil.copytree(app.llava, export)  # rerank.json is written beside the export
    base = ["--export", str(export), "--data", str(app.data), "--clip", str(app.clip), "--candidates", "3",
            "--max-samples", "6", "--rerank"]
    out = tmp_path / "rr.json"
    assert eval_llava.main(base + ["grounded", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["n_images"] == 6 and saved["valid_address_rate"] == 1.0 and saved["grounded"] is True
    assert saved["fit"]["split"] == "val" and saved["fit"]["n_images"] == 6 and len(saved["fit_answers"]) == 6
    assert saved["fit"]["criterion"] == "nll" and str(saved["lambda"]) in saved["fit"]["nll_curve"]
    assert saved["fit"]["lambda_curve"][str(saved["lambda"])] == saved["fit"]["SSA-1"]
    settings = load_rerank(export, grounded=True)
    assert settings.lam == saved["lambda"] and settings.k == 3
    for row in saved["answers"]:   # the answer is the candidate with the best fused score
        lam = saved["lambda"]
        best = max(row["candidates"], key=lambda c: math.log(c[1]) + lam * c[2])
        assert row["parsed"] == best[0]
    with pytest.raises(FileNotFoundError, match="--rerank plain"):
        load_rerank(export, grounded=False)
    every = base[:7] + ["48", *base[8:]]  # all 48 sub-streets listed: every truth is, so the NLL is defined
    assert eval_llava.main(every + ["plain", "--out", str(out)]) == 0
    nll = json.loads(out.read_text())["fit"]["nll_curve"]
    lam = json.loads(out.read_text())["lambda"]
    assert all(v is not None for v in nll.values()) and nll[str(lam)] == min(nll.values())
    assert eval_llava.main(base + ["plain", "--fit-criterion", "accuracy", "--out", str(out)]) == 0
    acc = json.loads(out.read_text())["fit"]
    assert acc["SSA-1"] >= acc["clip_SSA-1"] and acc["SSA-1"] == max(acc["lambda_curve"].values())  # 0 is in the grid
    capsys.readouterr()
    assert eval_llava.main(base + ["plain", "--rerank-lambda", "0", "--out", str(out)]) == 0
    zero = json.loads(out.read_text())
    assert zero["lambda"] == 0.0 and zero["fit"]["split"] is None and zero["SSA-1"] == zero["clip_SSA-1"]
    assert [r["parsed"] for r in zero["answers"]] == [r["candidates"][0][0] for r in zero["answers"]]
    save_rerank(export, RerankSettings(0.25, 3, False))  # the other mode's entry stays
    assert load_rerank(export, False).lam == 0.25 and load_rerank(export, True).lam == saved["lambda"]
    no_clip = ["--export", str(export), "--data", str(app.data), "--rerank", "plain"]
    assert eval_llava.main(no_clip) == 2
    assert "needs --clip" in capsys.readouterr().err


def test_chat_session_rerank_answers_the_fused_top1(monkeypatch):
    """ChatSession with a lambda: the first answer names the fused top-1 without generating; later turns generate."""
    from llava_address.app.chat_session import ChatSession

    class Loc:
        def locate(self, images, candidates=None, k=5):
            return [[(ADDRS[0], 0.6), (ADDRS[1], 0.4)]]

    class Stub:  # LLaVA that strongly prefers the second candidate's answer
        def __init__(self):
            self.generated = 0

        def answer(self, image, question, history=None, max_new_tokens=64, streamer=None):
            self.generated += 1
            return "It is Main St."

    def fake_rerank(assistant, images, questions, candidates, lam):
        from llava_address.llava.rerank import RankedCandidate

        rows = [RankedCandidate(a, math.log(p) + lam * lp, math.log(p), lp)
                for (a, p), lp in zip(candidates[0], (-5.0, -1.0))]
        return [sorted(rows, key=lambda r: -r.fused)]

    monkeypatch.setattr("llava_address.llava.rerank.rerank", fake_rerank)
    for lam, expected in ((0.0, ADDRS[0]), (1.0, ADDRS[1])):
        stub = Stub()
        s = ChatSession(stub, Loc(), k=2, rerank_lambda=lam)
        s.set_image(Image.new("RGB", (16, 16)))
        assert s.ask("Where was this photo taken?") == CONSTRAINED_ANSWER.format(address=expected)
        assert stub.generated == 0 and s.reranked[0].address == expected and s.answer_address(0) == expected
        assert s.ask("Which street is it on?") == "It is Main St." and stub.generated == 1
