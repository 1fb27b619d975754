"""Draws chatapp's icon: a speech bubble holding a terminal prompt, on a navy tile.

One description of the shapes gives the SVG (written as is) and the PNGs
(rasterised here with numpy, anti-aliased by supersampling), and the PNGs are
packed into the Windows .ico and the macOS .icns (both formats hold PNG data
as is). Needs only numpy. The files are committed; run this again after
changing the drawing:

    python packaging/icons/make_icons.py
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CANVAS = 256  # the drawing's own units; the SVG's viewBox
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512, 1024)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
# .icns entry types holding PNG data, by pixel size
ICNS_TYPES = (
    (b"icp4", 16),
    (b"icp5", 32),
    (b"ic11", 32),
    (b"icp6", 64),
    (b"ic12", 64),
    (b"ic07", 128),
    (b"ic13", 256),
    (b"ic08", 256),
    (b"ic14", 512),
    (b"ic09", 512),
    (b"ic10", 1024),
)

NAVY, CREAM, ACCENT = "#23395b", "#f4efe1", "#e07a5f"

# (kind, fill, geometry): rounded rectangles are (x0, y0, x1, y1, radius), polygons a list of points
SHAPES = [
    ("rect", NAVY, (8, 8, 248, 248, 52)),  # the tile
    ("rect", CREAM, (36, 50, 220, 174, 34)),  # the bubble
    ("poly", CREAM, [(70, 160), (118, 160), (58, 216)]),  # its tail
    ("poly", NAVY, [(74, 80), (102, 80), (142, 112), (102, 144), (74, 144), (114, 112)]),  # the prompt ">"
    ("rect", ACCENT, (146, 128, 190, 144, 5)),  # the cursor "_"
]


def svg() -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CANVAS}" height="{CANVAS}" viewBox="0 0 {CANVAS} {CANVAS}">',
        "  <title>chatapp</title>",
    ]
    for kind, fill, geometry in SHAPES:
        if kind == "rect":
            x0, y0, x1, y1, r = geometry
            parts.append(
                f'  <rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" rx="{r}" ry="{r}" fill="{fill}"/>'
            )
        else:
            points = " ".join(f"{x},{y}" for x, y in geometry)
            parts.append(f'  <polygon points="{points}" fill="{fill}"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def inside_rect(x, y, geometry):
    x0, y0, x1, y1, r = geometry
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    dx = np.maximum(np.abs(x - cx) - (hw - r), 0)
    dy = np.maximum(np.abs(y - cy) - (hh - r), 0)
    return (np.abs(x - cx) <= hw) & (np.abs(y - cy) <= hh) & (dx * dx + dy * dy <= r * r)


def inside_polygon(x, y, points):
    inside = np.zeros(x.shape, dtype=bool)
    for (xa, ya), (xb, yb) in zip(points, points[1:] + points[:1]):
        if ya == yb:
            continue
        crosses = (ya > y) != (yb > y)
        x_at = xa + (y - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (x < x_at)
    return inside


def rgb(color: str) -> np.ndarray:
    return np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])


def render(size: int) -> np.ndarray:
    """The icon as (size, size, 4) uint8 RGBA."""
    ss = max(2, min(8, 2048 // size))  # samples per pixel edge
    n = size * ss
    coords = (np.arange(n) + 0.5) * (CANVAS / n)
    x, y = np.meshgrid(coords, coords)
    color = np.zeros((size, size, 3))  # premultiplied
    alpha = np.zeros((size, size, 1))
    for kind, fill, geometry in SHAPES:
        mask = inside_rect(x, y, geometry) if kind == "rect" else inside_polygon(x, y, geometry)
        cover = mask.reshape(size, ss, size, ss).mean(axis=(1, 3))[..., None]
        color = rgb(fill) * cover + color * (1 - cover)
        alpha = cover + alpha * (1 - cover)
    straight = np.where(alpha > 0, color / np.maximum(alpha, 1e-9), 0)
    return np.round(np.concatenate([straight, alpha], axis=2) * 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    height, width, _ = pixels.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def ico_bytes(pngs: dict[int, bytes]) -> bytes:
    sizes = [s for s in ICO_SIZES if s in pngs]
    out, offset = [struct.pack("<HHH", 0, 1, len(sizes))], 6 + 16 * len(sizes)
    for s in sizes:
        out.append(struct.pack("<BBBBHHII", s % 256, s % 256, 0, 0, 1, 32, len(pngs[s]), offset))
        offset += len(pngs[s])
    return b"".join(out + [pngs[s] for s in sizes])


def icns_bytes(pngs: dict[int, bytes]) -> bytes:
    body = b"".join(kind + struct.pack(">I", 8 + len(pngs[size])) + pngs[size] for kind, size in ICNS_TYPES)
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def main(out: Path = HERE) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "chatapp.svg").write_text(svg())
    pngs = {size: png_bytes(render(size)) for size in PNG_SIZES}
    for size, data in pngs.items():
        (out / f"chatapp-{size}.png").write_bytes(data)
    (out / "chatapp.ico").write_bytes(ico_bytes(pngs))
    (out / "chatapp.icns").write_bytes(icns_bytes(pngs))
    print(f"wrote chatapp.svg, {len(pngs)} PNGs, chatapp.ico and chatapp.icns to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
