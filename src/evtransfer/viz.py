"""Figures: class palettes, colourisers for labels, depth, events and flow, and PNG panels.

Every colouriser takes a NumPy array or a torch tensor (any device; it is copied to the host)
and returns an (H, W, 3) uint8 RGB image, so panels can mix them freely. Invalid pixels are
black throughout. matplotlib is imported only inside the functions that need it, and never
through pyplot, so importing this module selects no backend and opens no window.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _palette(rows: list[tuple[int, int, int]]) -> np.ndarray:
    out = np.array(rows, dtype=np.uint8)
    out.setflags(write=False)
    return out


# DSEC-Semantic 11 classes in id order (code: uzh-rpg/ess config/settings.py; formats.md §1):
# background, building, fence, person, pole, road, sidewalk, vegetation, car, wall, traffic sign.
DSEC11_PALETTE = _palette([
    (0, 0, 0), (70, 70, 70), (190, 153, 153), (220, 20, 60), (153, 153, 153), (128, 64, 128),
    (244, 35, 232), (107, 142, 35), (0, 0, 142), (102, 102, 156), (220, 220, 0),
])
# DDD17 6 classes: flat, background, object, vegetation, human, vehicle
# (code: uzh-rpg/ess config/settings.py, `semseg_num_classes == 6`).
DDD17_PALETTE = _palette([
    (128, 64, 128), (70, 70, 70), (220, 220, 0), (107, 142, 35), (220, 20, 60), (0, 0, 142),
])
# Cityscapes 19 trainIds, road … bicycle (code: mcordts/cityscapesScripts labels.py).
CITYSCAPES19_PALETTE = _palette([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
])
PALETTES = {"dsec11": DSEC11_PALETTE, "ddd17": DDD17_PALETTE, "cityscapes19": CITYSCAPES19_PALETTE}

# Middlebury flow colour wheel (Baker et al., IJCV 2011): hue segments and their lengths,
# red → yellow → green → cyan → blue → magenta → red.
_WHEEL_SEGMENTS = (
    (15, (1, 0, 0), (1, 1, 0)), (6, (1, 1, 0), (0, 1, 0)), (4, (0, 1, 0), (0, 1, 1)),
    (11, (0, 1, 1), (0, 0, 1)), (13, (0, 0, 1), (1, 0, 1)), (6, (1, 0, 1), (1, 0, 0)),
)
_POSITIVE_RGB = np.array([0, 0, 255], dtype=np.float64)  # unpublished: our choice (blue)
_NEGATIVE_RGB = np.array([255, 0, 0], dtype=np.float64)  # unpublished: our choice (red)


def _host(name: str, x) -> np.ndarray:
    """A NumPy view of `x` (torch tensors are detached and copied to the host)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name} must be a numpy.ndarray or torch.Tensor, got {type(x).__name__}")


