"""The procedural shapes dataset (k_diffusing.embedded.shapes) and its pixel-statistics adherence score.

Measured with this file's seeds: every rendered image scores 1.0 clean, with Gaussian noise of std 0.1 on [-1, 1],
after a 3x3 box blur, and with both, at 32 and 64 pixels. Pure-noise images score 0.25 on average (Gaussian std 0.6,
clamped; uniform: 0.26), about chance (1/3, 1/5, 1/5, 1/2, 1/5 for shape, colour, position, size, background: 0.29).
"""

import dataclasses
import random

import numpy as np
import PIL.Image
import pytest
import torch

from k_diffusing.embedded import score, shapes
from k_diffusing.embedded.score import adherence, adherence_batch, measure
from k_diffusing.embedded.shapes import (
    ShapeSpec,
    all_specs,
    dataset,
    parse_caption,
    render,
    sample_specs,
)

ATTRIBUTES = ("shape", "colour", "position", "size", "background")


def box_blur(images):
    """3x3 box blur with replicated edges, on (3, H, W) or (B, 3, H, W)."""
    batch = images if images.ndim == 4 else images[None]
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(batch, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return blurred if images.ndim == 4 else blurred[0]


def reads_back(image, spec):
    reading = measure(image)
    return all(getattr(reading, name) == getattr(spec, name) for name in ATTRIBUTES)


def test_every_caption_round_trips():
    specs = all_specs()
    assert len(specs) == len(set(specs)) == 3 * 6 * 5 * 2 * 5
    for spec in specs:
        assert parse_caption(spec.caption()) == spec
        assert parse_caption(spec.caption(with_size=False)) == dataclasses.replace(spec, size=None)
    assert (ShapeSpec("circle", "red", "left", "large", "blue").caption()
            == "a large red circle on the left, blue background")
    assert (ShapeSpec("triangle", "white", "center", None, "black").caption()
            == "a white triangle in the center, black background")
    assert (parse_caption("  A Small GREEN square at the TOP ,  red background ")
            == ShapeSpec("square", "green", "top", "small", "red"))


@pytest.mark.parametrize("text, words", [
    ("a purple circle on the left, blue background", ("purple", "red", "black")),
    ("a red hexagon on the left, blue background", ("hexagon", "circle", "triangle")),
    ("a red circle on the middle, blue background", ("middle", "center")),
    ("a red circle at the left, blue background", ("at", "on the")),
    ("a red circle on the left, blue background please", ("please",)),
    ("a red circle on the left", ("ends early",)),
    ("a red circle on the left, red background", ("must differ",)),
])
def test_parse_caption_names_the_bad_word(text, words):
    with pytest.raises(ValueError) as error:
        parse_caption(text)
    for word in words:
        assert word in str(error.value)


def test_render_is_exact_and_deterministic():
    for size in (32, 64):
        jitter = size / 32
        for spec in all_specs()[::7]:
            for dx, dy in ((jitter, jitter), (-jitter, -jitter), (jitter, -jitter)):
                image = render(spec, size, (dx, dy))
                assert image.shape == (3, size, size) and image.dtype == torch.float32
                assert torch.equal(image, render(spec, size, (dx, dy)))
                fg = torch.tensor(shapes.PALETTE[spec.colour])[:, None, None] * 2 - 1
                bg = torch.tensor(shapes.PALETTE[spec.background])[:, None, None] * 2 - 1
                is_fg, is_bg = (image == fg).all(0), (image == bg).all(0)
                assert (is_fg ^ is_bg).all()
                border = torch.ones(size, size, dtype=torch.bool)
                border[1:-1, 1:-1] = False
                assert is_bg[border].all() and is_fg.any()


def test_dataset_is_deterministic_from_its_seed_only():
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    images, captions = dataset(64, seed=3)
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state
    again, captions_again = dataset(64, seed=3)
    assert torch.equal(images, again) and captions == captions_again
    other, other_captions = dataset(64, seed=4)
    assert not torch.equal(images, other) and captions != other_captions
    assert images.shape == (64, 3, 32, 32) and images.min() == -1 and images.max() == 1
    assert [spec.caption() for spec in sample_specs(64, 3)] == captions
    assert len(set(captions)) > 50


def test_score_is_one_on_every_rendered_image():
    for size in (32, 64):
        jitter = size / 32
        for spec in all_specs():
            for dx, dy in ((0.0, 0.0), (0.6 * jitter, -jitter), (-jitter, 0.35 * jitter)):
                assert reads_back(render(spec, size, (dx, dy)), spec), (spec, size, dx, dy)
    for size in (32, 64):
        images, captions = dataset(100, seed=11, size=size)
        assert adherence_batch(images, captions) == [1.0] * 100


def test_score_drops_by_one_attribute_share():
    spec = ShapeSpec("circle", "red", "left", "large", "blue")
    image = render(spec, 32)
    assert adherence(image, "a blue circle on the left, green background") == 0.5
    for name, valid in zip(ATTRIBUTES, (shapes.SHAPES, shapes.COLOURS, shapes.POSITIONS, shapes.SIZES, shapes.COLOURS)):
        for value in valid:
            if value == getattr(spec, name) or (name in ("colour", "background") and value in ("red", "blue")):
                continue
            wrong = dataclasses.replace(spec, **{name: value})
            assert adherence(image, wrong.caption()) == pytest.approx(0.8), wrong
            if name != "size":
                assert adherence(image, wrong.caption(with_size=False)) == pytest.approx(0.75), wrong
    assert adherence(image, "a red circle on the left, blue background") == 1.0


def test_score_reads_unit_range_tensors_and_pil_images():
    images, captions = dataset(40, seed=5, size=32)
    unit = (images + 1) / 2
    assert adherence_batch(unit, captions, value_range=(0, 1)) == [1.0] * 40
    pil = [PIL.Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for image in unit]
    assert adherence_batch(pil, captions) == [1.0] * 40


@pytest.mark.parametrize("size", [32, 64])
def test_score_is_robust_to_mild_noise_and_blur(size):
    images, captions = dataset(150, seed=7, size=size)
    noise = 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(8))
    for corrupted in (images + noise, box_blur(images), box_blur(images) + noise):
        assert adherence_batch(corrupted, captions) == [1.0] * len(captions)


