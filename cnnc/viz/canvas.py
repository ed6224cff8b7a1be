"""A small drawing: rectangles, lines, polylines, circles and text, written as SVG by cnnc itself
or painted to PNG with Pillow (imported only then). No system binaries, no plotting library.

    c = Canvas(400, 300)
    c.rect(10, 10, 100, 40, fill="#eef", stroke="#336", rx=6, attrs={"class": "layer"})
    c.text(60, 35, "conv 32 3x3", anchor="middle")
    c.save("out.svg")   # or "out.png"

Coordinates are pixels, y downwards. `attrs` adds attributes to an element's SVG tag (classes,
data-* for tests and styling); PNG ignores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
CHAR_WIDTH = 0.6  # a character's width in font sizes, for layout (DejaVu Sans is about 0.55-0.6)


def text_width(text: str, size: float) -> float:
    """Roughly how wide `text` is at font size `size`, to size boxes."""
    return len(text) * size * CHAR_WIDTH


@dataclass
class Element:
    kind: str  # rect | line | polyline | circle | text | group
    geometry: dict
    style: dict
    attrs: dict = field(default_factory=dict)
    children: list = field(default_factory=list)
    title: str | None = None


class Canvas:
    def __init__(self, width: float, height: float, background: str = "#ffffff"):
        self.width, self.height = width, height
        self.background = background
        self.root: list[Element] = []
        self._stack: list[list[Element]] = [self.root]

    # -- building --------------------------------------------------------------------------
    def _add(self, element: Element) -> Element:
        self._stack[-1].append(element)
        return element

    def group(self, attrs: dict | None = None, title: str | None = None):
        """A context manager: elements added inside belong to an SVG <g>."""
        canvas = self

        class _Group:
            def __enter__(self_inner):
                g = canvas._add(Element("group", {}, {}, dict(attrs or {}), [], title))
                canvas._stack.append(g.children)
                return g

            def __exit__(self_inner, *exc):
                canvas._stack.pop()
                return False

        return _Group()

    def rect(self, x, y, w, h, *, fill="none", stroke="none", width=1.0, rx=0.0, dash=None,
             attrs=None, title=None):
        return self._add(Element("rect", dict(x=x, y=y, w=w, h=h, rx=rx),
                                 dict(fill=fill, stroke=stroke, width=width, dash=dash),
                                 dict(attrs or {}), title=title))

    def line(self, x1, y1, x2, y2, *, stroke="#000", width=1.0, dash=None, attrs=None):
        return self.polyline([(x1, y1), (x2, y2)], stroke=stroke, width=width, dash=dash,
                             attrs=attrs)

    def polyline(self, points, *, stroke="#000", width=1.0, dash=None, arrow=False,
                 attrs=None):
        return self._add(Element("polyline", dict(points=[(float(a), float(b))
                                                          for a, b in points], arrow=arrow),
                                 dict(stroke=stroke, width=width, dash=dash), dict(attrs or {})))

    def circle(self, x, y, r, *, fill="#000", stroke="none", attrs=None):
        return self._add(Element("circle", dict(x=x, y=y, r=r), dict(fill=fill, stroke=stroke),
                                 dict(attrs or {})))

    def text(self, x, y, text, *, size=12.0, anchor="start", fill="#222", bold=False,
             attrs=None):
        """Text whose baseline is at y; anchor start | middle | end."""
        return self._add(Element("text", dict(x=x, y=y, text=str(text), anchor=anchor),
                                 dict(size=size, fill=fill, bold=bold), dict(attrs or {})))

    # -- SVG -------------------------------------------------------------------------------
    def to_svg(self) -> str:
        w, h = _n(self.width), _n(self.height)
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
               f'viewBox="0 0 {w} {h}" font-family={quoteattr(FONT)}>',
               f'<rect x="0" y="0" width="{w}" height="{h}" fill="{self.background}" '
               'stroke="none"/>']
        for e in self.root:
            _svg(e, out, 0)
        out.append("</svg>")
        return "\n".join(out) + "\n"

    # -- PNG -------------------------------------------------------------------------------
    def to_png(self, path, scale: float = 2.0) -> None:
        from PIL import Image, ImageDraw

        img = Image.new("RGB", (max(1, round(self.width * scale)),
                                max(1, round(self.height * scale))), self.background)
        draw = ImageDraw.Draw(img)
        fonts: dict = {}
        for e in _flatten(self.root):
            _paint(draw, e, scale, fonts)
        img.save(path)

    def save(self, path) -> None:
        """SVG or PNG by the file's extension; written atomically."""
        from ..train.checkpoint import atomic_write_text

        path = Path(path)
        if path.suffix.lower() == ".png":
            tmp = path.with_name(f".{path.name}.tmp.png")
            self.to_png(tmp)
            tmp.replace(path)
        else:
            atomic_write_text(path, self.to_svg())


def _n(v: float) -> str:
    """A coordinate, short: 12, 12.5, 12.25."""
    v = round(float(v), 2)
    return str(int(v)) if v == int(v) else f"{v:g}"


def _attrs(attrs: dict) -> str:
    return "".join(f" {k}={quoteattr(str(v))}" for k, v in attrs.items())


