"""The Gradio Blocks page: photo -> answer, candidates, map; follow-up chat; activation map.

Offline by construction: analytics off, no share link, local fonts (Gradio's default theme),
maps drawn by matplotlib from the dataset's own network.geojson. Behaviour lives in
:class:`~llava_address.app.web_backend.WebBackend`; this module only wires components.
"""

from __future__ import annotations

import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

from typing import Any, Iterator  # noqa: E402

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402

from llava_address.app.chat_session import (DEFAULT_QUESTION, MAX_QUESTION_CHARS, ChatSession,  # noqa: E402
                                            ImageInputError, ModelLoadError, QuestionError, check_question,
                                            format_answer)
from llava_address.app.web_backend import WebBackend  # noqa: E402

__all__ = ["build_app", "launch"]

log = logging.getLogger(__name__)
CAND_COLUMNS = ["rank", "address", "score"]
EMPTY_CANDS = pd.DataFrame(columns=CAND_COLUMNS)


def _cands_frame(session: ChatSession) -> pd.DataFrame:
    return pd.DataFrame([(i, a, round(s, 4)) for i, (a, s) in enumerate(session.candidates, 1)], columns=CAND_COLUMNS)


def _error(msg: str) -> str:
    return f"**⚠ {msg}**"


SESSION_TTL_S = 3600
"""A chat session (downscaled photo + history) is dropped an hour after its last use."""
CACHE_CLEANUP = (600, 3600)
"""Gradio deletes its copies of uploads and shown images every 10 min once they are an hour old."""


