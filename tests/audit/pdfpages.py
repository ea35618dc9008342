"""PDF pages as images and text for the report tests (pypdfium2: PDFium's Python binding).

A PNG writer of a few lines (zlib, no Pillow) keeps the committed page images small: pages are
stored as 8-bit grey, which is all a reviewer needs to read them."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Page:
    text: str
    grey: npt.NDArray[np.uint8]  # H × W, 0 = black, 255 = white

    @property
    def ink(self) -> float:
        """Fraction of pixels darker than light grey (0 for a blank page)."""
        return float(np.mean(self.grey < 200))


def read_pdf(path: Path, *, scale: float = 1.0) -> list[Page]:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(path)
    try:
        pages = []
        for i in range(len(doc)):
            page = doc[i]
            text = page.get_textpage().get_text_range()
            rgb = page.render(scale=scale, grayscale=True).to_numpy()
            grey = rgb if rgb.ndim == 2 else rgb[..., :3].mean(axis=2)
            pages.append(Page(text.replace("\r\n", "\n"), np.asarray(grey, dtype=np.uint8)))
        return pages
    finally:
        doc.close()


def write_png(grey: npt.NDArray[np.uint8], path: Path) -> Path:
    """An 8-bit greyscale PNG (RFC 2083) of ``grey``."""
    h, w = grey.shape
    raw = b"".join(b"\x00" + grey[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path
