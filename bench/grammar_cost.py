"""What a grammar costs per token: decode speed with a JSON schema against unconstrained, side by side.

For every prompt, unconstrained and schema-constrained generations alternate (greedy, same mode, same length budget),
``--reps`` times; reported are the median decode tokens/s of each, their ratio, and the grammar's own time per token
(llguidance's mask plus applying it, measured inside the logits processor). Writes JSON and Markdown.

    python bench/grammar_cost.py -m smollm2-135m -m qwen2.5-coder-0.5b -t 2 -o bench/results/grammar/cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from adadecode import Llama
from adadecode.bench.machine import cpu_class
from adadecode.grammar import GrammarProcessor, from_request

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "skills": {"type": "array", "items": {"type": "string"}},
        "city": {"type": "string"},
    },
    "required": ["name", "age", "skills", "city"],
}
PROMPTS = [
    "Describe a fictional software engineer as JSON with name, age, skills and city.",
    "Give me a JSON record for a chef: name, age, skills, city.",
    "Return a JSON object describing a pilot (name, age, a list of skills, city).",
    "Invent a musician and describe them in JSON: name, age, skills, city.",
]



def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    llm = Llama(name, n_ctx=1024, n_threads=args.threads)
    model = llm.model
    grammar = from_request(None, {"type": "json_schema", "json_schema": {"schema": SCHEMA}}, None)
    free, constrained, mask_ms = [], [], []
    for prompt in PROMPTS[: args.prompts]:
        ids = llm.chat_prompt_ids([{"role": "user", "content": prompt}])
        for _ in range(args.reps):
            gen = model.generate(ids, max_tokens=args.max_tokens, temperature=0, mode=args.mode)
            free.append(gen.stats["tokens_per_second"])
            proc = GrammarProcessor(model, grammar, len(ids))
            gen = model.generate(ids, max_tokens=args.max_tokens, temperature=0, mode=args.mode, logits_processor=proc)
            constrained.append(gen.stats["tokens_per_second"])
            if gen.finish_reason == "stop":  # the grammar ended it: the object is complete
                json.loads(gen.text)
            mask_ms.append(1e3 * proc.mask_seconds / max(1, proc.calls))
    f, c = statistics.median(free), statistics.median(constrained)
    return {"model": name, "mode": args.mode, "unconstrained_tps": round(f, 2), "schema_tps": round(c, 2),
            "ratio": round(c / f, 3), "mask_ms_per_token": round(statistics.median(mask_ms), 3),
            "samples": len(free)}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-m", "--model", action="append", required=True, help="GGUF path or known model name (repeat)")
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--mode", default="standard", choices=["standard", "ngram"])
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("-o", "--output", type=Path, default=None)
    args = p.parse_args()
    if args.threads < 1 or args.reps < 1 or not 1 <= args.prompts <= len(PROMPTS) or args.max_tokens < 8:
        p.error(f"need --threads >= 1, --reps >= 1, --prompts in 1..{len(PROMPTS)}, --max-tokens >= 8")
    start = time.time()
    rows = [run_model(m, args) for m in args.model]
    report = {"command": " ".join(["python", *sys.argv]), "cpu_class": cpu_class(), "threads": args.threads,
              "seconds": round(time.time() - start, 1), "rows": rows}  # fmt: skip
    lines = [f"# Grammar cost: JSON schema against unconstrained ({report['cpu_class']}, {args.threads} threads, "
             f"{args.mode})", "", f"Command: `{report['command']}`", "",
             "| model | unconstrained tok/s | with schema tok/s | ratio | grammar ms/token |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {Path(r['model']).stem} | {r['unconstrained_tps']} | {r['schema_tps']} | {r['ratio']} | "
                     f"{r['mask_ms_per_token']} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        args.output.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
