"""Property-based tests of the tokenizer (hypothesis): random unicode never crashes it, the ids equal Hugging Face's,
the round trip gives the text back, invalid UTF-8 is reported at the right byte, and the stream decoder agrees with
detokenize for any id sequence. Shares the cases (and their cached references) with test_tokenizer.py."""

from __future__ import annotations

import unicodedata

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import test_tokenizer as tt  # noqa: E402
from adadecode import _core  # noqa: E402

# database=None: no .hypothesis/ directory in the checkout; the seeds that matter are in the corpus.
FUZZ = settings(max_examples=250, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# Characters where tokenizers go wrong: whitespace of every kind, apostrophes, digits of several systems, marks
# (decomposed text), ZWJ/variation selectors, the pieces of special tokens, CR/LF.
TRICKY = list(" \t\n\r\u000b\u000c\u0085\u00a0\u1680\u2000\u2028\u2029\u202f\u3000\u200b\u200c\u200d\ufeff\ufe0f"
              "'’sStTrReEvVmMlLdDſ0123456789٣५²Ⅻ①aé漢字かカ한ß𝔸😀👩🏽\U0001f1ef\U0001f1f5<|>/_im_end"
              "\u0301\u0308\u0323\u093c\u3099\u1161\u11a8ᄀ")

texts = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.sampled_from(TRICKY), max_size=60),
    st.lists(st.sampled_from(["<|im_end|>", "<|im_start|>", "<|endoftext|>", "</s>", "<tool_call>", " ", "\n",
                              "it's", "123", "é", "e\u0301"]) | st.text(max_size=5), max_size=12).map("".join),
)

KEYS = {"smollm2": (tt.SMOL, None), "qwen2.5": (tt.QWEN, None), "spm": "spm"}


@pytest.fixture(scope="module", params=list(KEYS), ids=list(KEYS))
def fcase(request, smollm2_path):  # smollm2_path (conftest) fetches SmolLM2 if needed
    return tt._case(KEYS[request.param])


@FUZZ
@given(text=texts)
def test_fuzz_matches_hugging_face_and_round_trips(fcase, text):
    v = fcase.vocab
    for parse_special in (True, False):
        fcase.hf.encode_special_tokens = not parse_special
        try:
            expected = fcase.hf.encode(text, add_special_tokens=False).ids
        finally:
            fcase.hf.encode_special_tokens = False
        ids = v.tokenize(text, add_special=False, parse_special=parse_special)
        assert ids == expected, (text, parse_special)
    back = v.detokenize(ids, special=True)
    if v.model == "llama":
        if any(t in text for t in tt._added_texts(fcase)):
            return  # the dummy prefix after an added token is not given back (Hugging Face and llama.cpp alike)
    elif tt._missing_bytes(v) & set(text.encode()):
        return  # bytes the vocabulary cannot represent are dropped (as Hugging Face does)
    expect = unicodedata.normalize("NFC", text) if v.pre_tokenizer == "qwen2" else text
    assert back == expect


@FUZZ
@given(data=st.binary(max_size=40))
def test_fuzz_invalid_utf8_names_the_offset(fcase, data):
    try:
        data.decode("utf-8")
        valid, offset = True, None
    except UnicodeDecodeError as e:
        valid, offset = False, e.start
    if valid:
        fcase.vocab.tokenize(data)
    else:
        with pytest.raises(_core.Error, match=f"byte offset {offset}$"):
            fcase.vocab.tokenize(data)


@FUZZ
@given(data=st.data())
def test_fuzz_stream_decoder(fcase, data):
    v = fcase.vocab
    ids = data.draw(st.lists(st.integers(0, v.n_tokens - 1), max_size=24))
    special = data.draw(st.booleans())
    dec = _core.StreamDecoder(v, special)
    out = "".join(dec.push(i) for i in ids) + dec.flush()
    assert out == v.detokenize(ids, special=special)
    raw = v.detokenize_bytes(ids, special=special)
    if v.model == "gpt2":
        assert out == raw.decode("utf-8", errors="replace")
