"""A document's image file, read safely: under the image root only, size-limited, SVGs rendered in the
sandboxed renderer. Index builds and the documents API read images this one way, so a document
written either way is encoded from the same pixels."""

from __future__ import annotations

from pathlib import Path

from mmsearch.errors import BadInput

MAX_IMAGE_BYTES = 20 * 1024 * 1024


def read_local_image(ref: str, image_root: Path, max_bytes: int = MAX_IMAGE_BYTES, short_edge: int | None = None) -> bytes:
    """Bytes of an image file under ``image_root`` (a path escaping it is refused); an SVG is rendered
    here, where the folder it may reference is known and trusted, with the short edge the encoder's
    model takes (``Encoder.render_edge``; modelrepo/svg.py)."""
    root = image_root.resolve()
    path = (root / ref).resolve()
    if not path.is_relative_to(root):
        raise BadInput(f"image path {ref!r} escapes the image root {image_root}")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise BadInput(f"image {ref} is {size:,} bytes, over the {max_bytes:,}-byte limit")
        data = path.read_bytes()
        if path.suffix.lower() == ".svg":
            from mmsearch.modelrepo.svg import rasterise

            return rasterise(data, f"image {ref}", resources_dir=path.parent, short_edge=short_edge)
        return data
    except FileNotFoundError as e:
        raise BadInput(f"image not found: {ref}") from e
    except IsADirectoryError as e:
        raise BadInput(f"image {ref} is a folder") from e
    except OSError as e:
        raise BadInput(f"cannot read image {ref}: {e.strerror}") from e
