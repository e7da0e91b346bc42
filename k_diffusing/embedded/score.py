"""Prompt adherence for :mod:`k_diffusing.embedded.shapes` images from exact pixel statistics (nothing learned).

:func:`measure` reads an image back into the caption's attributes:

1. background = per-channel median of the one-pixel border, snapped to the nearest PALETTE colour (Euclidean RGB);
2. rough mask = pixels farther than 0.5 from the background (half the smallest palette distance, 1, in [0, 1] RGB);
   foreground colour = per-channel median of those pixels, snapped to the nearest palette colour other than the
   background; final mask = pixels nearer the foreground colour than the background (the half-way plane between
   the two, so a 3x3 box blur moves straight edges by less than half a pixel);
3. position = the anchor (shapes.ANCHORS) nearest the mask's centroid;
4. shape from asymmetry = mean over mask pixels of sign(y - bounding-box middle) (downward positive) and
   fill = mask area / bounding-box area: "triangle" when asymmetry > ``TRIANGLE_ASYMMETRY`` (an apex-up triangle has
   3/4 of its area in the lower half of its box: 1/2; circles and squares 0), else "square" when
   fill > ``SQUARE_FILL`` (square 1, circle pi/4), else "circle";
5. size = "large" when the shape's radius, from its pixel count and shape (area = pi r^2, 4 r^2 and 3 sqrt(3) r^2 / 4
   for the disc, the square and the inscribed triangle), exceeds ``SIZE_THRESHOLD`` of the image side (rendered:
   0.17 small, 0.25 large; the area resists blur better than the bounding box, which loses the triangle's apex).

A mask smaller than ``MIN_AREA`` of the image reads as no shape: shape, colour, position and size are None and score
0. :func:`adherence` is the fraction of the prompt's attributes (shape, colour, position, background, and size when
the prompt names one) that the reading matches, so one wrong attribute of four gives 0.75, of five 0.8.

Inputs: a float tensor (3, H, W) (or (1, 3, H, W)) whose value range is given by ``value_range``: (-1, 1) by default
(as :func:`shapes.render` makes them); pass ``value_range=(0, 1)`` for pipeline output with ``output_type="pt"``.
Values are clamped into the range. A PIL image is read as 8-bit RGB and ignores ``value_range``.
"""

import dataclasses
import math

import numpy as np
import torch

from .shapes import ANCHORS, PALETTE, ShapeSpec, parse_caption

MIN_AREA = 0.004
SIZE_THRESHOLD = 0.21
AREA_PER_RADIUS2 = {"circle": math.pi, "square": 4.0, "triangle": 3 * math.sqrt(3) / 4}
TRIANGLE_ASYMMETRY = 0.17
SQUARE_FILL = 0.905
_PALETTE_NAMES = tuple(PALETTE)
_PALETTE = torch.tensor([PALETTE[name] for name in _PALETTE_NAMES], dtype=torch.float32)


@dataclasses.dataclass(frozen=True)
class Reading:
    """What :func:`measure` sees: the ShapeSpec attributes (None where unreadable) and the statistics behind them."""

    shape: str | None
    colour: str | None
    position: str | None
    size: str | None
    background: str
    area: float
    centroid: tuple[float, float] | None
    fill: float | None
    asymmetry: float | None
    radius: float | None


