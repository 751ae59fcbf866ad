"""Bad inputs to the app scripts, run as a user would (subprocesses): exit code 2, exactly one
``error:`` line on stderr naming the problem, no traceback, and the user's files untouched.

Input problems are caught before any model loads, so those runs take a second or two; the
model-directory cases use a tiny random LLaVA export built once per module.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _fixtures_llava import SUBS, make_clip_dir, make_dataset
from _image_fixtures import png_bomb, truncated_jpeg

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    from llava_address.llava.build import build_llava
    from llava_address.llava.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("bad_inputs")
    tok = train_tokenizer([s for _, s in SUBS] * 10 + ["Where was this photo taken?"] * 10, vocab_size=300)
    model, processor = build_llava(make_clip_dir(root / "clip"), "tiny", tok, tiny=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2))
    model.save_pretrained(root / "export")
    processor.save_pretrained(root / "export")
    return root / "export"


@pytest.fixture()
def photo(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "street.png"
    Image.new("RGB", (60, 40), (120, 90, 60)).save(path)
    return path


def _digest(*paths: Path) -> dict[str, str]:
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _run(script: str, *args: str, inputs: tuple[Path, ...] = ()) -> str:
    """Run scripts/<script>.py; assert exit 2, one error line, no traceback, inputs unchanged; return it."""
    before = _digest(*inputs)
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / f"{script}.py"), *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert _digest(*inputs) == before
    return errors[0]


def _chat(image: Path, *extra: str, model: Path | None = None, inputs: tuple[Path, ...] = ()) -> str:
    model = model or image.parent / "no_model"
    return _run("chat", "--image", str(image), "--model", str(model), "--candidates", "0", *extra,
                inputs=(*inputs, image) if image.exists() else inputs)


def test_chat_missing_corrupt_and_bomb_images(tmp_path):
    assert "image file not found" in _chat(tmp_path / "nope.jpg", "--question", "hi")
    cut = truncated_jpeg(tmp_path / "cut.jpg")
    assert "cut.jpg is not a readable image" in _chat(cut, "--question", "hi")
    bomb = png_bomb(tmp_path / "bomb.png")
    line = _chat(bomb, "--question", "hi")
    assert "bomb.png is too large to process" in line and re.search(r"400,?000,?000 pixels", line)


def test_chat_blank_and_huge_questions(photo):
    assert "--question: the question is empty" in _chat(photo, "--question", " \t ")
    line = _chat(photo, "--question", "where? " * 15000)
    assert "has 104,999 characters; the limit is 2,000" in line


def test_chat_bad_model_dirs(photo, export, tmp_path):
    assert "LLaVA model not found" in _chat(photo, "--question", "hi")
    broken = tmp_path / "broken_export"
    broken.mkdir()
    for f in export.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    line = _chat(photo, "--question", "hi", model=broken, inputs=(broken,))
    assert f"cannot load the LLaVA model in {broken}" in line


def test_eval_llava_bad_export_and_corrupt_test_image(tmp_path, export):
    data = make_dataset(tmp_path / "data", per_sub=2)
    line = _run("eval_llava", "--export", str(tmp_path / "no_export"), "--data", str(data), inputs=(data,))
    assert "no_export" in line
    broken = data / "images" / "0_1.png"  # a test image (the last of its sub-street)
    broken.write_bytes(broken.read_bytes()[:50])
    line = _run("eval_llava", "--export", str(export), "--data", str(data), "--max-new-tokens", "2",
                inputs=(data, export))
    assert "cannot load image" in line and "0_1.png" in line
