"""Chat CLI (scripts/chat.py main), ChatSession, map drawing and the web backend on tiny models."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _fixtures_app import REPO, noise_photo, tiny_app

CAND_LINE = re.compile(r"^\s+(\d+)\.\s+(\d\.\d{3})\s+(\S.*)$")


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return tiny_app(tmp_path_factory.getbasetemp() / "tiny_app")


@pytest.fixture(scope="module")
def chat_main():
    return _load_script("chat").main


@pytest.fixture(scope="module")
def vocab(app):
    from data_gen.contract import read_addresses

    return read_addresses(app.data)


def _args(app, image, *extra):
    return ["--image", str(image), "--model", str(app.llava), "--clip", str(app.clip), *extra]


def test_one_shot_answer_and_candidates(app, chat_main, vocab, tmp_path, capsys):
    photo = noise_photo(tmp_path / "street.png")
    rc = chat_main(_args(app, photo, "--question", "Where was this photo taken?", "--candidates", "3",
                         "--max-new-tokens", "8"))
    out = capsys.readouterr().out
    assert rc == 0
    assert "Q: Where was this photo taken?" in out
    answer = [ln for ln in out.splitlines() if ln.startswith("A: ")]
    assert len(answer) == 1
    cands = [CAND_LINE.match(ln) for ln in out.splitlines()]
    cands = [m for m in cands if m]
    assert [int(m.group(1)) for m in cands] == [1, 2, 3]
    scores = [float(m.group(2)) for m in cands]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert all(m.group(3) in vocab.sub_street for m in cands)


def test_repl_follow_up_switch_image_and_quit(app, chat_main, tmp_path, capsys, monkeypatch):
    first, second = noise_photo(tmp_path / "a.jpg", seed=1), noise_photo(tmp_path / "b.png", seed=2)
    monkeypatch.setattr(sys, "stdin", io.StringIO(
        f"Which street?\n/image {tmp_path / 'missing.jpg'}\n/image {second}\nAnd now?\n/bogus\n/quit\nnever asked\n"))
    rc = chat_main(_args(app, first, "--candidates", "2", "--max-new-tokens", "4"))
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("A: ") == 2  # one answer per question, none after /quit
    assert "Q: Which street?" in out and "Q: And now?" in out and "never asked" not in out
    assert "error: image file not found" in out  # a bad /image keeps the chat alive
    assert f"now talking about {second}" in out
    assert "unknown command '/bogus'" in out


def test_unreadable_image_is_a_clean_error(app, chat_main, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    rc = chat_main(_args(app, bad, "--question", "hi"))
    err = capsys.readouterr().err
    assert rc == 2
    assert "broken.jpg is not a readable image" in err and "Traceback" not in err


def test_missing_image_and_missing_model(app, chat_main, tmp_path, capsys):
    assert chat_main(_args(app, tmp_path / "nope.png", "--question", "hi")) == 2
    assert "image file not found" in capsys.readouterr().err
    photo = noise_photo(tmp_path / "x.png")
    rc = chat_main(["--image", str(photo), "--model", str(tmp_path / "no_model"), "--question", "hi"])
    err = capsys.readouterr().err
    assert rc == 2 and "LLaVA model not found" in err and "no_model" in err
    rc = chat_main(["--image", str(photo), "--model", str(app.llava), "--clip", str(tmp_path / "no_clip"),
                    "--question", "hi"])
    assert rc == 2 and "AddressCLIP model not found" in capsys.readouterr().err


def test_session_history_streaming_and_limits(app, tmp_path):
    from llava_address.app.chat_session import ChatSession, ImageInputError, load_assistant, load_locator

    session = ChatSession(load_assistant(app.llava), load_locator(app.clip), k=4, max_new_tokens=6)
    with pytest.raises(ImageInputError, match="no image loaded"):
        session.ask("where?")
    cands = session.set_image(noise_photo(tmp_path / "p.png"))
    assert len(cands) == 4 and session.predicted_address() == cands[0][0]
    chunks = list(session.ask_stream("Where was this photo taken?"))
    assert "".join(chunks).strip() == session.history[0][1]
    session.ask("Which street?")
    assert [q for q, _ in session.history] == ["Where was this photo taken?", "Which street?"]
    session.set_image(Image.new("RGB", (30, 20), "gray"))
    assert session.history == []
    tight = ChatSession(session.assistant, None, k=0, max_image_bytes=100)
    with pytest.raises(ImageInputError, match="limit is"):
        tight.set_image(noise_photo(tmp_path / "big.png", size=64))


def test_constrained_first_answer_is_a_real_address(app, vocab, chat_main, tmp_path, capsys):
    """--constrained: the (random tiny) model's first answer names exactly one allowed address."""
    from llava_address.app.chat_session import ChatSession, load_assistant, load_locator
    from llava_address.llava.generate import CONSTRAINED_ANSWER

    assistant, locator = load_assistant(app.llava), load_locator(app.clip)
    for grounded in (False, True):
        session = ChatSession(assistant, locator, k=3, max_new_tokens=4, grounded=grounded, constrained=True)
        cands = session.set_image(noise_photo(tmp_path / "p.png"))
        allowed = [a for a, _ in cands] if grounded else list(vocab.sub_street)
        assert session.allowed_addresses() == allowed
        answer = session.ask("Where was this photo taken?")  # 4 tokens asked: never cut short
        assert answer in {CONSTRAINED_ANSWER.format(address=a) for a in allowed}
        assert session.allowed_addresses() is None  # follow-ups are free text
    assert chat_main(_args(app, noise_photo(tmp_path / "q.png"), "--constrained", "--candidates", "0",
                           "--question", "Where?")) == 2
    assert "--constrained needs AddressCLIP candidates" in capsys.readouterr().err


