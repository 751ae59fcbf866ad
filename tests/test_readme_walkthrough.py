"""README §1–§3 as a walkthrough: their CPU commands run in order on a fresh copy of the repository.

Each ``python scripts/…`` line of the sections' bash blocks is run through the script's
``main(argv)`` in the copy, with only the size flags of ``SIZE`` appended (documented in the
README's Tests section). Not run here, and why: GPU commands (``accelerate launch`` with the GPU
configs, ``deepspeed``, QLoRA and the 7B export/eval: tests/test_gpu_path.py runs those configs
against Hub-layout stand-ins), the 2-process CPU launch (tests/test_clip_distributed.py), the
larger/procedural dataset variants, ``run_table.py`` (hours of training), interactive ``chat.py``
without ``--question``, and ``web.py`` (a server: tests/test_web_browser.py).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from llava_address.clip.config import load_clip_config
from llava_address.common.config import load_config
from llava_address.llava.config import load_llava_config

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("## 1.", "## 2.", "## 3.")
# size-only flags appended per script (the README names them in its Tests section)
SIZE = {
    "build_dataset": ["--set", "sampling.max_images=700", "--set", "render.size=48"],
    "train_clip": ["--set", "train.max_steps=2", "--set", "train.eval_every=0", "--set", "eval.max_images=16"],
    "eval_clip": ["--max-images", "16", "--no-plots"],
    "train_llava": ["--set", "stage1.max_steps=2", "--set", "stage2.max_steps=2", "--set", "stage1.batch_size=4",
                    "--set", "stage2.batch_size=4"],
    "eval_llava": ["--max-samples", "4", "--max-new-tokens", "6"],
    "chat": ["--max-new-tokens", "6"],
}
SKIP = re.compile(r"synthcity_helsinki_large|synthcity_procedural|train_views_per_point|configs/data/tiny.yaml"
                  r"|run_table|web\.py"
                  r"|llava_v15_7b|export_llava")


def readme_commands(text: str) -> list[list[str]]:
    """The runnable CPU commands of README §1–§3, in order (continuation lines joined, comments cut)."""
    cmds = []
    for sec in re.split(r"\n(?=## )", text):
        if not sec.startswith(SECTIONS):
            continue
        for block in re.findall(r"```bash\n(.*?)```", sec, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                argv = shlex.split(line, comments=True)
                if argv[:2] and argv[0] == "python" and argv[1].startswith("scripts/") and not SKIP.search(line):
                    cmds.append(argv[1:])
    return cmds


def _run(argv: list[str]) -> int:
    name = Path(argv[0]).stem
    spec = importlib.util.spec_from_file_location(f"readme_{name}", Path(argv[0]))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if name == "chat" and "--question" not in argv:
        pytest.fail("interactive chat command slipped through")
    return mod.main([*argv[1:], *SIZE.get(name, [])])


@pytest.mark.slow
def test_readme_sections_run_in_order_on_a_fresh_copy(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            (repo / f).write_bytes((ROOT / f).read_bytes())
    monkeypatch.chdir(repo)
    cmds = readme_commands((repo / "README.md").read_text())
    names = [Path(c[0]).stem for c in cmds]
    assert names[:2] == ["build_dataset", "make_qa"] and "train_llava" in names and "chat" in names, names
    for argv in cmds:
        assert _run(argv) == 0, " ".join(argv)
    # the shipped configs' default paths are what the flow wrote
    smol = load_llava_config("configs/llava/llava_smollm2.yaml")  # README §3's (the default LM's) config
    assert Path(smol.model.clip_dir, "config.json").is_file()
    assert Path(smol.data.dataset_dir, "manifest.parquet").is_file()
    assert smol.data.resolve(smol.data.qa_json).is_file() and smol.data.resolve(smol.data.align_json).is_file()
    assert Path(smol.output_dir, "export", "config.json").is_file()


def test_full_size_configs_point_at_each_other():
    """What the GPU walkthrough writes is where the next config looks (no GPU needed to check it)."""
    from data_gen.build_config import BuildConfig

    big = load_llava_config(ROOT / "configs/llava/llava_v15_7b_lora.yaml")
    vitl = load_clip_config(ROOT / "configs/clip/addressclip_vitl14_336.yaml")
    large = load_config(ROOT / "configs/data/synthcity_helsinki_large.yaml", BuildConfig)
    assert big.model.clip_dir == f"{vitl.train.output_dir}/model"
    assert big.data.dataset_dir == vitl.data.dataset_dir == large.out_dir
    tiny_clip = load_clip_config(ROOT / "configs/clip/synthcity_tiny.yaml")
    tiny = load_llava_config(ROOT / "configs/llava/llava_tiny.yaml")
    default = load_config(ROOT / "configs/data/synthcity_helsinki.yaml", BuildConfig)
    assert tiny.model.clip_dir == f"{tiny_clip.train.output_dir}/model"
    assert tiny.data.dataset_dir == tiny_clip.data.dataset_dir == default.out_dir
    smol = load_llava_config(ROOT / "configs/llava/llava_smollm2.yaml")
    assert smol.model.clip_dir == tiny.model.clip_dir and smol.data.dataset_dir == default.out_dir
