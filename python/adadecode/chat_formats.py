"""llama-cpp-python's ``chat_format``: named prompt formats that replace the GGUF's own chat template.

Each is a jinja2 template rendered like a GGUF's (``messages``, ``add_generation_prompt``, ``bos_token``,
``eos_token``) and the text that ends a reply in it, which is added to the request's stop strings: a model whose own
template differs need not know that text as an end-of-turn token.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChatFormat:
    template: str
    stop: str  # ends the assistant's turn


# Formats without a system turn fold the system message into the first user message, as their model cards do; a role
# a format has no place for is refused by raise_exception, never dropped.
_SYSTEM_INTO_FIRST_USER = (
    "{% set ns = namespace(system='') %}"
    "{% for m in messages %}{% if m['role'] == 'system' %}{% set ns.system = ns.system + m['content'] + '\\n\\n' %}"
    "{% elif m['role'] not in ('user', 'assistant') %}"
    "{{ raise_exception('this chat_format has no place for ' + m['role'] + ' messages') }}{% endif %}{% endfor %}"
    "{% set ns.first = true %}"
)

CHAT_FORMATS: dict[str, ChatFormat] = {
    "chatml": ChatFormat(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "<|im_end|>",
    ),
    "llama-3": ChatFormat(
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
        "<|eot_id|>",
    ),
    "llama-2": ChatFormat(
        _SYSTEM_INTO_FIRST_USER + "{% for m in messages if m['role'] != 'system' %}"
        "{% if m['role'] == 'user' %}{{ bos_token }}[INST] "
        "{% if ns.first and ns.system %}<<SYS>>\n{{ ns.system.rstrip() }}\n<</SYS>>\n\n{% endif %}"
        "{% set ns.first = false %}{{ m['content'] }} [/INST]"
        "{% else %} {{ m['content'] }} {{ eos_token }}{% endif %}{% endfor %}",
        "</s>",
    ),
    "mistral-instruct": ChatFormat(
        _SYSTEM_INTO_FIRST_USER + "{{ bos_token }}{% for m in messages if m['role'] != 'system' %}"
        "{% if m['role'] == 'user' %}[INST] {% if ns.first %}{{ ns.system }}{% endif %}{% set ns.first = false %}"
        "{{ m['content'] }} [/INST]{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}",
        "</s>",
    ),
    "gemma": ChatFormat(
        _SYSTEM_INTO_FIRST_USER + "{{ bos_token }}{% for m in messages if m['role'] != 'system' %}"
        "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
        "{% if m['role'] == 'user' and ns.first %}{{ ns.system }}{% set ns.first = false %}{% endif %}"
        "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
        "<end_of_turn>",
    ),
    "zephyr": ChatFormat(
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
        "</s>",
    ),
}

# llama-cpp-python's name for "the GGUF's own template" (what chat_format=None also means).
GGUF_TEMPLATE = "chat_template.default"


def chat_format(name: str | None) -> ChatFormat | None:
    """The format of that name; None for the GGUF's own template. ValueError names the known formats."""
    if name is None or name == GGUF_TEMPLATE:
        return None
    if name not in CHAT_FORMATS:
        known = ", ".join(sorted(CHAT_FORMATS))
        raise ValueError(f"unknown chat_format {name!r}: adadecode knows {known} and {GGUF_TEMPLATE!r} (the GGUF's)")
    return CHAT_FORMATS[name]
