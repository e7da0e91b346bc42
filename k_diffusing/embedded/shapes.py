"""Procedural captioned shapes: one hard-edged shape on a plain background, with an exact caption grammar.

Attributes (:class:`ShapeSpec`): ``shape`` in SHAPES, ``colour`` in the PALETTE, ``position`` in POSITIONS,
``size`` in SIZES and ``background`` in the PALETTE, different from ``colour``: 3 * 6 * 5 * 2 * 5 = 900 specs.

Caption grammar (lower case, single spaces, no final full stop)::

    caption  := "a " [size " "] colour " " shape " " place ", " background " background"
    place    := "on the left" | "on the right" | "at the top" | "at the bottom" | "in the center"

e.g. ``"a large red circle on the left, blue background"``. :meth:`ShapeSpec.caption` always writes the size word;
:func:`parse_caption` also accepts captions without it and then returns ``size=None`` ("size not specified"; the
score then ignores size). Parsing is case- and whitespace-insensitive and checks the preposition against the place.

Geometry, in units of the image side ``S`` with pixel centres at ``(i + 0.5)``: the shape's area centroid sits at the
anchor ``(0.5, 0.5) + 0.19 * direction`` plus a jitter in pixels; every shape fits in the disc of radius ``r``
around it, ``r = 0.17 S`` (small) or ``0.25 S`` (large). Circle: that disc. Square: side ``2r`` (bounding-box fill
1). Triangle: the equilateral triangle inscribed in the disc, apex up (fill 1/2, centroid = circumcentre). With
jitter up to ``S / 32`` pixels (the dataset's default) no shape reaches the one-pixel image border, so the border is
pure background. Pixels are hard-edged (inside iff the pixel centre is inside), so pixel statistics are exact.
Images are float32 in ``[-1, 1]``, shape ``(3, S, S)``.
"""

import dataclasses
import math
import random
import re

import torch

SHAPES = ("circle", "square", "triangle")
PALETTE = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
}
COLOURS = tuple(PALETTE)
POSITIONS = ("left", "right", "top", "bottom", "center")
SIZES = ("small", "large")
ANCHOR_OFFSET = 0.19
ANCHORS = {
    "left": (0.5 - ANCHOR_OFFSET, 0.5),
    "right": (0.5 + ANCHOR_OFFSET, 0.5),
    "top": (0.5, 0.5 - ANCHOR_OFFSET),
    "bottom": (0.5, 0.5 + ANCHOR_OFFSET),
    "center": (0.5, 0.5),
}
RADIUS = {"small": 0.17, "large": 0.25}
PLACE_PHRASE = {"left": "on the", "right": "on the", "top": "at the", "bottom": "at the", "center": "in the"}


def _check(kind, word, valid):
    if word not in valid:
        raise ValueError(f"unknown {kind} {word!r}; valid: {', '.join(valid)}")


@dataclasses.dataclass(frozen=True)
class ShapeSpec:
    """One image's attributes; ``size=None`` means "not specified" (captions without a size word)."""

    shape: str
    colour: str
    position: str
    size: str | None
    background: str

    def __post_init__(self):
        _check("shape", self.shape, SHAPES)
        _check("colour", self.colour, COLOURS)
        _check("position", self.position, POSITIONS)
        if self.size is not None:
            _check("size", self.size, SIZES)
        _check("background colour", self.background, COLOURS)
        if self.background == self.colour:
            raise ValueError(f"background {self.background!r} must differ from the shape's colour")

    def caption(self, with_size=True):
        """The caption in the module's grammar; the size word is written when known and ``with_size``."""
        size = f"{self.size} " if with_size and self.size is not None else ""
        place = f"{PLACE_PHRASE[self.position]} {self.position}"
        return f"a {size}{self.colour} {self.shape} {place}, {self.background} background"


