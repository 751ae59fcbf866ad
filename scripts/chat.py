"""python scripts/chat.py --image photo.jpg [--export DIR] [--clip DIR] [--device auto] [--question "..."] [--candidates 5]

Ask the LLaVA address assistant where a street photo was taken. With --question: one answer and
exit; without: a chat about the same photo (``/image other.jpg`` switches photo, ``/quit`` ends).
Beside each answer it prints AddressCLIP's top-k nearby candidate addresses with scores.
--rerank: the first answer is AddressCLIP's top-k re-ranked by fusion with LLaVA's answer
likelihood (lambda fitted by ``eval_llava.py --rerank``, stored in the export's rerank.json).
Defaults point at the offline demo's outputs (``python scripts/demo.py``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


from llava_address.app.chat_session import (DEFAULT_QUESTION, MAX_QUESTION_CHARS, ChatSession, ImageInputError,
                                            ModelLoadError, QuestionError, check_question, format_answer,
                                            format_candidates, load_assistant, load_image, load_locator)
from llava_address.app.demo_pipeline import demo_artifact
from llava_address.common.device import add_device_args, device_and_dtype

DEMO_OUT = "outputs/demo"
HELP = "commands: /image PATH (switch photo), /candidates (show them again), /quit"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--image", required=True, help="a JPEG/PNG street photo")
    ap.add_argument("--export", "--model", dest="export",
                    help=f"LLaVA export dir (default: the demo's, {DEMO_OUT}/llava/export)")
    ap.add_argument("--clip", help=f"AddressCLIP checkpoint dir (default: the demo's, {DEMO_OUT}/clip/model)")
    ap.add_argument("--question", help="ask this once and exit (default: interactive chat)")
    ap.add_argument("--candidates", type=int, default=5,
                    help="AddressCLIP candidates to list (0: none, no --clip needed)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--grounded", action="store_true",
                    help="candidate-grounded: the first question carries the AddressCLIP candidates")
    ap.add_argument("--constrained", action="store_true",
                    help="the first answer names a real address: one of the candidates with --grounded, "
                         "else one of the checkpoint's sub-streets")
    ap.add_argument("--rerank", action="store_true",
                    help="the first answer is AddressCLIP's top-k re-ranked by fusion with LLaVA's answer likelihood "
                         "(lambda from <export>/rerank.json, fitted by eval_llava.py --rerank; prompt as --grounded)")
    ap.add_argument("--rerank-lambda", type=float, default=None, help="fusion weight (implies --rerank)")
    ap.add_argument("--max-question-chars", type=int, default=MAX_QUESTION_CHARS,
                    help="longer questions get a message instead of a run")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_device_args(ap)
    return ap.parse_args(argv)


def _show_candidates(session: ChatSession) -> None:
    if session.candidates:
        print(f"AddressCLIP candidates (top-{len(session.candidates)}; score = probability over all candidates):")
        print("\n".join(format_candidates(session.candidates)))
    if session.clip_answer:
        print("AddressCLIP answer: " + format_answer(session.clip_answer))
    if session.reranked:
        print(f"re-ranked by fusion (lambda {session.rerank_lambda:g}; log p_clip + lambda * log p_llava):")
        print("\n".join(f"  {i}. {r.fused:8.3f}  {r.address}" for i, r in enumerate(session.reranked, 1)))


def _answer(session: ChatSession, question: str) -> None:
    print(f"Q: {question}")
    print("A: ", end="", flush=True)
    session.ask(question, on_text=lambda t: print(t, end="", flush=True))
    print()


def _repl(session: ChatSession) -> None:
    print(HELP)
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if not line:
            continue
        if line in ("/quit", "/exit", "/q"):
            return
        if line == "/candidates":
            _show_candidates(session)
        elif line.startswith("/image"):
            path = line[len("/image"):].strip()
            try:
                session.set_image(path)
            except ImageInputError as exc:
                print(f"error: {exc}")
                continue
            print(f"now talking about {path}")
            _show_candidates(session)
        elif line.startswith("/"):
            print(f"unknown command {line.split()[0]!r}; {HELP}")
        else:
            try:
                question = check_question(line, session.max_question_chars)
            except QuestionError as exc:
                print(f"error: {exc}")
                continue
            _answer(session, question)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rerank = args.rerank or args.rerank_lambda is not None
    if (args.constrained or rerank) and args.candidates < 1:
        flag = "--constrained" if args.constrained else "--rerank"
        print(f"error: {flag} needs AddressCLIP candidates (--candidates 1 or more)", file=sys.stderr)
        return 2
    if args.question is not None:  # checked before minutes of model loading
        try:
            args.question = check_question(args.question, args.max_question_chars) if args.question else ""
        except QuestionError as exc:
            print(f"error: --question: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep the chat output clean
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = args.export or demo_artifact("llava_export", DEMO_OUT)
    clip = args.clip or demo_artifact("clip_model", DEMO_OUT)
    try:
        image = load_image(args.image)  # the user's file first: seconds before the models load
        device, dtype = device_and_dtype(args, model)
        assistant = load_assistant(model, device, dtype)
        locator = load_locator(clip, device, device_and_dtype(args, clip)[1]) if args.candidates > 0 else None
        lam = args.rerank_lambda
        if rerank and lam is None:
            from llava_address.llava.rerank import load_rerank

            lam = load_rerank(model, args.grounded).lam
        session = ChatSession(assistant, locator, k=args.candidates, max_new_tokens=args.max_new_tokens,
                              max_question_chars=args.max_question_chars, grounded=args.grounded,
                              constrained=args.constrained, rerank_lambda=lam)
        session.set_image(image)
    except (ImageInputError, ModelLoadError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.question is not None:
        _answer(session, args.question or DEFAULT_QUESTION)
        _show_candidates(session)
        return 0
    _show_candidates(session)
    _repl(session)
    return 0


if __name__ == "__main__":
    sys.exit(main())