def colorize_labels(labels, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Class-id map (..., e.g. (H, W), integer) → (..., 3) uint8 RGB via a (C, 3) uint8 palette.

    Pixels equal to `ignore_index` are black; any other id outside [0, C) raises ValueError.
    """
    lab = _host("labels", labels)
    pal = np.asarray(palette)
    if pal.ndim != 2 or pal.shape[1] != 3 or pal.dtype != np.uint8:
        raise ValueError(f"palette must be (C, 3) uint8, got {pal.dtype} {pal.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids, got dtype {lab.dtype}")
    ignore = lab == ignore_index
    bad = ~ignore & ((lab < 0) | (lab >= len(pal)))
    if bad.any():
        raise ValueError(f"labels {np.unique(lab[bad])[:5].tolist()} outside [0, {len(pal)}) "
                         f"and not the ignore index {ignore_index}")
    out = pal[np.where(ignore, 0, lab)]
    out[ignore] = 0
    return out


def colorize_depth(depth, vmin: float | None = None, vmax: float | None = None,
                   cmap: str = "turbo_r") -> np.ndarray:
    """(H, W) float depth in metres → (H, W, 3) uint8 on a log scale between vmin and vmax.

    t = (ln d − ln vmin)/(ln vmax − ln vmin), clipped to [0, 1], through the matplotlib
    colormap `cmap` ("turbo_r": near red, far dark blue; our choice). vmin/vmax default to
    the valid range of `depth`; pass the same values for GT and prediction to compare them.
    NaN, ±inf and depth <= 0 are invalid and black.
    """
    from matplotlib import colormaps

    d = _host("depth", depth)
    if d.ndim != 2 or not np.issubdtype(d.dtype, np.floating):
        raise ValueError(f"depth must be (H, W) float, got {d.dtype} {d.shape}")
    valid = np.isfinite(d) & (d > 0)
    if vmin is None:
        vmin = float(d[valid].min()) if valid.any() else 1.0
    if vmax is None:
        vmax = float(d[valid].max()) if valid.any() else max(vmin, 1.0)
    if not 0 < vmin <= vmax:
        raise ValueError(f"need 0 < vmin <= vmax, got vmin={vmin}, vmax={vmax}")
    logd = np.log(np.where(valid, d, vmin).astype(np.float64))
    span = max(np.log(vmax) - np.log(vmin), 1e-12)
    t = np.clip((logd - np.log(vmin)) / span, 0.0, 1.0)
    out = colormaps[cmap](t, bytes=True)[..., :3].copy()
    out[~valid] = 0
    return out


def colorize_events(events, background: str = "white", scale: float | None = None) -> np.ndarray:
    """Event image → (H, W, 3) uint8: positive net polarity blue, negative red.

    `events` is a (2, H, W) histogram (channel 0 = negative counts, channel 1 = positive) or
    an (H, W) signed image; the net value pos − neg sets the colour, and its magnitude over
    `scale` (default: the 99th percentile of |net| over active pixels) the saturation, on a
    "white" or "black" background. Non-finite values raise ValueError.
    """
    e = _host("events", events)
    if e.ndim == 3 and e.shape[0] == 2:
        net = e[1].astype(np.float64) - e[0].astype(np.float64)
    elif e.ndim == 2:
        net = e.astype(np.float64)
    else:
        raise ValueError(f"events must be (2, H, W) or (H, W), got shape {e.shape}")
    if background not in ("white", "black"):
        raise ValueError(f"background must be 'white' or 'black', got {background!r}")
    if not np.isfinite(net).all():
        raise ValueError("events contains NaN or inf")
    active = np.abs(net[net != 0])
    if scale is None:
        scale = float(np.percentile(active, 99)) if active.size else 1.0
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    w = np.clip(np.abs(net) / scale, 0.0, 1.0)[..., None]
    colour = np.where(net[..., None] > 0, _POSITIVE_RGB, _NEGATIVE_RGB)
    bg = 255.0 if background == "white" else 0.0
    return np.rint(bg * (1 - w) + colour * w).astype(np.uint8)


def stretch_contrast(image, percentile: float = 99.5) -> np.ndarray:
    """A non-negative float image scaled so its `percentile` maps to 1 (clipped to [0, 1]):
    sparse spike textures (TFP) become visible. An all-zero image stays zero."""
    img = _host("image", image).astype(np.float64)
    top = float(np.percentile(img, percentile)) if img.size else 0.0
    top = top if top > 0 else float(img.max(initial=0.0))
    return np.clip(img / top, 0.0, 1.0) if top > 0 else np.zeros_like(img)


def _color_wheel() -> np.ndarray:
    """(55, 3) float colours of the Middlebury wheel, in [0, 1]."""
    parts = [np.asarray(a, float) + (np.asarray(b, float) - np.asarray(a, float))
             * (np.arange(n) / n)[:, None] for n, a, b in _WHEEL_SEGMENTS]
    return np.concatenate(parts)


def colorize_flow(flow, max_flow: float | None = None) -> np.ndarray:
    """(2, H, W) float flow (u right, v down, px) → (H, W, 3) uint8 Middlebury colour coding.

    Hue is the direction (right red, down yellow, left cyan, up violet), saturation the
    magnitude over `max_flow` (default: the largest valid magnitude); zero flow is white and
    magnitudes beyond `max_flow` are darkened to 75 %. Non-finite vectors are black.
    """
    f = _host("flow", flow)
    if f.ndim != 3 or f.shape[0] != 2 or not np.issubdtype(f.dtype, np.floating):
        raise ValueError(f"flow must be (2, H, W) float, got {f.dtype} {f.shape}")
    valid = np.isfinite(f).all(axis=0)
    u = np.where(valid, f[0], 0).astype(np.float64)
    v = np.where(valid, f[1], 0).astype(np.float64)
    rad = np.hypot(u, v)
    if max_flow is None:
        max_flow = float(rad.max()) if rad.size else 0.0
        max_flow = max_flow if max_flow > 0 else 1.0
    if max_flow <= 0:
        raise ValueError(f"max_flow must be > 0, got {max_flow}")
    wheel = _color_wheel()
    ncols = len(wheel)
    fk = (np.arctan2(-v, -u) / np.pi + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(np.int64)
    frac = (fk - k0)[..., None]
    col = (1 - frac) * wheel[k0] + frac * wheel[(k0 + 1) % ncols]
    r = (rad / max_flow)[..., None]
    col = np.where(r <= 1, 1 - r * (1 - col), col * 0.75)
    out = np.floor(255 * col).astype(np.uint8)
    out[~valid] = 0
    return out


def _panel_image(i: int, image) -> np.ndarray:
    img = _host(f"images[{i}]", image)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"images[{i}] must be (H, W) or (H, W, 3) uint8 (use a colorize_* "
                         f"function first), got {img.dtype} {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"images[{i}] is empty, shape {img.shape}")
    return img


def save_panel(images: Sequence, titles: Sequence[str], path: str | Path,
               ncols: int | None = None, title_px: int = 18,
               legend: tuple[Sequence[str], np.ndarray] | None = None) -> Path:
    """Write images as one PNG grid, each at its native pixel size under its title.

    `images`: (H, W, 3) uint8 RGB or (H, W) uint8 grey arrays; `titles`: one string each.
    Cells are max(W) wide and max(H) + `title_px` tall (no title band when every title is
    empty), `ncols` defaults to min(n, 4), so the PNG is exactly ncols·cell_w × nrows·cell_h
    pixels, plus a band below for `legend`, (class names, (K, 3) uint8 palette): a swatch and
    a name per class (the figure is then at least 96 px wide).
    Parent folders are created. Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    imgs = [_panel_image(i, im) for i, im in enumerate(images)]
    titles = list(titles)
    if not imgs or len(titles) != len(imgs):
        raise ValueError(f"need one title per image and at least one image, got "
                         f"{len(imgs)} images and {len(titles)} titles")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: save_panel writes PNG; use a .png suffix")
    ncols = min(len(imgs), 4) if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    nrows = -(-len(imgs) // ncols)
    band = title_px if any(titles) else 0
    cell_w = max(im.shape[1] for im in imgs)
    cell_h = max(im.shape[0] for im in imgs) + band
    key = _legend_entries(legend)
    per_row = max(1, ncols * cell_w // _LEGEND_ENTRY_PX)
    legend_h = -(-len(key) // per_row) * _LEGEND_ROW_PX
    fig_w = max(ncols * cell_w, _LEGEND_ENTRY_PX if key else 0)
    fig_h = nrows * cell_h + legend_h
    dpi = 100
    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    for i, (img, title) in enumerate(zip(imgs, titles, strict=True)):
        row, col = divmod(i, ncols)
        h, w = img.shape[:2]
        x0 = col * cell_w + (cell_w - w) / 2
        top = row * cell_h + band
        ax = fig.add_axes((x0 / fig_w, 1 - (top + h) / fig_h, w / fig_w, h / fig_h))
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255,
                  interpolation="nearest", aspect="auto")
        ax.set_axis_off()
        if band and title:
            fig.text((col * cell_w + cell_w / 2) / fig_w, 1 - (row * cell_h + band / 2) / fig_h,
                     title, ha="center", va="center", fontsize=band * 0.5 * 72 / dpi)
    for i, (name, rgb) in enumerate(key):
        row, col = divmod(i, per_row)
        y = 1 - (nrows * cell_h + (row + 0.5) * _LEGEND_ROW_PX) / fig_h
        x = col * _LEGEND_ENTRY_PX / fig_w
        fig.patches.append(_swatch(fig, x, y, rgb, fig_w, fig_h))
        fig.text(x + 14 / fig_w, y, name, ha="left", va="center", fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi, facecolor="white")
    return path


_LEGEND_ENTRY_PX, _LEGEND_ROW_PX = 96, 14


def _legend_entries(legend) -> list[tuple[str, tuple[float, ...]]]:
    if legend is None:
        return []
    names, palette = legend
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) != len(names):
        raise ValueError(f"legend needs one name per (K, 3) palette row, got {len(names)} "
                         f"names and palette {palette.shape}")
    return [(str(n), tuple(c / 255 for c in rgb)) for n, rgb in zip(names, palette.tolist(),
                                                                    strict=True)]


def _swatch(fig, x: float, y: float, rgb, fig_w: int, fig_h: int):
    """A 10×10 px colour square whose left edge is at `x` and centre at `y` (figure units)."""
    from matplotlib.patches import Rectangle

    return Rectangle((x + 2 / fig_w, y - 5 / fig_h), 10 / fig_w, 10 / fig_h, color=rgb,
                     transform=fig.transFigure, figure=fig)
