"""Exit-head data at scale: teacher-forced feature collection (resumable, identical after an interruption), the
online trainer over head designs (better than the identity start, resumes to the same heads), the expected time
saved per token, and clear errors on bad feature directories."""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from adadecode.collect_features import (  # noqa: E402
    CollectConfig,
    FeatureError,
    collect,
    complete_shards,
    load_shard,
)
from adadecode.saving import CostModel, best_layer_set, expected_saving  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CURVE = REPO / "bench" / "results" / "packed" / "microbench-qwen2.5-coder-0.5b-t2.json"


# Small on purpose (this file once took ~6 minutes): windows of 64 tokens, 56 rows each after the skipped 8, two
# windows a shard, six shards; every 5th window held out (windows 4 and 9: 112 rows), 560 training rows.
WINDOW, SKIP, SHARD_WINDOWS, SHARDS = 64, 8, 2, 6
SHARD_ROWS = (WINDOW - SKIP) * SHARD_WINDOWS
POSITIONS = SHARDS * SHARD_ROWS


def _cfg(model: Any, **kw: Any) -> CollectConfig:
    base = dict(model=Path(model.path).name, fingerprint=int(model.fingerprint), n_layer=model.n_layer,
                n_embd=model.n_embd, layers=[8, 15, 22, 25], window=WINDOW, skip=SKIP, shard_windows=SHARD_WINDOWS,
                seed=3, sources=["code"], code_share=1.0, heldout_package="networkx", self_prompts=0, gen_tokens=0,
                max_doc_tokens=400)
    base.update(kw)
    return CollectConfig(**base)


@pytest.fixture(scope="module", autouse=True)
def scan_code_once() -> Any:
    """The site-packages scan (seconds) once for the module, not once per collection: the same sorted list."""
    import adadecode.collect_features as cf

    original = cf.code_files
    scan = functools.cache(lambda held: tuple(original(held)))
    mp = pytest.MonkeyPatch()
    mp.setattr(cf, "code_files", lambda held: list(scan(held)))  # a fresh list: DocStream shuffles it in place
    yield
    mp.undo()


@pytest.fixture(scope="module")
def smol(engine: Any, smollm2_path: Path) -> Any:
    return engine(str(smollm2_path), n_ctx=256, n_threads=2)


