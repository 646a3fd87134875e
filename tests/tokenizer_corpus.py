# ruff: noqa: E501  (the code samples are kept verbatim, one per line)
"""A deterministic corpus of varied strings for checking the tokenizer against Hugging Face `tokenizers`.

build_corpus() returns >= 2,000 strings: source code in several languages, prose in many scripts, emoji (ZWJ
sequences, flags, skin tones, keycaps), long runs of spaces/newlines/tabs, digits of every length and numeral
system, contractions in any case, special-token strings inside text, CRLF, NBSP and zero-width characters,
decomposed (non-NFC) text, and seeded random mixtures of all of these.

Run as a script to print a summary: python3 tests/tokenizer_corpus.py
"""

from __future__ import annotations

import random
import unicodedata

CODE = [
    '''def fib(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n''',
    '''class Stack:\n\tdef __init__(self):\n\t\tself.items = []\n\n\tdef push(self, x):\n\t\tself.items.append(x)  # O(1)\n''',
    '''import numpy as np\nx = np.linspace(0, 2*np.pi, 100)\nprint(f"{x.mean():.3f} {x.std()!r:>10}")\n''',
    '''#include <stdio.h>\n\nint main(int argc, char **argv) {\n    for (int i = 0; i < 10; ++i) {\n        printf("%d\\n", i * i);\n    }\n    return 0;\n}\n''',
    '''template <typename T>\nstd::vector<T> merge(const std::vector<T>& a, const std::vector<T>& b) {\n  std::vector<T> out; out.reserve(a.size()+b.size());\n  std::merge(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));\n  return out;\n}''',
    '''const fetchData = async (url) => {\n  const res = await fetch(url, { method: 'GET' });\n  if (!res.ok) throw new Error(`HTTP ${res.status}`);\n  return res.json();\n};\n''',
    '''fn main() {\n    let v: Vec<u32> = (1..=10).filter(|x| x % 2 == 0).collect();\n    println!("{:?}", v);\n}\n''',
    '''package main\n\nimport "fmt"\n\nfunc main() {\n\tch := make(chan int, 3)\n\tgo func() { ch <- 42 }()\n\tfmt.Println(<-ch)\n}\n''',
    '''SELECT u.id, COUNT(o.id) AS n_orders\nFROM users u LEFT JOIN orders o ON o.user_id = u.id\nWHERE u.created_at >= '2024-01-01'\nGROUP BY u.id HAVING COUNT(o.id) > 5;\n''',
    '''<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>Test</title></head>\n<body><div class="a b" id='x'>&nbsp;&lt;hi&gt;</div></body>\n</html>''',
    '''#!/usr/bin/env bash\nset -euo pipefail\nfor f in *.txt; do\n  wc -l "$f" | awk '{print $1}' >> counts.log\ndone\n''',
    '''{"name": "adadecode", "version": "0.1.0", "deps": ["numpy>=1.24", "jinja2"], "nested": {"a": [1, 2.5, -3e-7, null, true]}}''',
    '''server:\n  port: 8080\n  hosts:\n    - "a.example.com"\n    - b.example.com\n  tls: {enabled: false}\n''',
    '''public class Hello {\n    public static void main(String[] args) {\n        System.out.println("Hello, " + args[0] + "!");\n    }\n}''',
    '''\\begin{equation}\n  \\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}\n\\end{equation}''',
    '''x <- c(1, 2, 3)\nmean(x); sd(x)\nlibrary(ggplot2)\nggplot(df, aes(x=a, y=b)) + geom_point()''',
    '''    if (x != null && x.length >= 2) {\r\n        return x[0] ?? x[1];\r\n    }\r\n''',
    '''diff --git a/f.py b/f.py\n@@ -1,3 +1,4 @@\n-old line\n+new line\n+another   line\n''',
    '''let re = /^([a-z0-9_\\.-]+)@([\\da-z\\.-]+)\\.([a-z\\.]{2,6})$/;''',
    '''a=1;b=2;c=a+b*3-(4/5)%6;d=a<<2|b>>1&c^~d;e=a&&b||!c;f=a===b!==c;''',
    '''    \n\t\t  \n\n\n    def f():\n\t    pass    \n''',
]

