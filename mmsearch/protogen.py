"""Generate mmsearch/protos/*_pb2*.py from protos/ (``make protos``).

The sources live under ``protos/mmsearch/protos/`` so the generated imports read
``from mmsearch.protos import x_pb2`` with no post-processing. The generated code is committed;
tests/unit/test_protos.py regenerates into a temporary folder and fails if the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_PACKAGE = "mmsearch/protos"


def proto_sources() -> list[Path]:
    return sorted((PROTO_ROOT / OUT_PACKAGE).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Run grpc_tools.protoc for every source; return the generated files (under out_root/mmsearch/protos)."""
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    out_root.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_root}", f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}"] + [str(p.relative_to(PROTO_ROOT)) for p in proto_sources()]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    return sorted(p for p in (out_root / OUT_PACKAGE).iterdir() if p.suffix in (".py", ".pyi"))


if __name__ == "__main__":
    files = generate(ROOT)
    print("\n".join(str(f.relative_to(ROOT)) for f in files))
    sys.exit(0)