@pytest.fixture(scope="module")
def features(smol: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One collection shared by every test here (they copy it before changing anything)."""
    out = tmp_path_factory.mktemp("feat") / "a"
    r = collect(smol, _cfg(smol), out, positions=POSITIONS, progress=False)
    assert r["rows"] == POSITIONS and r["shards"] == SHARDS
    return out


def test_sources_leave_out_the_heldout_package_and_benchmarks() -> None:
    from adadecode.collect_features import DocStream, code_files

    files = code_files("networkx")
    assert files == sorted(files) and len(files) > 100
    parts = [[p.lower() for p in f.parts] for f in files]
    assert not any("networkx" in ps for ps in parts)
    banned = ("human_eval", "humaneval", "mbpp", "mt_bench", "tests")
    assert not any(b in part for ps in parts for part in ps[-3:] for b in banned)
    assert any(f.name == "json" or f.parent.name == "json" for f in files)  # the stdlib is there
    # self-generated answers: one document in 8 while they last, after the code files' seeded order
    cfg = CollectConfig(model="m", fingerprint=0, n_layer=4, n_embd=8, layers=[2], window=16, skip=0,
                        shard_windows=1, seed=3, sources=["code", "self"], code_share=1.0, heldout_package="networkx",
                        self_prompts=3, gen_tokens=4, max_doc_tokens=50)
    stream = DocStream(cfg, Path("/nonexistent"), [{"ids": [1, 2]}] * 3)
    assert [i for i, (src, _) in enumerate(stream.plan) if src == "self"] == [7, 15, 23]
    assert {src for src, _ in stream.plan} == {"code", "self"} and len(stream.plan) == len(files) + 3
    assert [k for src, k in stream.plan if src == "code"] == list(range(len(files)))
    again = DocStream(cfg, Path("/nonexistent"), [{"ids": [1, 2]}] * 3)
    assert again.code == stream.code and again.code != files  # seeded shuffle, the same every time


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("shard-*"))}


def test_collection_resumes_to_identical_shards(smol: Any, features: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    cfg = _cfg(smol)
    r = collect(smol, cfg, out, positions=POSITIONS, progress=False, stop_after_shards=2)
    assert r["shards"] == 2
    # a shard torn by a kill: its arrays without the metadata that marks it complete -> redone
    shutil.copy(features / "shard-00002.npy", out / "shard-00002.npy")
    (out / "shard-00002.rows.npy").write_bytes(b"garbage")
    r = collect(smol, cfg, out, positions=POSITIONS, progress=False)
    assert r["shards"] == SHARDS and r["new_rows"] == (SHARDS - 2) * SHARD_ROWS
    assert _files(out) == _files(features)
    meta = complete_shards(out)[0]
    states, rows = load_shard(out, meta)
    assert states.dtype == np.float16 and states.shape == (len(cfg.layers) + 1, SHARD_ROWS, smol.n_embd)
    # the stored rows are the engine's teacher-forced states, the last one before the final norm
    assert rows[0, 1] == 8 and rows[-1, 0] == 1


def test_collection_refuses_other_settings_and_corrupt_shards(smol: Any, features: Path, tmp_path: Path) -> None:
    with pytest.raises(FeatureError, match="other settings"):
        collect(smol, _cfg(smol, window=32), features, positions=POSITIONS, progress=False)
    bad = tmp_path / "bad"
    shutil.copytree(features, bad)
    data = (bad / "shard-00002.npy").read_bytes()
    (bad / "shard-00002.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(FeatureError, match="shard 2 .* corrupt"):
        load_shard(bad, complete_shards(bad)[2])


def _train_args(model_path: Path, feats: Path, work: Path, out: Path, *extra: str) -> argparse.Namespace:
    from adadecode.train_heads import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args([
        "-m", str(model_path), "-o", str(out), "--features", str(feats), "--layers", "15,22",
        "--designs", "dense,lowrank:32,mlp:32", "--steps", "16", "--batch", "64", "--lr", "3e-3",
        "--vocab-subset", "2048", "--holdout-every", "5", "--threads", "2", "--no-progress", "--curve", str(CURVE),
        "--workdir", str(work), "--checkpoint-every", "6", *extra,
    ])


def test_feature_training_beats_identity_and_resumes_bitwise(engine: Any, smollm2_path: Path, features: Path,
                                                             tmp_path: Path) -> None:
    from adadecode.heads_format import read_heads
    from adadecode.train_heads import train

    # the two-layer design is written (heads format 2), so the whole chain to the engine is exercised for it
    write = ("--write-design", "mlp:32")
    a = train(_train_args(smollm2_path, features, tmp_path / "wa", tmp_path / "a.gguf", *write))
    rep = a["report"]["designs"]
    for spec in ("dense", "lowrank:32", "mlp:32"):
        for layer in ("15", "22"):
            assert rep[spec]["layers"][layer]["kl"] < rep["identity"]["layers"][layer]["kl"], (spec, layer)
        assert rep[spec]["best_saving"] > rep["identity"]["best_saving"], spec
        assert rep[spec]["engine_runs"], spec
    # interrupted after 6 steps (a checkpoint), then resumed while the collection has grown by a shard: the same
    # heads to the bit (the resumed fit reads the shards it started with)
    growing = tmp_path / "growing"
    shutil.copytree(features, growing)
    train(_train_args(smollm2_path, growing, tmp_path / "wb", tmp_path / "b.gguf", *write, "--stop-after", "6"))
    last = max(int(p.stem.split("-")[1]) for p in growing.glob("shard-*.json"))
    meta = json.loads((growing / f"shard-{last:05d}.json").read_text())
    for suffix in (".npy", ".rows.npy"):
        shutil.copy(growing / f"shard-{last:05d}{suffix}", growing / f"shard-{last + 1:05d}{suffix}")
    (growing / f"shard-{last + 1:05d}.json").write_text(json.dumps({**meta, "shard": last + 1}))
    b = train(_train_args(smollm2_path, growing, tmp_path / "wb", tmp_path / "b.gguf", *write, "--resume"))
    assert b["report"]["train_rows"] == a["report"]["train_rows"]
    assert a["metadata"]["design"] == b["metadata"]["design"] == "mlp:32"
    ha, hb = read_heads(tmp_path / "a.gguf"), read_heads(tmp_path / "b.gguf")
    assert ha.layers == hb.layers and all(ha.design(la) == "mlp" for la in ha.layers)
    for layer in ha.layers:
        for wa, wb in zip(ha.mlps[layer], hb.mlps[layer], strict=True):
            np.testing.assert_array_equal(wa, wb)
    # the finished fit written again with a smaller checked vocabulary: the same heads, the first 512 tokens of the
    # same ranking, and the flag in the recorded command
    c = train(_train_args(smollm2_path, features, tmp_path / "wa", tmp_path / "c.gguf", *write, "--resume",
                          "--check-vocab", "512"))  # fmt: skip
    hc = read_heads(tmp_path / "c.gguf")
    assert hc.vocab is not None and ha.vocab is not None and len(hc.vocab) == 512 and len(ha.vocab) == 2048
    assert set(hc.vocab.tolist()) <= set(ha.vocab.tolist())
    for layer in ha.layers:
        for wa, wc in zip(ha.mlps[layer], hc.mlps[layer], strict=True):
            np.testing.assert_array_equal(wa, wc)
    assert "--check-vocab 512" in c["metadata"]["command"] and "512 tokens" in c["metadata"]["vocab_subset"]
    with pytest.raises(ValueError, match="--check-vocab 4096 needs --vocab-subset"):
        train(_train_args(smollm2_path, features, tmp_path / "wa", tmp_path / "d.gguf", *write, "--resume",
                          "--check-vocab", "4096"))  # fmt: skip
    # the engine runs what was written (both vocabularies), with output identical to standard decoding
    for name in ("a.gguf", "c.gguf"):
        m = engine(str(smollm2_path), n_ctx=256, heads=str(tmp_path / name))
        assert m.exit_layers == ha.layers
        ids = m.tokenize(m.apply_chat_template([{"role": "user", "content": "Write a Python function that adds."}]))
        assert m.generate(ids, max_tokens=24, mode="adadecode").tokens == m.generate(ids, max_tokens=24,
                                                                                     mode="standard").tokens


def test_feature_training_rejects_another_models_features(engine: Any, smollm2_path: Path, features: Path,
                                                          tmp_path: Path) -> None:
    from adadecode.train_heads import train

    other = tmp_path / "other"
    shutil.copytree(features, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["fingerprint"] ^= 1
    manifest["model"] = "qwen2.5-coder-0.5b.gguf"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FeatureError, match="collected with qwen2.5-coder-0.5b.gguf"):
        train(_train_args(smollm2_path, other, tmp_path / "w", tmp_path / "h.gguf"))
    with pytest.raises(FeatureError, match="not a feature directory"):
        train(_train_args(smollm2_path, tmp_path, tmp_path / "w2", tmp_path / "h.gguf"))
    with pytest.raises(FeatureError, match="holds the layers"):
        train(_train_args(smollm2_path, features, tmp_path / "w3", tmp_path / "h.gguf", "--layers", "10"))
    with pytest.raises(ValueError, match="--n-prompts: not used with --features"):
        train(_train_args(smollm2_path, features, tmp_path / "w4", tmp_path / "h.gguf", "--n-prompts", "5"))


def test_feature_training_fine_tunes_from_a_heads_file(smollm2_path: Path, features: Path, tmp_path: Path) -> None:
    """--init HEADS.gguf starts the dense heads from that file's transforms: with no steps the file comes back as it
    was, and a few steps move it; a file that does not fit the run is refused by name."""
    from adadecode.heads import resolve_heads
    from adadecode.heads_format import read_heads
    from adadecode.train_heads import add_arguments, train

    shipped = resolve_heads("smollm2-135m")
    start = read_heads(shipped)
    tune = ("--layers", "22,25", "--designs", "dense", "--init", str(shipped), "--write-layers", "22,25",
            "--vocab-subset", "0")  # fmt: skip
    same = train(_train_args(smollm2_path, features, tmp_path / "w0", tmp_path / "same.gguf", *tune, "--steps", "0"))
    assert f"--init {shipped.name}" in same["metadata"]["command"]
    assert same["metadata"]["init"] == f"{shipped.name}, SHA-256 {hashlib.sha256(shipped.read_bytes()).hexdigest()}"
    kept = read_heads(tmp_path / "same.gguf")
    for layer in (22, 25):
        np.testing.assert_array_equal(kept.transforms[layer], start.transforms[layer])
    assert kept.vocab is not None and start.vocab is not None
    np.testing.assert_array_equal(kept.vocab, start.vocab)
    tuned = train(_train_args(smollm2_path, features, tmp_path / "w1", tmp_path / "tuned.gguf", *tune, "--lr", "1e-3"))
    moved = read_heads(tmp_path / "tuned.gguf")
    assert all(not np.array_equal(moved.transforms[la], start.transforms[la]) for la in (22, 25))
    figures = tuned["report"]["designs"]
    assert all(figures["dense"]["layers"][la]["kl"] < figures["identity"]["layers"][la]["kl"] for la in ("22", "25"))
    with pytest.raises(ValueError, match="not at \\[15\\]"):
        train(_train_args(smollm2_path, features, tmp_path / "w2", tmp_path / "h.gguf", "--layers", "15,22",
                          "--designs", "dense", "--init", str(shipped)))  # fmt: skip
    with pytest.raises(ValueError, match="starts dense heads only"):
        train(_train_args(smollm2_path, features, tmp_path / "w3", tmp_path / "h.gguf", *tune[:2], "--init",
                          str(shipped)))  # fmt: skip
    with pytest.raises(ValueError, match="keep that file's 8192-token subset"):
        train(_train_args(smollm2_path, features, tmp_path / "w2", tmp_path / "h.gguf", *tune[:-2]))
    with pytest.raises(ValueError, match="--init must be identity, lstsq or a heads file"):
        train(_train_args(smollm2_path, features, tmp_path / "w4", tmp_path / "h.gguf", "--init", "lsq"))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(ValueError, match="starting from a heads file needs --features"):
        train(parser.parse_args(["-m", str(smollm2_path), "-o", str(tmp_path / "h.gguf"), "--init", str(shipped),
                                 "--workdir", str(tmp_path / "w5"), "--threads", "2"]))  # fmt: skip


def test_eval_heads_on_features(smollm2_path: Path, features: Path, tmp_path: Path) -> None:
    """The shipped SmolLM2 heads (22, 25) on the held-out windows: per-layer figures and the expected saving."""
    from adadecode.eval_heads import main

    out = tmp_path / "r.json"
    assert main(["-m", str(smollm2_path), "--heads", "smollm2-135m", "--features", str(features), "--holdout-every",
                 "5", "--curve", str(CURVE), "--threads", "2", "--json-out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["designs"]) == {"identity", "file"} and r["heldout_rows"] == 2 * (WINDOW - SKIP)
    layers = r["designs"]["file"]["layers"]
    assert set(layers) == {"22", "25"} and all(np.isfinite(v["saving"]) for v in layers.values())
    # trained heads beat the logit lens on KL at every layer
    assert all(layers[k]["kl"] < r["designs"]["identity"]["layers"][k]["kl"] for k in layers)


def test_eval_heads_on_a_prompt_file_caches_the_continuations(smollm2_path: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """--task FILE: the model's greedy continuations are generated once, cached where continuation_cache says (which
    bench/logit_lens.py reads too), and a second run on the cache gives the same figures."""
    from adadecode.eval_heads import continuation_cache, main

    monkeypatch.setenv("ADADECODE_CACHE", str(tmp_path / "cache"))
    task = tmp_path / "two.jsonl"
    task.write_text("".join(json.dumps({"messages": [{"role": "user", "content": c}]}) + "\n"
                            for c in ("Write a function that adds two numbers.", "Name three colours.")))
    args = ["-m", str(smollm2_path), "--heads", "smollm2-135m", "--task", str(task), "--limit", "0", "--gen-tokens",
            "12", "--curve", "none", "--threads", "2", "--no-progress"]
    assert main([*args, "--json-out", str(tmp_path / "a.json")]) == 0
    cached = continuation_cache(str(smollm2_path), str(task), 12)
    assert cached.is_relative_to(tmp_path / "cache") and len(cached.read_text().splitlines()) == 2
    assert main([*args, "--json-out", str(tmp_path / "b.json")]) == 0
    first, second = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert len(cached.read_text().splitlines()) == 2  # nothing generated again
    assert first["heads"] == second["heads"] and set(first["heads"]) == {"22", "25"}
    assert all(0.0 <= v["agreement"] <= 1.0 for v in first["heads"].values())


def test_layer_stats_count_the_final_tokens_the_subset_holds() -> None:
    """in_subset bounds agreement: a head over a vocabulary subset can only name the final token where it is in it."""
    import torch

    from adadecode.head_math import LayerStats

    final = torch.full((4, 10), -5.0)
    for row, token in enumerate((5, 9, 1, 3)):
        final[row, token] = 5.0
    head = torch.zeros(4, 3)
    head[:, 1] = 3.0  # always the subset's second token, 5
    stats = LayerStats((0.5,))
    stats.add(final, head, torch.tensor([1, 5, 7]))
    got = stats.summary()
    assert got["in_subset"] == 0.5 and got["agreement"] == 0.25
    whole = LayerStats((0.5,))
    whole.add(final, final, None)
    assert whole.summary()["in_subset"] == 1.0 and whole.summary()["agreement"] == 1.0


def test_expected_saving_formula() -> None:
    # the logits (0.2 of a token, a second row 0.6 extra) ride along with an accepted exit's upper layers
    costs = CostModel(n_layer=24, layer_share=0.75, marginal_row=0.3, check_per_byte=1e-9, logits_share=0.2,
                      logits_marginal_row=0.6)
    gain = 0.75 * (18 / 24) * 0.7 + 0.2 * 0.4
    loss = 0.75 * (6 / 24 + 0.3 * 18 / 24) + 0.2 * 0.6
    conf = np.array([[0.9, 0.9, 0.1, 0.1]])
    hit = np.array([[True, False, True, True]])
    r = expected_saving(conf, hit, [6], 0.75, costs, [1e6])
    assert r["saving"] == pytest.approx((gain - loss) / 4 - 1e-3)
    assert r["per_layer"][0]["exit"] == 0.5 and r["per_layer"][0]["precision"] == 0.5
    # a cascade: the second layer is only checked (and paid for) where the first did not exit
    conf2 = np.array([[0.9, 0.1, 0.1, 0.1], [0.0, 0.9, 0.9, 0.1]])
    hit2 = np.array([[True, False, False, False], [True, True, False, True]])
    r2 = expected_saving(conf2, hit2, [6, 12], 0.75, costs, [1e6, 2e6])
    g12, l12 = 0.75 * 0.5 * 0.7 + 0.2 * 0.4, 0.75 * (0.5 + 0.3 * 0.5) + 0.2 * 0.6
    assert r2["saving"] == pytest.approx((gain + g12 - l12 - 4 * 1e-3 - 3 * 2e-3) / 4)
    layers, best = best_layer_set(conf2, hit2, [6, 12], 0.75, costs, [1e6, 2e6])
    assert best["saving"] >= r2["saving"] and layers == [6]


def test_recorded_command_names_the_flags_that_shaped_the_heads(tmp_path: Path) -> None:
    from adadecode.train_heads import add_arguments, canonical_command

    p = argparse.ArgumentParser()
    add_arguments(p)
    feats = canonical_command(_train_args(tmp_path / "m.gguf", tmp_path / "feats", tmp_path / "w",
                                          tmp_path / "h.gguf", "--write-layers", "15"))  # fmt: skip
    assert "--features feats --designs dense,lowrank:32,mlp:32" in feats and "--write-layers 15" in feats
    assert f"--curve {CURVE.name}" in feats and "--vocab-subset 2048" in feats
    for generation_only in ("--data", "--n-prompts", "--gen-tokens", "--n-texts", "--holdout-every"):
        assert generation_only not in feats
    gen = canonical_command(p.parse_args(["-m", "m.gguf", "-o", "h.gguf", "--n-prompts", "12", "--holdout-every", "4"]))
    assert "--n-prompts 12" in gen and "--holdout-every 4" in gen and "--features" not in gen