def test_map_highlights_predicted_sub_street(app, vocab):
    from llava_address.app.map_view import load_network_map

    net = load_network_map(app.data)
    name = next(s for s in vocab.sub_street if s in net.sub_streets)
    lat, lon = vocab.midpoint(name)

    def red(img):
        a = np.asarray(img).astype(int)
        return int(((a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] < 60)).sum())

    plain = net.render(title="plain")
    marked = net.render(highlight=name, true_point=(lat, lon), title="marked")
    assert plain.size == marked.size
    assert red(plain) == 0 and red(marked) > 50
    assert red(net.render(highlight="Nowhere St between A and B")) == 0


def test_web_backend_messages_truth_and_activation(app, tmp_path):
    from data_gen.contract import read_manifest
    from llava_address.app.chat_session import ImageInputError, ModelLoadError
    from llava_address.app.web_backend import WebBackend

    be = WebBackend(app.llava, app.clip, app.data, k=3, max_new_tokens=4, n_examples=4)
    assert 1 <= len(be.examples) <= 4 and all(Path(p).is_file() for p in be.examples)
    row = read_manifest(app.data).iloc[0]
    truth = be.truth_of(app.data / row["image"])
    assert truth is not None and truth.sub_street == row["sub_street"]
    assert be.truth_of(noise_photo(tmp_path / "n.png")) is None
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ImageInputError, match="not a readable image"):
        be.new_session(text)
    img, top = be.activation_map(row["sub_street"])
    assert img.size[0] > 100 and len(top) == min(5, len(be.test_rows))
    assert list(top.columns) == ["sub_street", "similarity"]
    missing = WebBackend(tmp_path / "none", app.clip, app.data)
    assert any("LLaVA model not found" in n for n in missing.notes)
    with pytest.raises(ModelLoadError, match="LLaVA model not found"):
        missing.new_session(app.data / row["image"])


def test_web_session_keeps_only_a_downscaled_photo_and_uploads_are_pruned(app, tmp_path):
    import os
    import time

    from llava_address.app.web_backend import WebBackend, prune_dir

    uploads = tmp_path / "uploads"
    old = uploads / "h1" / "old.png"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"x" * 4000)
    os.utime(old, (time.time() - 60, time.time() - 60))
    big = uploads / "h2" / "big.png"
    big.parent.mkdir()
    Image.new("RGB", (3000, 1200), "white").save(big)
    be = WebBackend(app.llava, app.clip, None, k=2, max_new_tokens=2, max_side=300, upload_dir=uploads,
                    max_upload_dir_bytes=big.stat().st_size + 100)
    session = be.new_session(big)
    assert session.image.size == (300, 120) and session.image_path == big
    assert big.is_file() and not old.exists() and not old.parent.exists()  # oldest went, the current upload stays
    assert len(session.candidates) == 2
    assert prune_dir(uploads, 0, keep=big) == 0 and big.is_file()
    assert prune_dir(uploads, 0) == 1 and not big.exists()