def _svg(e: Element, out: list[str], depth: int) -> None:
    g, s = e.geometry, e.style
    extra = _attrs(e.attrs)
    title = f"<title>{escape(e.title)}</title>" if e.title else ""
    dash = f' stroke-dasharray="{s["dash"]}"' if s.get("dash") else ""
    if e.kind == "group":
        out.append(f"<g{extra}>{title}")
        for child in e.children:
            _svg(child, out, depth + 1)
        out.append("</g>")
    elif e.kind == "rect":
        rx = f' rx="{_n(g["rx"])}"' if g["rx"] else ""
        body = f'<rect x="{_n(g["x"])}" y="{_n(g["y"])}" width="{_n(g["w"])}" ' \
               f'height="{_n(g["h"])}"{rx} fill="{s["fill"]}" stroke="{s["stroke"]}" ' \
               f'stroke-width="{_n(s["width"])}"{dash}{extra}'
        out.append(body + (f">{title}</rect>" if title else "/>"))
    elif e.kind == "polyline":
        pts = " ".join(f"{_n(x)},{_n(y)}" for x, y in g["points"])
        out.append(f'<polyline points="{pts}" fill="none" stroke="{s["stroke"]}" '
                   f'stroke-width="{_n(s["width"])}" stroke-linejoin="round"{dash}{extra}/>')
        if g["arrow"] and len(g["points"]) > 1:  # a polygon, not a marker: every renderer has it
            head = " ".join(f"{_n(x)},{_n(y)}" for x, y in _arrow_head(g["points"], 1.0))
            out.append(f'<polygon points="{head}" fill="#555" class="arrow"/>')
    elif e.kind == "circle":
        out.append(f'<circle cx="{_n(g["x"])}" cy="{_n(g["y"])}" r="{_n(g["r"])}" '
                   f'fill="{s["fill"]}" stroke="{s["stroke"]}"{extra}/>')
    elif e.kind == "text":
        weight = ' font-weight="bold"' if s["bold"] else ""
        out.append(f'<text x="{_n(g["x"])}" y="{_n(g["y"])}" font-size="{_n(s["size"])}" '
                   f'text-anchor="{g["anchor"]}" fill="{s["fill"]}"{weight}{extra}>'
                   f'{escape(g["text"])}</text>')


def _flatten(elements):
    for e in elements:
        if e.kind == "group":
            yield from _flatten(e.children)
        else:
            yield e


def _color(value):
    return None if value in (None, "none") else value


def _dashed(points, pattern):
    """Split a polyline into the dash segments of an SVG dash pattern like "4 3"."""
    lengths = [float(v) for v in str(pattern).replace(",", " ").split()] or [4.0, 3.0]
    segments, on, index, left = [], True, 0, lengths[0]
    current = [points[0]]
    for (x1, y1), (x2, y2) in zip(points, points[1:]):
        dist = math.hypot(x2 - x1, y2 - y1)
        pos = 0.0
        while dist - pos > left:
            pos += left
            t = pos / dist
            p = (x1 + (x2 - x1) * t, y1 + (y2 - y1) * t)
            if on:
                segments.append(current + [p])
            current = [p]
            on = not on
            index = (index + 1) % len(lengths)
            left = lengths[index]
        left -= dist - pos
        if on:
            current.append((x2, y2))
    if on and len(current) > 1:
        segments.append(current)
    return segments


def _arrow_head(points, k: float, size: float = 7.0):
    """The triangle at the end of a polyline, scaled by k."""
    (x1, y1), (x2, y2) = points[-2], points[-1]
    a = math.atan2(y2 - y1, x2 - x1)
    tip = (x2 * k, y2 * k)
    return [tip, (tip[0] - size * k * math.cos(a - 0.4), tip[1] - size * k * math.sin(a - 0.4)),
            (tip[0] - size * k * math.cos(a + 0.4), tip[1] - size * k * math.sin(a + 0.4))]


def _paint(draw, e: Element, k: float, fonts: dict) -> None:
    from PIL import ImageFont

    g, s = e.geometry, e.style
    if e.kind == "rect":
        box = [g["x"] * k, g["y"] * k, (g["x"] + g["w"]) * k, (g["y"] + g["h"]) * k]
        outline = _color(s["stroke"]) if not s.get("dash") else None
        draw.rounded_rectangle(box, radius=g["rx"] * k, fill=_color(s["fill"]), outline=outline,
                               width=max(1, round(s["width"] * k)))
        if s.get("dash") and _color(s["stroke"]):
            x0, y0, x1, y1 = box
            corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
            for seg in _dashed(corners, " ".join(str(float(v) * k) for v in
                                                 str(s["dash"]).split())):
                draw.line(seg, fill=s["stroke"], width=max(1, round(s["width"] * k)))
    elif e.kind == "polyline":
        pts = [(x * k, y * k) for x, y in g["points"]]
        width = max(1, round(s["width"] * k))
        if s.get("dash"):
            for seg in _dashed(pts, " ".join(str(float(v) * k) for v in str(s["dash"]).split())):
                draw.line(seg, fill=s["stroke"], width=width)
        else:
            draw.line(pts, fill=s["stroke"], width=width, joint="curve")
        if g["arrow"] and len(pts) > 1:
            draw.polygon(_arrow_head(g["points"], k), fill="#555")
    elif e.kind == "circle":
        r = g["r"] * k
        draw.ellipse([g["x"] * k - r, g["y"] * k - r, g["x"] * k + r, g["y"] * k + r],
                     fill=_color(s["fill"]), outline=_color(s["stroke"]))
    elif e.kind == "text":
        size = round(s["size"] * k)
        if size not in fonts:
            try:
                fonts[size] = ImageFont.load_default(size=size)
            except (TypeError, OSError):  # an old Pillow or one without FreeType
                fonts[size] = ImageFont.load_default()
        anchor = {"start": "ls", "middle": "ms", "end": "rs"}[g["anchor"]]
        draw.text((g["x"] * k, g["y"] * k), g["text"], fill=s["fill"], font=fonts[size],
                  anchor=anchor)
