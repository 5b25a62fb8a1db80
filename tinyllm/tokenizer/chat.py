"""Chat templates: turn a list of messages into the exact text a chat model was trained on.

A chat model reads one string in which control tokens mark who says what. Each model ships
its format as a Jinja template (`tokenizer.chat_template` in GGUF, `chat_template` in
`tokenizer_config.json`). SmolLM2 uses ChatML:

    render_chat_template(template, [{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    -> "<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
       "<|im_end|>\\n"
       "<|im_start|>user\\nHi<|im_end|>\\n"
       "<|im_start|>assistant\\n"              (the generation prompt: the model writes next)

Templates come with downloaded models, so they run in Jinja's sandbox (no access to Python
internals). The environment is set up as Hugging Face transformers does it, since templates
are written against it: `trim_blocks` and `lstrip_blocks` on, the `loopcontrols` extension
({% break %}, {% continue %}), a `tojson` filter that keeps non-ASCII text, and the globals
`raise_exception(message)` and `strftime_now(format)`.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def _raise_exception(message: str) -> None:
    """What a template calls to reject its input, e.g. roles that do not alternate."""
    raise TemplateError(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@functools.lru_cache(maxsize=16)
def compile_chat_template(template: str):
    """Compile a chat template once (templates are long and rendered for every turn)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)


def render_chat_template(
    template: str, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
) -> str:
    """Render `messages` ([{"role": ..., "content": ...}, ...]) with a Jinja chat template.

    `add_generation_prompt` appends the header of an assistant turn, so that the model's
    continuation is the answer. Extra keyword arguments (bos_token, eos_token, tools, ...)
    are passed to the template. A template that calls raise_exception raises
    jinja2.exceptions.TemplateError.
    """
    return compile_chat_template(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt, **kwargs
    )
