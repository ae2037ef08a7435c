"""Files given to the `guidedmae ui` page: read once, bounded before decoding, kept as bytes (the server's
copy is then removed, see app.serve)."""

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from guidedmae.data.folder import IMAGE_ERRORS

__all__ = ["MAX_PIXELS", "Upload", "read_upload"]

MAX_PIXELS = 25_000_000  # uploads above this are refused before decoding (25 MP of rgb: 75 MB of pixels)


@dataclass
class Upload:
    """A file given for one modality: its name (what messages call it) and its bytes."""

    name: str
    data: bytes


def read_upload(path: str | Path, modality: str) -> Upload:
    """An uploaded file's name and bytes, refused before decoding when its image header declares more
    than MAX_PIXELS (a small file can declare gigapixels)."""
    path = Path(path)
    limit = f"expected at most {MAX_PIXELS // 10**6} megapixels (downscale it first)"
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise ValueError(
            f"{path.name}: {modality} image far larger than PIL's pixel limit; {limit}"
        ) from None
    except IMAGE_ERRORS:  # not an image PIL reads (an .npy, or not an image at all): read_sample says which
        width = height = 0
    if width * height > MAX_PIXELS:
        raise ValueError(f"{path.name}: {modality} image of {width}x{height} pixels; {limit}")
    try:
        return Upload(path.name, path.read_bytes())
    except OSError as error:
        raise ValueError(f"cannot read the uploaded {modality} file {path.name}: {error}") from error
