"""Chat templates: render the GGUF's tokenizer.chat_template with jinja2, as transformers does."""

from __future__ import annotations

from typing import Any, Protocol


class TemplatedModel(Protocol):
    """What rendering needs of a model (an adadecode.Model is one); a protocol, so this module needs no import of
    the model module, which imports it."""

    path: str
    vocab: Any  # adadecode._core.Vocab: chat_template, bos, eos, token_to_piece


def _raise(message: str) -> None:
    raise ValueError(message)


def render_chat_template(
    model: TemplatedModel,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool = True,
    tools: list[Any] | None = None,
    template: str | None = None,
) -> str:
    """The conversation as text, by the GGUF's chat template or by ``template`` in its place."""
    import jinja2
    import jinja2.sandbox

    template = template or model.vocab.chat_template
    if not template:
        raise ValueError(f"'{model.path}' has no chat template (tokenizer.chat_template)")
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError("each message must be a dict with 'role' and 'content'")
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    vocab = model.vocab

    def piece(token: int) -> str:
        return vocab.token_to_piece(token, True).decode("utf-8", "replace") if token >= 0 else ""

    return env.from_string(template).render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=piece(vocab.bos),
        eos_token=piece(vocab.eos),
        **({"tools": tools} if tools else {}),
    )