PROSE = {
    "en": "The quick brown fox jumps over the lazy dog. It's 5 o'clock somewhere, isn't it? We'll see.",
    "en2": "Don't panic! I've been there, you'd know, they're sure, she'll go, we've done it, I'm here.",
    "de": "Größere Übungen für Bären: Straße, Maß, Fußgänger — „Anführungszeichen“ und ‚halbe‘.",
    "fr": "L'été dernier, à Paris, j'ai mangé des crêpes; c'était délicieux ! « Bien sûr », dit-il.",
    "es": "¿Dónde está la biblioteca? ¡Qué día tan bonito! El niño comió piñata y jalapeños.",
    "tr": "İstanbul'da ılık bir gün; Iğdır, şöyle böyle, çok güzel. İIıi",
    "vi": "Tiếng Việt có nhiều dấu: ă â ê ô ơ ư đ, và thanh điệu: à á ả ã ạ.",
    "zh": "我爱自然语言处理。今天天气很好，我们去公园散步吧！这是一个测试句子，包含标点符号：“引号”、《书名》。",
    "zh_tw": "繁體中文測試：臺灣、香港、澳門。龜鱉鬱。",
    "ja": "日本語のテキストです。ひらがな、カタカナ、漢字が混ざっています。ｶﾀｶﾅ半角も！",
    "ko": "안녕하세요, 세계! 한국어 문장을 토큰화합니다. 읽고 쓰기.",
    "ru": "Съешь же ещё этих мягких французских булок, да выпей чаю. Ёжик в тумане.",
    "uk": "Гей, хлопці, вставаймо! Ґанок, їжак, Європа, ще.",
    "el": "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Αλφάβητο: αβγδεζηθικλμνξοπρστυφχψω ΆΈΉΊΌΎΏ.",
    "ar": "مرحبا بالعالم! هذه جملة عربية للاختبار، مع أرقام ١٢٣٤٥٦٧٨٩٠ وتشكيل: كَتَبَ.",
    "fa": "سلام دنیا! این یک جمله فارسی است با اعداد ۱۲۳۴۵۶۷۸۹۰.",
    "he": "שלום עולם! זהו משפט בעברית עם ניקוד: שָׁלוֹם.",
    "hi": "नमस्ते दुनिया! यह हिंदी में एक वाक्य है। क्षत्रिय, ज्ञान, श्री। १२३४५",
    "bn": "আমি বাংলায় গান গাই। বাংলা ভাষা সুন্দর। ১২৩৪",
    "ta": "வணக்கம் உலகம்! தமிழ் ஒரு பழமையான மொழி.",
    "th": "สวัสดีชาวโลก ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ ๑๒๓๔",
    "lo": "ສະບາຍດີ ພາສາລາວ",
    "km": "សួស្តី​ពិភពលោក",
    "my": "မင်္ဂလာပါ ကမ္ဘာလောက",
    "ka": "გამარჯობა მსოფლიო! ქართული ანბანი.",
    "hy": "Բարեւ աշխարհ! Հայերեն այբուբեն։",
    "am": "ሰላም ለዓለም! አማርኛ ፊደል።",
    "si": "ආයුබෝවන් ලෝකය",
    "te": "నమస్కారం ప్రపంచం",
    "gu": "નમસ્તે દુનિયા",
    "pa": "ਸਤਿ ਸ੍ਰੀ ਅਕਾਲ ਦੁਨੀਆ",
    "bo": "བཀྲ་ཤིས་བདེ་ལེགས།",
    "mn": "ᠮᠣᠩᠭᠣᠯ ᠪᠢᠴᠢᠭ",
    "chr": "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ",
    "math": "∀x∈ℝ: x²≥0; ∑ᵢ₌₁ⁿ i = n(n+1)/2; √2 ≈ 1.414; ∞ ≠ ∅; ℵ₀ < 𝔠; 𝔸𝔹ℂ 𝐀𝐁𝐂 𝒜ℬ𝒞",
    "ipa": "ˈɪntərˌnæʃənəl fəˈnɛtɪk ˈælfəbɛt: θ ð ʃ ʒ ŋ ɲ ʔ",
    "old": "𐌰𐌱𐌲 𐤀𐤁𐤂 𓀀𓀁𓀂 𒀀𒀁 ᚠᚢᚦᚨᚱᚲ",
}

EMOJI = [
    "😀", "😂🤣", "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🏴‍☠️", "🇺🇸🇯🇵🇫🇷🇩🇪", "🇬🇧", "❤️", "❤️‍🔥", "1️⃣", "#️⃣", "*️⃣",
    "🧑🏿‍🤝‍🧑🏻", "👁️‍🗨️", "🐈‍⬛", "🫠", "🥲", "☺️", "✌🏾", "🤷‍♀️", "🙋🏼‍♂️", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "©️®️™️", "⌚⌛",
]

