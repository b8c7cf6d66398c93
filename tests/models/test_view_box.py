"""The scorer view's place on the original slice (``view_box``), which the case page uses to draw a heat-map
over the CT: a view pixel's centre must land where the resampling took its value from."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from app.services.evidence import render_overlay, save_evidence
from models.transforms import PreprocessConfig, liver_view, resample_inplane, view_box


@pytest.mark.parametrize("config", [PreprocessConfig(size=64, pixel_mm=6.0), liver_view()])
@pytest.mark.parametrize(("rows", "cols", "spacing"), [(512, 512, (0.8, 0.8)), (400, 300, (0.7, 1.1))])
def test_a_view_pixel_lies_where_its_value_came_from(config, rows, cols, spacing) -> None:  # type: ignore[no-untyped-def]
    ys, xs = torch.meshgrid(torch.arange(rows) + 0.5, torch.arange(cols) + 0.5, indexing="ij")  # pixel centres
    centre = (rows * spacing[0] * 0.45, cols * spacing[1] * 0.55)
    got_y = resample_inplane(ys[None].float(), spacing, centre, config, fill=-1.0)[0]  # (S, S)
    got_x = resample_inplane(xs[None].float(), spacing, centre, config, fill=-1.0)[0]
    y0, y1, x0, x1 = view_box(rows, cols, spacing, centre, config)
    size = config.size
    want_y = y0 + (torch.arange(size) + 0.5) * (y1 - y0) / size
    want_x = x0 + (torch.arange(size) + 0.5) * (x1 - x0) / size
    native_pixels_per_view_pixel = max((y1 - y0) / size, (x1 - x0) / size)
    margin = 2 * native_pixels_per_view_pixel  # the antialiasing filter is cut at the slice's edges
    inside_y = (want_y > margin) & (want_y < rows - margin)
    inside_x = (want_x > margin) & (want_x < cols - margin)
    assert inside_y.sum() > size // 4 and inside_x.sum() > size // 4
    ey = (got_y[inside_y][:, inside_x] - want_y[inside_y][:, None]).abs().max()
    ex = (got_x[inside_y][:, inside_x] - want_x[inside_x][None, :]).abs().max()
    assert float(ey) < 0.05 * native_pixels_per_view_pixel + 0.05, float(ey)
    assert float(ex) < 0.05 * native_pixels_per_view_pixel + 0.05, float(ex)


def test_the_overlay_is_the_slice_size_with_its_colour_bar(tmp_path) -> None:  # type: ignore[no-untyped-def]
    heat = np.zeros((5, 16, 16), np.float32)
    heat[2, 4:8, 4:8] = 1.0
    path = tmp_path / "ev.npz"
    top = save_evidence(path, slice_scores=np.arange(5, dtype=np.float32), heatmaps=heat, positions_mm=[0, 1, 2, 3, 4],
                        threshold=2.5, heatmap_box=(100.0, 200.0, 50.0, 150.0))  # fmt: skip
    assert top == [4, 3, 2]
    hu = np.full((300, 240), 40.0, np.float32)
    png = Image.open(io.BytesIO(render_overlay(path, 2, hu)))
    assert png.size == (240 + 110, 300 + 22)  # one PNG pixel per CT pixel, beside a colour bar and a title
    rgb = np.asarray(png.convert("RGB"), dtype=np.int32)[22:, :240]  # the image area
    warm = (rgb[..., 0] - rgb[..., 2]) > 40  # the heat (inferno) over the grey CT
    ys, xs = np.nonzero(warm)
    # the hot block is heat pixels 4..8 of 16 over rows 100..200, columns 50..150: rows 125..150, cols 75..100
    assert ys.min() >= 122 and ys.max() <= 153 and xs.min() >= 72 and xs.max() <= 103, (ys.min(), ys.max())
