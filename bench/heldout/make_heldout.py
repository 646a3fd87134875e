"""Regenerate the held-out code prompts bench/heldout/networkx-code.jsonl with the parameters they were made with.

    python bench/heldout/make_heldout.py            # rewrite the file (byte for byte the committed one)
    python bench/heldout/make_heldout.py --check    # compare only; exit status 1 when they differ
    python bench/heldout/make_heldout.py --out F    # write elsewhere

The prompts come from the documented public functions of networkx (``adadecode.train_data.package_code_prompts``),
a package ``collect-features`` never trains on. They depend on the installed networkx (its functions, signatures
and docstrings), so the version is pinned: with another one the script refuses (``--any-version`` overrides, for a
new set that is then not the committed one). The committed set keeps networkx's dispatch arguments
(``backend=None, **backend_kwargs``) in the signatures, as networkx reports them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PACKAGE = "networkx"
PACKAGE_VERSION = "3.6.1"
N_PROMPTS = 24
SEED = 0
STRIP_DISPATCH = False
OUT = Path(__file__).resolve().parent / "networkx-code.jsonl"


def installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return None


def render() -> str:
    """The JSONL text of the held-out set with the pinned parameters."""
    import json

    from adadecode.train_data import package_code_prompts

    records = package_code_prompts(PACKAGE, N_PROMPTS, SEED, strip_dispatch=STRIP_DISPATCH)
    if len(records) != N_PROMPTS:
        raise SystemExit(f"{PACKAGE} {installed_version()} gives {len(records)} prompts, not {N_PROMPTS}")
    return "".join(json.dumps(r.to_json()) + "\n" for r in records)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    p.add_argument("--out", type=Path, default=OUT, help=f"output file (default {OUT.name} next to this script)")
    p.add_argument("--any-version", action="store_true", help=f"run with another {PACKAGE} than {PACKAGE_VERSION}")
    args = p.parse_args(argv)
    have = installed_version()
    if have != PACKAGE_VERSION and not args.any_version:
        print(f"{PACKAGE} {have or '(not installed)'} is installed; the held-out set was made with {PACKAGE} "
              f"{PACKAGE_VERSION}: pip install {PACKAGE}=={PACKAGE_VERSION} (or --any-version for another set)",
              file=sys.stderr)
        return 2
    text = render()
    if args.check:
        same = args.out.is_file() and args.out.read_bytes() == text.encode("utf-8")
        print(f"{args.out}: {'identical' if same else 'DIFFERENT'} to the regenerated set")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {args.out} ({N_PROMPTS} prompts, {PACKAGE} {have}, seed {SEED})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
