"""Conversation formats as Jinja chat templates with generation spans + LLaVA-JSON conversion.

The format follows the LM: its own when it has one (ChatML for SmolLM2-Instruct, Qwen, ...), Vicuna v1
(LLaVA-1.5) for Vicuna/Llama bases and the tiny unit-test LM (:func:`template_for`). Both mark the
trained tokens with ``{% generation %}`` so labels never come from index arithmetic.

ChatML, as SmolLM2-Instruct was tuned on (its default system prompt kept)::

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n<image>\\n{q1}<|im_end|>\\n<|im_start|>assistant\\n{a1}<|im_end|>\\n...

Trained span: ``{answer}<|im_end|>`` (the LM's EOS); the "\\n" after it is the next turn's opening.

Vicuna v1:

Rendered text, exactly as LLaVA-1.5 trains::

    <s>A chat between ... questions. USER: <image>\\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>

The assistant part " {answer}</s>" sits inside ``{% generation %}`` so that
``apply_chat_template(..., return_assistant_tokens_mask=True)`` yields the exact token spans to
train on (everything else is masked to -100 by the collator). With
``add_generation_prompt=True`` the text ends in "ASSISTANT:" and the model continues with " ...".
"""

from __future__ import annotations

from typing import Any, Sequence

from llava_address.llava.tokenizer import IMAGE_TOKEN

__all__ = ["SYSTEM_PROMPT", "VICUNA_V1_TEMPLATE", "CHATML_SYSTEM_PROMPT", "chatml_template", "template_for",
           "answer_prefix", "PLAIN_TEMPLATE", "TEMPLATES", "llava_json_to_messages", "history_to_messages"]

SYSTEM_PROMPT = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")

VICUNA_V1_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] if messages[0]['content'] is string "
    "else messages[0]['content'][0]['text'] %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set system = \"" + SYSTEM_PROMPT + "\" %}{% set loop_messages = messages %}{% endif %}"
    "{{ system }}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ ' USER: ' if loop.first else 'USER: ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<image>\\n' }}{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% endif %}"
    "{{ ' ASSISTANT:' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% generation %}{{ ' ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% endif %}"
    "{{ eos_token }}{% endgeneration %}"
    "{% endif %}"
    "{% endfor %}"
)


CHATML_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
"""SmolLM2-Instruct's own default system prompt (from the chat template in its GGUF)."""


def chatml_template(system_prompt: str = CHATML_SYSTEM_PROMPT) -> str:
    """ChatML with the image marker in the first user turn and the assistant answer + <|im_end|> trained."""
    return (
        "{% if messages and messages[0]['role'] == 'system' %}"
        "{% set system = messages[0]['content'] if messages[0]['content'] is string "
        "else messages[0]['content'][0]['text'] %}{% set loop_messages = messages[1:] %}"
        "{% else %}{% set system = " + repr(system_prompt) + " %}{% set loop_messages = messages %}{% endif %}"
        "{{ '<|im_start|>system\\n' + system + '<|im_end|>\\n' }}"
        "{% for message in loop_messages %}"
        "{% if message['role'] == 'user' %}"
        "{{ '<|im_start|>user\\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<image>\\n' }}{% endif %}{% endfor %}"
        "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
        "{% endif %}"
        "{{ '<|im_end|>\\n' }}"
        "{% elif message['role'] == 'assistant' %}"
        "{{ '<|im_start|>assistant\\n' }}"
        "{% generation %}"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
        "{% endif %}"
        "{{ '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )


def template_for(tokenizer: Any) -> tuple[str, str]:
    """(name, Jinja template) of the conversation format this LM was tuned on.

    ChatML when the tokenizer knows ``<|im_start|>``/``<|im_end|>`` (keeping the default system
    prompt of the LM's own template when it has one), otherwise Vicuna v1 (LLaVA-1.5's format for
    Vicuna and Llama bases, and the tiny LM's).
    """
    import re

    vocab = tokenizer.get_vocab()
    if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
        own = getattr(tokenizer, "chat_template", None) or ""
        found = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", own if isinstance(own, str) else "")
        return "chatml", chatml_template(found.group(1) if found else CHATML_SYSTEM_PROMPT)
    return "vicuna_v1", VICUNA_V1_TEMPLATE


def answer_prefix(processor: Any) -> str:
    """Text the template puts between the generation prompt and the answer (Vicuna v1: " ", ChatML: "").

    Read from the template itself, so constrained decoding builds answers exactly as training rendered them.
    """
    marker = "\u2063ANSWER\u2063"
    msgs = [{"role": "user", "content": [{"type": "text", "text": "q"}]}]
    prompt = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    full = processor.apply_chat_template(msgs + [{"role": "assistant", "content": [{"type": "text", "text": marker}]}],
                                         tokenize=False)
    if not full.startswith(prompt) or marker not in full:
        raise ValueError("the chat template's generation prompt is not a prefix of a rendered answer")
    return full[len(prompt):full.index(marker)]


# LLaVA-1.5's stage-1 ``plain`` format: "<image>" then the caption and "\n"; no system prompt, the
# question is dropped, only the first exchange is used. Only the caption (+ "\n") is learned.
PLAIN_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages[:2] %}"
    "{% if message['role'] == 'user' %}"
    "{% if message['content'] is not string %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}"
    "{% elif message['role'] == 'assistant' %}"
    "{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% endif %}"
    "{{ '\n' }}{% endgeneration %}"
    "{% endif %}"
    "{% endfor %}"
)
TEMPLATES = {"chat": None, "plain": PLAIN_TEMPLATE}  # None: the processor's own (the LM's format, template_for)


def _strip_image(text: str) -> tuple[str, bool]:
    """Remove LLaVA's "<image>" marker (and the newline after it); report whether it was there."""
    if IMAGE_TOKEN not in text:
        return text.strip(), False
    return text.replace(IMAGE_TOKEN + "\n", "").replace("\n" + IMAGE_TOKEN, "").replace(IMAGE_TOKEN, "").strip(), True


def llava_json_to_messages(conversations: Sequence[dict[str, str]], image: Any) -> list[dict[str, Any]]:
    """LLaVA JSON turns ({"from": "human"|"gpt", "value"}) -> chat messages with the image in turn 1.

    The image goes into the first user turn whatever the JSON says (LLaVA-1.5 puts "<image>" there);
    a conversation that does not alternate human/gpt starting with human is rejected.
    """
    messages: list[dict[str, Any]] = []
    for i, turn in enumerate(conversations):
        role = {"human": "user", "gpt": "assistant"}.get(turn.get("from", ""))
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"turn {i}: expected {expected!r} ('human'/'gpt' alternating), got {turn.get('from')!r}")
        text, _ = _strip_image(str(turn.get("value", "")))
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if i == 0:
            content.insert(0, {"type": "image", "image": image})
        messages.append({"role": role, "content": content})
    if not messages or len(messages) % 2:
        raise ValueError(f"conversation must hold complete human/gpt pairs, got {len(messages)} turns")
    return messages


def history_to_messages(image: Any, question: str, history: Sequence[tuple[str, str]] | None) -> list[dict[str, Any]]:
    """(image, earlier (q, a) pairs, new question) -> messages for a generation prompt."""
    turns: list[dict[str, str]] = []
    for q, a in history or ():
        turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    turns += [{"from": "human", "value": question}, {"from": "gpt", "value": ""}]
    return llava_json_to_messages(turns, image)[:-1]
