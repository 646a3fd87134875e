"""adadecode.Llama as a drop-in for llama-cpp-python: its README's examples run with only the import switched and give
valid results; its parameters are implemented or refused by name; penalties, bias and grammars hold in every mode."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adadecode.model import MODES
from json_prefix import assert_json_object_or_cut, is_json_or_prefix

pytest.importorskip("llguidance")

# llama-cpp-python 0.3.35's parameter names (llama_cpp/llama.py), so this test needs no copy of it.
LCP_INIT = """model_path n_gpu_layers split_mode main_gpu tensor_split vocab_only use_mmap use_mlock kv_overrides seed
n_ctx n_batch n_ubatch n_threads n_threads_batch rope_scaling_type pooling_type attention_type rope_freq_base
rope_freq_scale yarn_ext_factor yarn_attn_factor yarn_beta_fast yarn_beta_slow yarn_orig_ctx logits_all embedding
offload_kqv flash_attn op_offload swa_full no_perf last_n_tokens_size lora_base lora_scale lora_path numa
chat_format chat_handler draft_model tokenizer type_k type_v spm_infill verbose""".split()
LCP_COMPLETION = """prompt suffix max_tokens temperature top_p min_p typical_p logprobs echo stop frequency_penalty
presence_penalty repeat_penalty top_k stream seed tfs_z mirostat_mode mirostat_tau mirostat_eta model
stopping_criteria logits_processor grammar logit_bias""".split()
LCP_CHAT = """messages functions function_call tools tool_choice temperature top_p top_k min_p typical_p stream stop
seed response_format max_tokens presence_penalty frequency_penalty repeat_penalty tfs_z mirostat_mode mirostat_tau
mirostat_eta model logits_processor grammar logit_bias logprobs top_logprobs""".split()
LCP_GENERATE = """tokens top_k top_p min_p typical_p temp repeat_penalty reset frequency_penalty presence_penalty tfs_z
mirostat_mode mirostat_tau mirostat_eta penalize_nl logits_processor stopping_criteria grammar""".split()

SCHEMA = {
    "type": "object",
    "properties": {"team_name": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["team_name", "year"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def llm(engine: Any, smollm2_path: Path) -> Any:
    from adadecode import Llama  # the only line that differs from llama-cpp-python's README

    return Llama(model_path=str(smollm2_path), n_ctx=1024, n_threads=2, embedding=True, heads="auto")


def _positional_names(fn: Any) -> list[str]:
    import inspect

    return [p.name for p in inspect.signature(fn).parameters.values() if p.name != "self"]


def test_signatures_accept_llama_cpp_python_parameters_in_order() -> None:
    from adadecode import Llama

    comp = _positional_names(Llama.create_completion)
    assert comp[: len(LCP_COMPLETION)] == LCP_COMPLETION  # positional callers land on the same parameters
    chat = _positional_names(Llama.create_chat_completion)
    assert chat[: len(LCP_CHAT)] == LCP_CHAT
    assert _positional_names(Llama.generate) == LCP_GENERATE
    init = set(_positional_names(Llama.__init__))
    from adadecode.api import _ENGINE_HINTS, _UNSUPPORTED_INIT

    missing = set(LCP_INIT) - init - set(_UNSUPPORTED_INIT) - set(_ENGINE_HINTS)
    assert not missing, missing


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"typical_p": 0.5}, "typical_p"), ({"tfs_z": 0.9}, "tfs_z"), ({"mirostat_mode": 2}, "mirostat_mode"),
     ({"stopping_criteria": [lambda ids, logits: False]}, "stopping_criteria")],
)  # fmt: skip
def test_unsupported_call_parameters_are_refused_by_name(llm: Any, kwargs: dict[str, Any], name: str) -> None:
    from adadecode import InvalidRequestError

    with pytest.raises(InvalidRequestError, match=name) as info:
        llm("Hello", max_tokens=2, **kwargs)
    assert info.value.param == name
    llm("Hello", max_tokens=1, typical_p=1.0, tfs_z=1.0, mirostat_mode=0)  # defaults are fine


def test_unsupported_constructor_parameters_are_refused_by_name(engine: Any, smollm2_path: Path) -> None:
    from adadecode import InvalidRequestError, Llama

    with pytest.raises(InvalidRequestError, match="lora_path"):
        Llama(str(smollm2_path), lora_path="x.gguf")
    with pytest.raises(InvalidRequestError, match="no_such_thing"):
        Llama(str(smollm2_path), no_such_thing=1)
    with pytest.raises(InvalidRequestError, match="hub"):
        Llama.from_pretrained("Qwen/Qwen2-0.5B-Instruct-GGUF", "*q8_0.gguf")


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Name a color."},
]
# The named formats' texts for CONVERSATION, as their model cards write them ({B}/{E}: the model's BOS/EOS text).
FORMAT_TEXTS = {
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    "Hello!<|im_end|>\n<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n",
    "llama-3": "{B}<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user"
    "<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nName a color.<|eot_id|><|start_header_id|>assistant"
    "<|end_header_id|>\n\n",
    "llama-2": "{B}[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! {E}{B}[INST] Name a color. [/INST]",
    "mistral-instruct": "{B}[INST] Be brief.\n\nHi [/INST]Hello!{E}[INST] Name a color. [/INST]",
    "gemma": "{B}<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
    "<start_of_turn>user\nName a color.<end_of_turn>\n<start_of_turn>model\n",
    "zephyr": "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\nName a color."
    "</s>\n<|assistant|>\n",
}


def test_chat_format_names_a_prompt_format(engine: Any, smollm2_path: Path, llm: Any) -> None:
    from adadecode import InvalidRequestError, Llama
    from adadecode.chat_formats import CHAT_FORMATS

    assert set(FORMAT_TEXTS) == set(CHAT_FORMATS)
    vocab = llm.model.vocab
    bos, eos = (vocab.token_to_piece(t, True).decode() for t in (vocab.bos, vocab.eos))
    for name, text in FORMAT_TEXTS.items():
        formatted = Llama(str(smollm2_path), n_ctx=256, chat_format=name)
        ids = formatted.chat_prompt_ids(CONVERSATION)
        assert llm.model.detokenize(ids, True) == text.replace("{B}", bos).replace("{E}", eos), name
    # SmolLM2's own template is ChatML: the named format gives its prompt and its reply.
    chatml = Llama(str(smollm2_path), n_ctx=256, chat_format="chatml")
    assert chatml.chat_prompt_ids(CONVERSATION) == llm.chat_prompt_ids(CONVERSATION)
    reply = chatml.create_chat_completion(CONVERSATION, max_tokens=12, temperature=0)["choices"][0]["message"]
    assert reply == llm.create_chat_completion(CONVERSATION, max_tokens=12, temperature=0)["choices"][0]["message"]
    assert Llama(str(smollm2_path), n_ctx=256, chat_format="chat_template.default").chat_format is None

    # The format's end of turn ends the reply even where the model has no such token: forced here by a grammar.
    forced = {"grammar": 'root ::= "Red</s>Blue"', "max_tokens": 16, "temperature": 0}
    zephyr = Llama(str(smollm2_path), n_ctx=256, chat_format="zephyr")
    assert zephyr.create_chat_completion(CONVERSATION, **forced)["choices"][0]["message"]["content"] == "Red"
    assert llm.create_chat_completion(CONVERSATION, **forced)["choices"][0]["message"]["content"] == "Red</s>Blue"

    with pytest.raises(InvalidRequestError, match="chatml, gemma") as info:
        Llama(str(smollm2_path), chat_format="alpaca-7")
    assert info.value.param == "chat_format"
    with pytest.raises(InvalidRequestError, match="no place for tool messages"):
        Llama(str(smollm2_path), n_ctx=256, chat_format="gemma").chat_prompt_ids([{"role": "tool", "content": "1"}])
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(InvalidRequestError, match="GGUF's own chat template") as info:
        chatml.create_chat_completion(CONVERSATION, tools=[tool], max_tokens=4)
    assert info.value.param == "tools"


def test_low_level_generate_and_state(llm: Any) -> None:
    """Llama.generate yields what create_completion generates, token by token, and stops when the loop breaks."""
    from adadecode import InvalidRequestError

    prompt = llm.tokenize(b"1, 2, 3, 4,")
    ref = llm.create_completion(prompt, max_tokens=10, temperature=0)
    ids: list[int] = []
    for token in llm.generate(prompt, temp=0.0):
        ids.append(token)
        if len(ids) == 10:
            break
    assert llm.detokenize(ids).decode() == ref["choices"][0]["text"]
    # The engine runs in a thread of its own and stops at its next token: it may have fed a token or two more.
    assert llm.n_tokens >= len(prompt) + 10 and list(llm.input_ids[: len(prompt) + 10]) == prompt + ids
    chat = llm.tokenize(b"<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n", special=True)
    whole = list(llm.generate(chat, temp=0.0))  # to the end of the turn
    assert llm.token_eos() not in whole
    assert llm.detokenize(whole).decode() == llm.create_completion(chat, max_tokens=None, temperature=0)[
        "choices"][0]["text"]  # fmt: skip

    running = llm.generate(prompt, temp=0.0)
    next(running)
    with pytest.raises(InvalidRequestError, match="no tokens sent"):
        running.send([5])
    for kwargs, name in (({"penalize_nl": False}, "penalize_nl"), ({"mirostat_mode": 2}, "mirostat_mode"),
                         ({"tokens": []}, "tokens"), ({"tokens": [10**9]}, "tokens")):  # fmt: skip
        with pytest.raises(InvalidRequestError) as info:
            llm.generate(**{"tokens": prompt, **kwargs})  # refused at the call, before any iteration
        assert info.value.param == name

    tokenizer = llm.tokenizer()
    assert tokenizer.encode("Hello world") == llm.tokenize(b"Hello world", special=True)
    assert tokenizer.decode(tokenizer.encode("Hello world", add_bos=False)) == "Hello world"


def test_set_seed_and_close(engine: Any, smollm2_path: Path) -> None:
    from adadecode import Error, InvalidRequestError, Llama

    with Llama(str(smollm2_path), n_ctx=256) as own:
        sampled = own("Once upon a time", max_tokens=8, seed=123, temperature=1.0)["choices"][0]["text"]
        own.set_seed(123)
        assert own("Once upon a time", max_tokens=8, temperature=1.0)["choices"][0]["text"] == sampled
        with pytest.raises(InvalidRequestError, match="seed"):
            own.set_seed(-1)
    with pytest.raises(Error, match="was closed"):
        own("Once upon a time", max_tokens=2)
    own.close()  # again: nothing to do


def test_readme_completion(llm: Any) -> None:
    output = llm("Q: Name the planets in the solar system? A: ", max_tokens=32, stop=["Q:", "\n"], echo=True)
    text = output["choices"][0]["text"]
    assert text.startswith("Q: Name the planets in the solar system? A: ") and "\n" not in text
    assert output["object"] == "text_completion" and output["usage"]["completion_tokens"] <= 32


def test_readme_chat_completion(llm: Any) -> None:
    out = llm.create_chat_completion(
        messages=[
            {"role": "system", "content": "You are an assistant who perfectly describes images."},
            {"role": "user", "content": "Describe this image in detail please."},
        ],
        max_tokens=24,
    )
    assert out["choices"][0]["message"]["role"] == "assistant" and out["choices"][0]["message"]["content"]


def test_json_prefix_check_tells_cut_json_from_invalid_json() -> None:
    for cut in ['{', '{"a', '{"a":', '{"a":1,', '{"a":tr', '{"a":"x\\', '{"a":[1,', '{"a": {"b": "c"}, "d": fals']:
        assert is_json_or_prefix(cut), cut
    for bad in ['{"a":}', '{,', '{"a" 1', '}', '{"a":1}}', '{"a":tx', '{"a"::']:
        assert not is_json_or_prefix(bad), bad


def test_readme_json_mode_and_schema(llm: Any) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant that outputs in JSON."},
        {"role": "user", "content": "Who won the world series in 2020"},
    ]
    # Sampled: a fixed seed, as a rare one runs the 135M model past max_tokens (seeds 0-59 all end their JSON).
    out = llm.create_chat_completion(messages=messages, response_format={"type": "json_object"}, max_tokens=200,
                                     seed=0)  # fmt: skip
    # Sampled free-form JSON from a 135M model may run past max_tokens; cut, it must still be the start of valid JSON.
    assert_json_object_or_cut(out["choices"][0]["message"]["content"], out["choices"][0]["finish_reason"])
    out = llm.create_chat_completion(
        messages=messages, response_format={"type": "json_object", "schema": SCHEMA}, temperature=0.7, max_tokens=200,
        seed=0,
    )
    assert out["choices"][0]["finish_reason"] == "stop"
    value = json.loads(out["choices"][0]["message"]["content"])
    assert set(value) == {"team_name", "year"} and isinstance(value["team_name"], str) and type(value["year"]) is int


def test_readme_function_calling(llm: Any) -> None:
    out = llm.create_chat_completion(
        messages=[
            {"role": "system", "content": "A chat between a curious user and an artificial intelligence assistant."},
            {"role": "user", "content": "Extract Jason is 25 years old"},
        ],
        tools=[{"type": "function", "function": {"name": "UserDetail", "parameters": {
            "type": "object", "title": "UserDetail",
            "properties": {"name": {"title": "Name", "type": "string"}, "age": {"title": "Age", "type": "integer"}},
            "required": ["name", "age"]}}}],
        tool_choice={"type": "function", "function": {"name": "UserDetail"}},
        max_tokens=100,
        seed=0,  # sampled (temperature 0.2): on a rare seed the 135M model runs past max_tokens inside the call
    )  # fmt: skip
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "UserDetail" and call["id"]
    args = json.loads(call["function"]["arguments"])
    assert isinstance(args["name"], str) and type(args["age"]) is int


def test_parallel_tool_calls_false_keeps_the_first_call(llm: Any) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    two_calls = 'root ::= "<tool_call>{\\"name\\": \\"f\\", \\"arguments\\": {\\"a\\": 1}}</tool_call>" ' \
        '"<tool_call>{\\"name\\": \\"f\\", \\"arguments\\": {\\"a\\": 2}}</tool_call>"'
    kwargs = {"tools": [tool], "tool_choice": "auto", "grammar": two_calls, "max_tokens": 100, "temperature": 0}
    messages = [{"role": "user", "content": "Call f twice."}]
    both = llm.create_chat_completion(messages, **kwargs)["choices"][0]["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in both] == [{"a": 1}, {"a": 2}]
    (first,) = llm.create_chat_completion(messages, parallel_tool_calls=False, **kwargs)["choices"][0]["message"][
        "tool_calls"]  # fmt: skip
    assert json.loads(first["function"]["arguments"]) == {"a": 1}


def test_readme_embeddings(llm: Any) -> None:
    out = llm.create_embedding("Hello, world!")
    (item,) = out["data"]
    v = np.asarray(item["embedding"])
    assert v.shape == (llm.n_embd(),) and math.isclose(float(np.linalg.norm(v)), 1.0, rel_tol=1e-6)
    assert out["usage"]["prompt_tokens"] == len(llm.tokenize(b"Hello, world!"))
    # mean of the normed final states, computed here from the layer output and the norm weight
    ids = llm.tokenize(b"Hello, world!")
    h = llm.model.hidden_states(ids, [llm.model.n_layer])[0].astype(np.float64)
    w = llm.model.tensor("output_norm.weight")
    ref = (h / np.sqrt((h * h).mean(-1, keepdims=True) + 1e-5) * w).mean(0)
    assert np.allclose(v, ref / np.linalg.norm(ref), atol=1e-5)
    a, b, c = (np.asarray(x) for x in llm.embed(["The cat sat.", "A cat was sitting.", "Stock prices fell."]))
    assert a @ b > a @ c


def test_readme_logprobs(llm: Any) -> None:
    out = llm("The capital of France is", max_tokens=4, temperature=0, logprobs=3)
    lp = out["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == 4 == len(lp["token_logprobs"]) == len(lp["top_logprobs"])
    assert "".join(lp["tokens"]) == out["choices"][0]["text"]
    for token, value, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], strict=True):
        assert value <= 0 and top[token] == value and value == max(top.values())  # greedy: the best one
    chat = llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0,
                                      logprobs=True, top_logprobs=2)  # fmt: skip
    content = chat["choices"][0]["logprobs"]["content"]
    assert "".join(c["token"] for c in content) == chat["choices"][0]["message"]["content"]
    assert all(len(c["top_logprobs"]) == 2 and bytes(c["bytes"]).decode() == c["token"] for c in content)
    chunks = list(llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0,
                                             logprobs=True, top_logprobs=2, stream=True))  # fmt: skip
    streamed = [e for c in chunks if c["choices"][0]["logprobs"] for e in c["choices"][0]["logprobs"]["content"]]
    assert streamed == content


def _reference_penalties(ctx: list[int], logits: np.ndarray, last_n: int, rep: float, freq: float,
                         pres: float) -> np.ndarray:  # fmt: skip
    out = logits.copy()
    window = ctx[-last_n:]
    for t in set(window):
        c = window.count(t)
        x = out[t]
        x = x * rep if x <= 0 else x / rep
        out[t] = x - c * freq - pres
    return out


def test_penalties_follow_llama_cpp() -> None:
    from adadecode.logits import Penalties

    rng = np.random.default_rng(0)
    logits = rng.normal(size=100).astype(np.float32)
    ctx = [int(t) for t in rng.integers(0, 100, size=150)]
    got = logits.copy()
    Penalties(1.3, 0.2, 0.5, last_n=64)(np.asarray(ctx, dtype=np.int32), got)
    assert np.allclose(got, _reference_penalties(ctx, logits, 64, 1.3, 0.2, 0.5), atol=1e-6)


def test_repeat_penalty_and_logit_bias_change_the_output(llm: Any) -> None:
    prompt = "List: apple, apple, apple, apple, apple,"
    plain = llm(prompt, max_tokens=6, temperature=0)["choices"][0]["text"]
    penalized = llm(prompt, max_tokens=6, temperature=0, repeat_penalty=1.5)["choices"][0]["text"]
    assert plain != penalized
    first = llm.tokenize(plain.encode(), add_bos=False)[0]
    banned = llm(prompt, max_tokens=1, temperature=0, logit_bias={first: -100.0})["choices"][0]["text"]
    assert llm.tokenize(banned.encode(), add_bos=False)[0] != first
    forced = llm(prompt, max_tokens=1, temperature=0, logit_bias={"1234": 100.0})
    assert forced["choices"][0]["text"] == llm.detokenize([1234]).decode()


def test_user_logits_processor(llm: Any) -> None:
    def only_x(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        out = np.full_like(scores, -np.inf)
        out[87] = 0.0  # llama-cpp-python's processors return new scores
        return out

    out = llm("Hello", max_tokens=3, temperature=0, logits_processor=[only_x])
    assert out["choices"][0]["text"] == llm.detokenize([87, 87, 87]).decode()


GBNF = r"""root ::= "[" item ("," item)* "]"
item ::= "\"" [a-z]+ "\""
"""


def _every_check_exits(mode: str) -> dict[str, Any]:
    """gamma 0 with the exit policy off: heads emit every token early, so verification runs through the grammar's
    mask a lot (with the policy on, a check exits only where the head's measured agreement at that confidence
    pays)."""
    return {"gamma": 0.0, "adaptive_exits": False} if "ada" in mode else {}


@pytest.mark.parametrize("constraint", ["gbnf", "schema"])
def test_grammar_output_is_the_same_in_every_mode(llm: Any, constraint: str) -> None:
    from adadecode import LlamaGrammar

    prompt = "Three fruits as a JSON list of strings:" if constraint == "gbnf" else "A JSON object about a team:"
    kwargs: dict[str, Any] = (
        {"grammar": LlamaGrammar.from_string(GBNF)} if constraint == "gbnf"
        else {"response_format": {"type": "json_object", "schema": SCHEMA}}
    )  # fmt: skip
    outs = {m: llm(prompt, max_tokens=40, temperature=0, mode=m, **_every_check_exits(m), **kwargs) for m in MODES}
    texts = {m: o["choices"][0]["text"] for m, o in outs.items()}
    assert len(set(texts.values())) == 1, texts
    value = json.loads(texts["standard"])
    if constraint == "gbnf":
        assert isinstance(value, list) and all(isinstance(x, str) and x.isalpha() for x in value)
    else:
        assert set(value) == {"team_name", "year"}
    assert outs["adadecode"]["adadecode"]["n_verified"] > 0, "no early token went through the grammar's mask"


@pytest.mark.slow
def test_grammar_output_is_the_same_in_every_mode_on_qwen(engine: Any, cache_dir: Path) -> None:
    path = cache_dir / "models" / "qwen2.5-coder-0.5b.gguf"
    if not path.is_file():
        pytest.skip("Qwen2.5-Coder-0.5B is not in the cache")
    from adadecode import Llama

    qwen = Llama(str(path), n_ctx=1024, n_threads=2, heads="auto")
    messages = [{"role": "user", "content": "Describe a small software team as JSON."}]
    fmt = {"type": "json_object", "schema": SCHEMA}
    outs = {m: qwen.create_chat_completion(messages, max_tokens=48, temperature=0, mode=m, response_format=fmt,
                                           **_every_check_exits(m))
            for m in MODES}  # fmt: skip
    texts = {m: o["choices"][0]["message"]["content"] for m, o in outs.items()}
    assert len(set(texts.values())) == 1, texts
    if outs["standard"]["choices"][0]["finish_reason"] == "stop":
        assert set(json.loads(texts["standard"])) == {"team_name", "year"}
    assert outs["adadecode"]["adadecode"]["n_verified"] > 0, "no early token went through the grammar's mask"


def test_invalid_grammar_is_a_clear_error(llm: Any) -> None:
    from adadecode import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="gbnf") as info:
        llm("x", max_tokens=2, grammar="root ::= (")
    assert info.value.param == "grammar"


# --- bugs ---------------------------------------------------------------------------------------------------------

EMOJI = "Emoji: 🎉🐍🚀🎉🐍"


def test_a_partial_character_at_the_end_is_dropped(engine: Any, smollm2_path: Path, llm: Any) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "adadecode", "run", "-m", str(smollm2_path), "-p", EMOJI, "-n", "5", "--temp", "0",
         "--json", "-t", "2"], capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    text = json.loads(run.stdout)["text"]
    assert "\ufffd" not in text and text == "🚀"
    out = llm(EMOJI, max_tokens=5, temperature=0, mode="standard")
    assert out["choices"][0]["text"] == "🚀"
    pieces = [c["choices"][0]["text"] for c in llm(EMOJI, max_tokens=5, temperature=0, stream=True)]
    assert "".join(pieces) == "🚀"


def test_heads_auto_recognises_a_renamed_gguf(engine: Any, smollm2_path: Path, tmp_path: Path) -> None:
    from adadecode.heads import resolve_heads, shipped_heads

    if "smollm2-135m" not in shipped_heads():
        pytest.skip("no shipped SmolLM2 heads")
    renamed = tmp_path / "my-model.gguf"
    os.symlink(smollm2_path, renamed)
    assert resolve_heads("auto", str(renamed)) == shipped_heads()["smollm2-135m"]
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(FileNotFoundError, match="SHA-256"):
        resolve_heads("auto", str(other))


def test_gpu_warning_is_one_cli_line(engine: Any, smollm2_path: Path) -> None:
    from adadecode import _core

    if _core.has_gpu():
        pytest.skip("this build has a GPU")
    run = subprocess.run(
        [sys.executable, "-m", "adadecode", "run", "-m", str(smollm2_path), "-p", "Hi", "-n", "1", "-ngl", "99",
         "-t", "2"], capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    warning_lines = [line for line in run.stderr.splitlines() if "n_gpu_layers" in line or "Warning" in line]
    assert warning_lines == [warning_lines[0]] and warning_lines[0].startswith("adadecode: warning: n_gpu_layers")
    assert "RuntimeWarning" not in run.stderr and "warnings.warn" not in run.stderr


def test_mode_help_says_what_holds() -> None:
    run = subprocess.run([sys.executable, "-m", "adadecode", "run", "--help"], capture_output=True, text=True,
                         check=True, env=dict(os.environ, COLUMNS="200"))  # fmt: skip
    flat = " ".join(run.stdout.split())
    assert "all give the same output" not in flat and "identical in every mode" in flat


def test_chat_help_is_not_sent_to_the_model(smollm2_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    if shutil.which("true") is None:
        pytest.skip("no POSIX tools")
    child = pexpect.spawn(sys.executable, ["-m", "adadecode", "chat", "-m", str(smollm2_path), "-t", "1", "-c", "256"],
                          encoding="utf-8", timeout=120, env=dict(os.environ, TERM="dumb"))  # fmt: skip
    child.expect("> ")
    child.sendline("/help")
    child.expect("/reset")
    child.expect("> ")
    child.sendline("/bogus")
    child.expect("unknown command")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    transcript = child.before
    child.close()
    assert child.exitstatus == 0 and "tok/s" not in transcript


def test_n_batch_is_the_prefill_chunk_and_changes_no_output(engine: Any, smollm2_path: Path) -> None:
    from adadecode import InvalidRequestError, Llama

    prompt = "The quick brown fox jumps over the lazy dog. " * 3
    outputs, prefill_rows = [], []
    for n_batch in (512, 5):
        llm = Llama(str(smollm2_path), n_ctx=256, n_batch=n_batch)
        llm.model._engine.trace_passes(True)
        out = llm(prompt, max_tokens=8, temperature=0)
        n_prompt = out["usage"]["prompt_tokens"]
        # the prompt's last token goes through the first decoding pass; the ones before it are the prefill
        rows = [t["rows"] for t in llm.model._engine.take_pass_trace() if t["pos0"] < n_prompt - 1]
        outputs.append(out["choices"][0]["text"])
        prefill_rows.append(rows)
    assert outputs[0] == outputs[1]
    assert prefill_rows == [[30], [5] * 6]
    for bad in (0, -1, 2.5):
        with pytest.raises(InvalidRequestError, match="n_batch"):
            Llama(str(smollm2_path), n_ctx=64, n_batch=bad)


def test_constructor_extras(engine: Any, smollm2_path: Path, capsys: Any) -> None:
    from adadecode import Llama

    class LlamaPromptLookupDecoding:  # llama-cpp-python's draft model, as scripts pass it
        num_pred_tokens = 4

    llm = Llama(str(smollm2_path), n_ctx=0, verbose=True, seed=7, n_ubatch=256,
                draft_model=LlamaPromptLookupDecoding())  # fmt: skip
    assert llm.n_ctx() == int(llm.metadata["llama.context_length"]) == 8192
    assert llm.token_eos() == llm.model.vocab.eos and llm.token_bos() == llm.model.vocab.bos
    out = llm("Once upon a time", max_tokens=8)
    assert out["adadecode"]["mode"] == "ngram"
    assert out["choices"][0]["text"] == llm("Once upon a time", max_tokens=8)["choices"][0]["text"]  # seed=7
    err = capsys.readouterr().err
    assert "loaded" in err and "eval time" in err and "n_ubatch=256" in err
    with pytest.warns(UserWarning, match="training context"):
        Llama(str(smollm2_path), n_ctx=9000)
    assert Llama.from_pretrained(str(smollm2_path.parent), smollm2_path.name, n_ctx=64).n_ctx() == 64
