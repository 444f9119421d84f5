"""The seed's publish script, in miniature: hash, upload, tag weights-VERSION, patch weights.py.

This is the workflow `cas publish` replaces; the tutorial runs it to make a package that still
has a hand-written registry, then moves it in with `cas lock import`.
"""

from __future__ import annotations

import argparse
import hashlib
import pprint
import runpy
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import disable_progress_bars

MODEL_REPOS = {
    "cser-detector": {
        "repo_id": "sidxz/structflo-cser-weights",
        "filename": "best.pt",
    },
}

DEFAULT_WEIGHTS_PATHS = {
    "cser-detector": "runs/labels_detect/yolo11l_panels/weights/best.pt",
}

WEIGHTS_PY = Path(__file__).resolve().parent.parent / "structflo" / "cser" / "weights.py"
HEADER = (
    '"""Model weights registry: patched by scripts/publish_weights.py (the seed\'s workflow)."""'
)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--requires", default=">=0.1,<1")
    p.add_argument("--weights-file")
    args = p.parse_args()
    disable_progress_bars()
    repo = MODEL_REPOS[args.model]
    weights = Path(args.weights_file or DEFAULT_WEIGHTS_PATHS[args.model])
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    api = HfApi()
    api.create_repo(repo["repo_id"], exist_ok=True)
    commit = api.upload_file(
        path_or_fileobj=weights, path_in_repo=repo["filename"], repo_id=repo["repo_id"]
    )
    tag = f"weights-{args.version}"
    api.create_tag(repo["repo_id"], tag=tag, revision=commit.oid)
    module = runpy.run_path(str(WEIGHTS_PY))  # the old way: the registry is code
    registry, latest = module["REGISTRY"], module["LATEST"]
    registry[args.model][args.version] = {
        "repo_id": repo["repo_id"],
        "filename": repo["filename"],
        "revision": tag,
        "sha256": sha256,
        "requires": args.requires,
    }
    latest[args.model] = args.version
    WEIGHTS_PY.write_text(
        f"{HEADER}\n\nREGISTRY = {pprint.pformat(registry, sort_dicts=False)}\n\n"
        f"LATEST = {pprint.pformat(latest, sort_dicts=False)}\n"
    )
    print(f"published {args.model} {args.version}: {tag}, sha256 {sha256[:12]}")


if __name__ == "__main__":
    main()