def build_app(backend: WebBackend, session_ttl_s: float = SESSION_TTL_S,
              delete_cache: tuple[int, int] = CACHE_CLEANUP) -> gr.Blocks:
    """The page for ``backend``'s models and dataset."""

    def analyse(path: str | None, question: str, progress=gr.Progress()) -> Iterator[tuple]:
        """(file, question) -> status, preview, answer, candidates, map, chat, session (streamed)."""
        if not path:
            yield "Upload a street photo or pick an example.", None, "", EMPTY_CANDS, None, [], None
            return
        try:
            question = check_question((question or "").strip() or DEFAULT_QUESTION)
            progress(0.1, desc="loading models and ranking candidate addresses")
            session = backend.new_session(path)
        except (ImageInputError, ModelLoadError, QuestionError) as exc:
            yield _error(str(exc)), None, "", EMPTY_CANDS, None, [], None
            return
        truth = backend.truth_of(path)
        cands = _cands_frame(session)
        progress(0.4, desc="generating the answer")
        chat: list[dict[str, str]] = [{"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        # photo + candidates go out once; while streaming only the text changes (gr.skip keeps the rest)
        yield "Generating…", session.image, "", cands, None, chat, session
        text = ""
        for chunk in session.ask_stream(question):
            text += chunk
            chat[-1]["content"] = text
            yield gr.skip(), gr.skip(), text, gr.skip(), gr.skip(), chat, gr.skip()
        answer = session.history[-1][1]
        chat[-1]["content"] = answer
        progress(0.9, desc="drawing the map")
        status = f"Done. True address (dataset label): **{truth.sub_street}**" if truth else "Done."
        if session.clip_answer:
            status += f"  \nAddressCLIP, {format_answer(session.clip_answer)}"
        the_map = backend.render_map(session.predicted_address(), truth)
        yield status, gr.skip(), answer, gr.skip(), the_map, chat, session

    def follow_up(message: str, chat: list[dict[str, Any]], session: ChatSession | None) -> Iterator[tuple]:
        """One more question about the same photo, streamed into the chat."""
        chat = list(chat or [])
        message = (message or "").strip()
        if not message:
            yield chat, "", ""
            return
        if session is None:
            yield chat, message, _error("analyse a photo first, then ask follow-up questions")
            return
        try:
            message = check_question(message, session.max_question_chars)
        except QuestionError as exc:
            yield chat, message, _error(str(exc))
            return
        chat += [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        text = ""
        for chunk in session.ask_stream(message):
            text += chunk
            chat[-1]["content"] = text
            yield chat, "", "Generating…"
        chat[-1]["content"] = session.history[-1][1]
        yield chat, "", "Done."

    def activation(query: str, progress=gr.Progress()) -> tuple:
        progress(0.2, desc="encoding test photos")
        try:
            img, top = backend.activation_map(query)
        except (ValueError, ModelLoadError) as exc:
            return None, pd.DataFrame(), _error(str(exc))
        return img, top, f"Test photos coloured by similarity to **{query.strip()}**."

    notes = "\n".join(f"- {n}" for n in backend.notes)
    with gr.Blocks(title="llava-address", analytics_enabled=False, delete_cache=delete_cache) as demo:
        gr.Markdown("# llava-address\nFrom one street photo to a street address: a LLaVA answer, "
                    "AddressCLIP's nearby candidate addresses and the map.")
        if notes:
            gr.Markdown(notes, elem_id="notes")
        session_state = gr.State(None, time_to_live=session_ttl_s)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label=f"Street photo (JPEG/PNG, ≤ {backend.max_image_bytes / 2**20:.3g} MB)",
                                 type="filepath", elem_id="upload")
                question = gr.Textbox(value=DEFAULT_QUESTION, label="Question", elem_id="question",
                                      max_length=MAX_QUESTION_CHARS)
                locate = gr.Button("Locate", variant="primary", elem_id="locate")
                if backend.examples:
                    gr.Examples(examples=[[p] for p in backend.examples], inputs=[upload], label="Test photos")
                preview = gr.Image(label="Photo", type="pil", interactive=False, height=240, elem_id="preview")
            with gr.Column(scale=1):
                status = gr.Markdown("Upload a street photo or pick an example.", elem_id="status")
                answer = gr.Textbox(label="Answer (LLaVA)", interactive=False, elem_id="answer")
                cands = gr.Dataframe(value=EMPTY_CANDS, label="AddressCLIP candidates", interactive=False,
                                     elem_id="candidates")
                map_img = gr.Image(label="Map", type="pil", interactive=False, elem_id="map")
        chatbot = gr.Chatbot(label="Follow-up questions about this photo", height=260, elem_id="chatbot")
        with gr.Row():
            msg = gr.Textbox(placeholder="Ask about the same photo…", show_label=False, scale=4, elem_id="followup")
            send = gr.Button("Send", scale=1, elem_id="send")
        with gr.Accordion("Activation map: where does the model see an address?", open=False):
            query = gr.Textbox(label="Address", elem_id="act_query")
            act_btn = gr.Button("Show", elem_id="act_show")
            act_status = gr.Markdown()
            act_map = gr.Image(label="Similarity map", type="pil", interactive=False, elem_id="act_map")
            act_top = gr.Dataframe(label="Most similar test photos (true address)", interactive=False)

        outs = [status, preview, answer, cands, map_img, chatbot, session_state]
        upload.change(analyse, [upload, question], outs)
        locate.click(analyse, [upload, question], outs)
        question.submit(analyse, [upload, question], outs)
        for trigger in (send.click, msg.submit):
            trigger(follow_up, [msg, chatbot, session_state], [chatbot, msg, status])
        for trigger in (act_btn.click, query.submit):
            trigger(activation, [query], [act_map, act_top, act_status])
    return demo


def return_freed_memory_to_os(threshold: int = 1 << 20) -> bool:
    """glibc: serve allocations >= ``threshold`` bytes by mmap, so freeing them returns the memory.

    Why: a 12000² PNG decodes to ~400 MB in 16 MB Pillow blocks. glibc raises its mmap threshold
    after the first such block is freed, so later ones come from per-thread heaps that are never
    given back: each upload then left ~600 MB resident. A fixed threshold (which also turns the
    dynamic adjustment off) keeps the server within a few MB of its idle figure
    (``benchmarks/web_memory.py``). Returns False where glibc's ``mallopt`` is not available.
    """
    import ctypes
    import ctypes.util

    m_mmap_threshold = -3  # from <malloc.h>
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(m_mmap_threshold, int(threshold)))
    except (OSError, AttributeError):
        return False


def launch(backend: WebBackend, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> gr.Blocks:
    """Serve the page locally (never a share link); ``block=False`` returns once it is up (tests).

    Gradio itself refuses uploads over twice ``backend.max_image_bytes`` + 1 MB (``max_file_size``)
    before they reach the disk; between that and the limit, the page says why in its status line
    (Gradio's own refusal is a bare "Error" toast).
    """
    if not return_freed_memory_to_os():
        log.warning("mallopt unavailable (not glibc): memory freed after large uploads may stay resident")
    demo = build_app(backend)
    allowed = [str(p) for p in (backend.data_dir,) if p is not None]
    demo.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False,
        allowed_paths=allowed, prevent_thread_lock=not block, quiet=not block, footer_links=[],
        max_file_size=2 * backend.max_image_bytes + 2**20)
    return demo