def parse_caption(text):
    """Inverse of :meth:`ShapeSpec.caption`; raises ValueError naming the first unexpected word and the valid ones."""
    words = text.lower().replace(",", " , ").split()

    def take(kind, valid):
        if not words:
            raise ValueError(f"caption {text!r} ends early: expected {kind} ({', '.join(valid)})")
        word = words.pop(0)
        _check(kind, word, valid)
        return word

    take("article", ("a",))
    size = take("size", SIZES) if words and words[0] in SIZES else None
    colour = take("colour", COLOURS)
    shape = take("shape", SHAPES)
    preposition = take("preposition", ("on", "at", "in"))
    take("article", ("the",))
    position = take("position", POSITIONS)
    if preposition != PLACE_PHRASE[position].split()[0]:
        raise ValueError(f"preposition {preposition!r} does not go with {position!r}: write "
                         f"{PLACE_PHRASE[position]!r} {position}")
    take("separator", (",",))
    background = take("background colour", COLOURS)
    take("word", ("background",))
    if words:
        raise ValueError(f"unexpected trailing words {' '.join(words)!r} in caption {text!r}")
    return ShapeSpec(shape, colour, position, size, background)


def all_specs():
    """Every valid spec (900), in a fixed order."""
    return [ShapeSpec(shape, colour, position, size, background)
            for shape in SHAPES for colour in COLOURS for position in POSITIONS for size in SIZES
            for background in COLOURS if background != colour]


def caption_words():
    """Every word the captions use, in a fixed order (for tokenizers that keep each word whole)."""
    return list(dict.fromkeys(w for spec in all_specs() for w in re.findall(r"[a-z]+", spec.caption())))


def shape_mask(shape, size, centre, radius):
    """Boolean (size, size) mask of pixels whose centre lies inside the shape; ``centre``, ``radius`` in pixels."""
    coords = torch.arange(size, dtype=torch.float64) + 0.5
    y, x = coords[:, None], coords[None, :]
    cx, cy = centre
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2
    if shape == "square":
        return ((x - cx).abs() <= radius) & ((y - cy).abs() <= radius)
    if shape == "triangle":
        # Apex (cx, cy - r), base y = cy + r/2 with half-width r*sqrt(3)/2: half-width grows as (y - apex) / sqrt(3).
        return (y <= cy + radius / 2) & ((x - cx).abs() <= (y - (cy - radius)) / math.sqrt(3))
    _check("shape", shape, SHAPES)


def render(spec, size=32, jitter=(0.0, 0.0)):
    """The image of ``spec`` as a float32 (3, size, size) tensor in [-1, 1]; ``jitter`` (dx, dy) in pixels."""
    if spec.size is None:
        raise ValueError("render needs a size ('small' or 'large'); this spec has size=None")
    ax, ay = ANCHORS[spec.position]
    mask = shape_mask(spec.shape, size, (ax * size + jitter[0], ay * size + jitter[1]),
                      RADIUS[spec.size] * size)
    fg = torch.tensor(PALETTE[spec.colour], dtype=torch.float32)[:, None, None]
    bg = torch.tensor(PALETTE[spec.background], dtype=torch.float32)[:, None, None]
    return torch.where(mask, fg, bg) * 2 - 1


def sample_specs(n, seed):
    """``n`` specs drawn uniformly and independently from ``random.Random(seed)`` (never the global RNG)."""
    rng = random.Random(seed)
    specs = []
    for _ in range(n):
        colour = rng.choice(COLOURS)
        specs.append(ShapeSpec(rng.choice(SHAPES), colour, rng.choice(POSITIONS), rng.choice(SIZES),
                               rng.choice([c for c in COLOURS if c != colour])))
    return specs


def dataset(n, seed, size=32, max_jitter=None):
    """``(images (n, 3, size, size) in [-1, 1], captions)``, deterministic from ``seed``.

    Specs come from :func:`sample_specs`; jitters are uniform in ``[-max_jitter, max_jitter]`` pixels per axis
    (default ``size / 32``), drawn from a second ``random.Random(seed + 1)``. Captions include the size word.
    """
    specs = sample_specs(n, seed)
    max_jitter = size / 32 if max_jitter is None else max_jitter
    rng = random.Random(seed + 1)
    images = torch.stack([render(spec, size, (rng.uniform(-max_jitter, max_jitter),
                                              rng.uniform(-max_jitter, max_jitter))) for spec in specs])
    return images, [spec.caption() for spec in specs]