def to_unit_rgb(image, value_range=(-1.0, 1.0)):
    """A float32 (3, H, W) tensor in [0, 1] from a PIL image or a tensor in ``value_range``."""
    if not isinstance(image, torch.Tensor):
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
    lo, hi = value_range
    return ((image.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)


def _snap(colour, exclude=None):
    distance = (_PALETTE - colour).norm(dim=1)
    if exclude is not None:
        distance[_PALETTE_NAMES.index(exclude)] = math.inf
    return _PALETTE_NAMES[int(distance.argmin())]


def measure(image, value_range=(-1.0, 1.0)):
    """Read shape, colour, position, size and background from one image (see the module docstring)."""
    x = to_unit_rgb(image, value_range)
    _, height, width = x.shape
    border = torch.cat([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], dim=1)
    background = _snap(border.median(dim=1).values)
    bg = _PALETTE[_PALETTE_NAMES.index(background)][:, None, None]
    rough = (x - bg).norm(dim=0) > 0.5
    empty = Reading(None, None, None, None, background, float(rough.float().mean()), None, None, None, None)
    if rough.float().mean() < MIN_AREA:
        return empty
    colour = _snap(x[:, rough].median(dim=1).values, exclude=background)
    fg = _PALETTE[_PALETTE_NAMES.index(colour)][:, None, None]
    mask = (x - fg).norm(dim=0) < (x - bg).norm(dim=0)
    area = float(mask.float().mean())
    if area < MIN_AREA:
        return dataclasses.replace(empty, area=area)

    ys, xs = (coords.double() + 0.5 for coords in mask.nonzero(as_tuple=True))
    centroid = (float(xs.mean()) / width, float(ys.mean()) / height)
    position = min(ANCHORS, key=lambda p: math.dist(ANCHORS[p], centroid))
    box_w = float(xs.max() - xs.min()) + 1
    box_h = float(ys.max() - ys.min()) + 1
    fill = float(mask.sum()) / (box_w * box_h)
    asymmetry = float(torch.sign(ys - (ys.min() + ys.max()) / 2).mean())
    shape = "triangle" if asymmetry > TRIANGLE_ASYMMETRY else "square" if fill > SQUARE_FILL else "circle"
    radius = math.sqrt(area / AREA_PER_RADIUS2[shape])
    size = "large" if radius > SIZE_THRESHOLD else "small"
    return Reading(shape, colour, position, size, background, area, centroid, fill, asymmetry, radius)


def adherence(image, prompt, value_range=(-1.0, 1.0)):
    """Fraction in [0, 1] of the prompt's attributes (a caption or a ShapeSpec) that the image shows."""
    spec = parse_caption(prompt) if isinstance(prompt, str) else prompt
    reading = measure(image, value_range)
    names = ["shape", "colour", "position", "background"] + (["size"] if spec.size is not None else [])
    return sum(getattr(reading, name) == getattr(spec, name) for name in names) / len(names)


def adherence_batch(images, prompts, value_range=(-1.0, 1.0)):
    """:func:`adherence` per image; ``images`` a (B, 3, H, W) tensor or a sequence, ``prompts`` one or B prompts."""
    images = list(images)
    prompts = [prompts] * len(images) if isinstance(prompts, (str, ShapeSpec)) else list(prompts)
    if len(prompts) != len(images):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    return [adherence(image, prompt, value_range) for image, prompt in zip(images, prompts)]


def attribute_accuracy(images, prompts, value_range=(-1.0, 1.0)):
    """Per attribute (shape, colour, position, size, background), the fraction of images whose reading matches
    their prompt (prompts without a size word do not count for size)."""
    specs = [parse_caption(p) if isinstance(p, str) else p for p in prompts]
    readings = [measure(image, value_range) for image in images]
    accuracy = {}
    for name in ("shape", "colour", "position", "size", "background"):
        pairs = [(r, s) for r, s in zip(readings, specs) if getattr(s, name) is not None]
        accuracy[name] = sum(getattr(r, name) == getattr(s, name) for r, s in pairs) / max(1, len(pairs))
    return accuracy


CLEAN_DISTANCE = 0.25


def clean_fraction(image, prompt, value_range=(-1.0, 1.0)):
    """Fraction of pixels within ``CLEAN_DISTANCE`` (Euclidean RGB in [0, 1]) of the prompt's shape colour or
    background colour. The training images score 1 (hard edges, pure palette colours); blur, colour casts and
    leftover noise lower it, so it tells converged images from under-resolved ones where :func:`adherence` (which
    only reads attributes) cannot."""
    spec = parse_caption(prompt) if isinstance(prompt, str) else prompt
    x = to_unit_rgb(image, value_range)
    colours = _PALETTE[[_PALETTE_NAMES.index(spec.colour), _PALETTE_NAMES.index(spec.background)]]
    distance = (x[None] - colours[:, :, None, None]).norm(dim=1).amin(dim=0)
    return float((distance < CLEAN_DISTANCE).float().mean())