SPECIAL_STRINGS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "</s>", "<s>", "<unk>", "<pad>", "<|im_", "<|im_end", "|im_end|>", "<<|im_end|>>", "<|im_end|><|im_end|>",
    "<tool_call>", "</tool_call>", "<tool_call>{\"name\": \"f\"}</tool_call>", "<|fim_prefix|>def<|fim_suffix|>",
    "<|fim_middle|>", "<repo_name>", "<file_sep>", "<filename>", "<gh_stars>", "<jupyter_code>", "<empty_output>",
    "<|endoftext|>hello", "hello<|endoftext|>", " <|endoftext|> ", "<|endoftext|><|endoftext|>", "[PAD151665]",
    "<|eot_id|>", "<|begin_of_text|>", "<0x41>", "<|vision_start|><|image_pad|><|vision_end|>",
]

CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Re", "'rE", "'VE", "'M", "'LL",
                "'Ll", "'D", "'x", "'", "''", "'''s", "'ſ", "’s", "’re", "`s", "'s'", "'ll'", "'dd", "'sss"]

WHITESPACE = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", "\r\n\r\n", " \n", "\n ", " \t ",
              "\u00a0", "\u00a0\u00a0", "\u2009", "\u200a", "\u2002", "\u2003", "\u3000", "\u1680", "\u2028",
              "\u2029", "\u0085", "\u202f", "\u205f", "\u000b", "\u000c", "\u001c", "\u001d", "\u001e", "\u001f"]

ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e", "\u2061", "\u034f", "\ufe0f"]

DIGIT_SYSTEMS = ["0123456789", "٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "०१२३४५६७८९", "০১২৩৪৫৬৭৮৯", "๐๑๒๓๔๕๖๗๘๙",
                 "０１２３４５６７８９", "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗", "²³¹¼½¾", "ⅠⅡⅢⅣⅤⅥⅦⅧⅨⅩ", "①②③④⑤", "〇一二三", "𐒠𐒡𐒢"]

# Decomposed and otherwise non-NFC text (Qwen2's tokenizer normalizes to NFC first).
NON_NFC = ["e\u0301", "Cafe\u0301", "A\u030a", "\u212b", "\u2126", "o\u0308\u0304", "a\u0323\u0302", "a\u0302\u0323",
           "\u1100\u1161\u11a8", "\u1112\u1161\u11ab\u1100\u1173\u11af", "\u0958", "\u0915\u093c", "\u1e9b\u0323",
           "\u0041\u0300\u0301\u0302", "\u00e9\u0301", "\uf900", "\u2000", "\u0340", "\u0344", "\u0f73",
           "n\u0303o\u0303", "\u05d0\u05b7", "\u30ab\u3099", "\u304b\u3099", "\u0ddd", "\u0cca\u0cd5", "ﬁ ﬂ ﬃ",
           "\u00c5\u0327", "e\u0327\u0301", "i\u0307\u0301", "\u0391\u0313\u0300\u0345"]

WORDS = ["the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as", "with",
         "his", "they", "I", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but", "not",
         "what", "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each", "which",
         "tokenizer", "transformer", "antidisestablishmentarianism", "Pneumonoultramicroscopic", "CamelCaseWord",
         "snake_case_word", "kebab-case-word", "HTTPServer", "iPhone", "eBay", "x86_64", "UTF-8", "GPU", "LLaMA"]


def _random_unicode_char(rng: random.Random) -> str:
    """A random assigned code point, weighted towards the planes where text lives."""
    while True:
        r = rng.random()
        if r < 0.3:
            cp = rng.randint(0x20, 0x7E)
        elif r < 0.5:
            cp = rng.randint(0xA0, 0x2FFF)
        elif r < 0.7:
            cp = rng.randint(0x3000, 0xD7FF)
        elif r < 0.8:
            cp = rng.randint(0xE000, 0xFFFD)
        else:
            cp = rng.randint(0x10000, 0x3134F)
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        if unicodedata.category(ch) == "Cn":
            continue
        return ch


def _fragments() -> list[str]:
    frags = []
    frags += CODE
    frags += list(PROSE.values())
    frags += EMOJI + SPECIAL_STRINGS + CONTRACTIONS + WHITESPACE + ZERO_WIDTH + DIGIT_SYSTEMS + NON_NFC + WORDS
    return frags