def test_pure_noise_scores_low_and_empty_images_score_background_only():
    generator = torch.Generator().manual_seed(9)
    noise = (0.6 * torch.randn(200, 3, 32, 32, generator=generator)).clamp(-1, 1)
    captions = [spec.caption() for spec in sample_specs(200, 10)]
    mean = sum(adherence_batch(noise, captions)) / 200
    assert mean < 0.35, mean
    spec = ShapeSpec("square", "white", "center", "small", "green")
    blank = torch.full((3, 32, 32), -1.0)
    blank[1] = 1.0
    reading = measure(blank)
    assert reading.background == "green" and reading.shape is None and reading.colour is None
    assert adherence(blank, spec.caption()) == pytest.approx(0.2)
    assert score.MIN_AREA * 32 * 32 < (render(spec, 32) != blank).any(0).sum()


def test_clean_fraction_is_one_on_renders_and_drops_with_blur_and_noise():
    from k_diffusing.embedded.score import clean_fraction

    images, captions = dataset(32, seed=4)
    assert all(clean_fraction(image, caption) == 1.0 for image, caption in zip(images, captions))
    blurred = torch.nn.functional.avg_pool2d(images, 3, 1, 1, count_include_pad=False)
    noisy = images + 0.4 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    for degraded in (blurred, noisy):
        mean = sum(clean_fraction(i, c) for i, c in zip(degraded, captions)) / len(captions)
        assert mean < 0.95
    # Asked for two colours the image does not use: nothing counts.
    spec = shapes.parse_caption(captions[0])
    other = [c for c in shapes.COLOURS if c not in (spec.colour, spec.background)]
    assert clean_fraction(images[0], dataclasses.replace(spec, colour=other[0], background=other[1])) == 0.0