def build_corpus(n_random: int = 1800, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    corpus: list[str] = []
    corpus += CODE
    corpus += [c.replace("\n", "\r\n") for c in CODE[:8]]
    corpus += [c.replace("    ", "\t") for c in CODE[:8]]
    corpus += list(PROSE.values())
    corpus += [p.upper() for p in PROSE.values()] + [p.lower() for p in PROSE.values()]
    corpus += [" " + p for p in PROSE.values()] + [p + "\n" for p in PROSE.values()]
    corpus += EMOJI + ["".join(EMOJI)] + [" ".join(EMOJI)] + ["a" + e + "b" for e in EMOJI]
    corpus += SPECIAL_STRINGS + ["x" + s + "y" for s in SPECIAL_STRINGS] + [" " + s + " " for s in SPECIAL_STRINGS]
    corpus += ["it" + c + " " + c.upper() + " word" + c for c in CONTRACTIONS]
    corpus += [w * k for w in WHITESPACE for k in (1, 2, 3, 7, 33)]
    corpus += ["a" + w + "b" + w + w + "c" + w * 5 for w in WHITESPACE]
    corpus += ["x" + z + "y" + z + " " + z for z in ZERO_WIDTH]
    corpus += ["\n" * k + "text" + " " * k + "\t" * k + "end" + "\r\n" * k for k in range(0, 20)]
    corpus += [" " * k + "1" for k in range(1, 12)] + [" " * k + "a" for k in range(1, 12)]
    corpus += [" " * k + "!" for k in range(1, 12)] + ["\n" * k + " a" for k in range(1, 6)]
    # Digits of every length, in several numeral systems, in and around words.
    for k in range(1, 41):
        s = "".join(str(rng.randint(0, 9)) for _ in range(k))
        corpus += [s, " " + s, "x" + s + "y", s + "." + s[::-1], "-" + s + "e-" + str(k)]
    for system in DIGIT_SYSTEMS:
        corpus += [system, " " + system + " " + system[::-1], "n=" + system[:3] + ",m=" + system[-2:]]
    corpus += ["1,234,567.89", "3.14159", "1e-10", "0xDEADBEEF", "0b1010", "v1.2.3", "2024-05-01T12:34:56Z",
               "$1,000", "50%", "№5", "½ cup", "12:30pm", "+1 (555) 123-4567", "192.168.0.1", "10^9+7"]
    corpus += NON_NFC + [" " + s + " " + s + "x" for s in NON_NFC]
    corpus += [unicodedata.normalize("NFD", p) for p in PROSE.values()]
    corpus += [unicodedata.normalize("NFKD", p) for p in list(PROSE.values())[:10]]
    corpus += ["", " ", "a", "\n", "\u00a0", "'", "''", "\r\n", "\t \t", "\x00", "\x01\x02\x7f", "\ufffd", "\U0010fffd"]
    # Seeded random mixtures of everything above, and random unicode.
    frags = _fragments()
    for _ in range(n_random):
        kind = rng.random()
        if kind < 0.45:
            k = rng.randint(1, 8)
            parts = [rng.choice(frags) for _ in range(k)]
            seps = ["", " ", "\n", "  ", "\t", "\r\n", ", "]
            s = parts[0]
            for p in parts[1:]:
                s += rng.choice(seps) + p
        elif kind < 0.7:
            s = "".join(_random_unicode_char(rng) for _ in range(rng.randint(1, 40)))
        elif kind < 0.85:
            words = [rng.choice(WORDS) for _ in range(rng.randint(1, 25))]
            out = []
            for w in words:
                r = rng.random()
                w = w.upper() if r < 0.1 else w.capitalize() if r < 0.25 else w
                if rng.random() < 0.15:
                    w += rng.choice(CONTRACTIONS)
                if rng.random() < 0.1:
                    w += str(rng.randint(0, 10 ** rng.randint(1, 12)))
                out.append(w)
                out.append(rng.choice([" ", " ", " ", "  ", "\n", ", ", ". ", "\t", "\u00a0", "-", "_"]))
            s = "".join(out)
        else:
            alphabet = ("ab 1\n\t'\r.\u00a0\u200b\u0301é漢😀<|>" + "".join(WHITESPACE[:6]))
            s = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        corpus.append(s)
    return corpus


def long_text(n_chars: int = 1_000_000, seed: int = 7) -> str:
    """A long mixed text (code, prose in many scripts, numbers) for speed measurements."""
    rng = random.Random(seed)
    parts = []
    total = 0
    pool = CODE + list(PROSE.values()) + [" ".join(WORDS)]
    while total < n_chars:
        p = rng.choice(pool)
        parts.append(p)
        total += len(p) + 1
    return "\n".join(parts)[:n_chars]


if __name__ == "__main__":
    c = build_corpus()
    print(len(c), "strings,", sum(len(s) for s in c), "code points")
