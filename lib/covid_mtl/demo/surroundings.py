"""What lies around the patient in a real scanner, added to a phantom: couches, arms, thick slices, long coverage.

Each real scan that broke the lung mask stands for a family; these build its synthetic members for the tests:

- ``curved_shell``: a curved couch shell with air/foam layers inside, touching the back (the Siemens couch of
  the issue that made 8 L of "lung");
- ``flat_mattress``: a flat couch with an aerated core and a foam mattress in a fabric cover, the patient sunk
  into it;
- ``pet_pallet``: a PET/CT pallet, a concave carbon shell with a foam core on a hollow support beam;
- a couch wider than the field of view (``narrowed``), running into the image border;
- arms ``down`` (resting against the chest wall) and ``up`` (beside the head and upper chest, apart from it);
- thick slices (partial volume: neighbouring thin slices averaged);
- neck-to-thigh coverage (neck above the lungs, abdomen with bowel and stomach gas, pelvis below).

Everything is in the phantom's layout (``hu[z, y, x]``, y posterior, z superior) and sized in millimetres.
``Scan.not_lung`` marks what was added: none of it may ever be called lung.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from .phantom import Phantom, ras_affine

COUCHES: tuple[str, ...] = ("curved_shell", "flat_mattress", "pet_pallet")
SHELL_HU, FOAM_HU, AIR_HU, FABRIC_HU, SOFT_HU, BONE_HU = 600.0, -880.0, -990.0, 400.0, 40.0, 700.0


@dataclass
class Scan:
    """A phantom in its surroundings. ``hu`` int16, ``lung`` uint8 truth, ``not_lung`` bool, all (z, y, x)."""

    hu: np.ndarray
    lung: np.ndarray
    spacing: tuple[float, float, float]
    not_lung: np.ndarray

    @property
    def affine(self) -> np.ndarray:
        return ras_affine(self.hu.shape, self.spacing)

    @property
    def lung_ml(self) -> float:
        return float(self.lung.sum()) * float(np.prod(self.spacing)) / 1000.0


def from_phantom(phantom: Phantom, posterior_mm: float = 90.0, lateral_mm: float = 90.0) -> Scan:
    """The phantom with room around it (air) for a couch below the back and arms beside the chest."""
    dy = int(round(posterior_mm / phantom.spacing[1]))
    dx = int(round(lateral_mm / phantom.spacing[2]))
    pad = ((0, 0), (dy // 3, dy), (dx, dx))
    hu = np.pad(phantom.hu, pad, constant_values=-1000)
    return Scan(hu, np.pad(phantom.lung, pad), phantom.spacing, np.zeros(hu.shape, bool))


def _noise(shape, seed: int, sd: float) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, sd, shape).astype(np.float32)


def _back(scan: Scan) -> tuple[np.ndarray, int, float]:
    """Per column x the most posterior body row (-1 where no body), the lowest row of all, the body's centre x."""
    tissue = (scan.hu > -500).any(axis=0)
    labels, n = ndimage.label(tissue)
    body = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:])) if n else tissue
    rows = np.where(body, np.arange(body.shape[0])[:, None], -1).max(axis=0)
    xs = np.flatnonzero(rows >= 0)
    return rows, int(rows.max()), float(xs.mean())


def _stack(scan: Scan, top: np.ndarray, layers: list[tuple[float, float]], columns: np.ndarray,
           closed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(HU, mask) of ``layers`` ((thickness mm, HU), top to bottom) stacked under the row ``top[x]`` in
    ``columns``, with partial volume (a 2 mm shell in a 2.2 mm pixel still shows, as on a real scan);
    ``closed``: the outermost columns are shell too (a closed couch: its air enclosed)."""
    ny, nx = scan.hu.shape[1:]
    dy = scan.spacing[1]
    start = (np.arange(ny)[:, None] - top[None, :]) * dy  # mm below the top surface, where each row begins
    value = np.zeros((ny, nx), np.float32)
    covered = np.zeros((ny, nx), np.float32)
    edge = 0.0
    for thickness, hu in layers:
        share = np.clip(np.minimum(start + dy, edge + thickness) - np.maximum(start, edge), 0.0, dy) / dy
        share *= columns[None, :]
        value += share * hu
        covered += share
        edge += thickness
    mask = covered > 0.0
    value = np.where(mask, value + (1.0 - covered) * -1000.0, np.nan)
    if closed:
        xs = np.flatnonzero(columns)
        wall = max(1, int(round(3.0 / scan.spacing[2])))
        ends = np.zeros(nx, bool)
        ends[xs[:wall]] = ends[xs[-wall:]] = True
        value[mask & ends[None, :]] = layers[0][1]
    return value, mask


def _place(scan: Scan, value: np.ndarray, mask: np.ndarray, seed: int, noise_sd: float = 15.0) -> Scan:
    """The same cross-section on every slice (a couch runs the whole scan), over the air only."""
    hu = scan.hu.astype(np.float32)
    where = np.broadcast_to(mask, hu.shape) & (scan.lung == 0) & (hu < -500)
    full = np.broadcast_to(value, hu.shape) + _noise(hu.shape, seed, noise_sd)
    hu[where] = full[where]
    return replace(scan, hu=np.clip(np.rint(hu), -1024, 3071).astype(np.int16), not_lung=scan.not_lung | where)


def with_couch(scan: Scan, kind: str, seed: int = 0) -> Scan:
    """``scan`` lying on a couch of ``kind`` (one of :data:`COUCHES`), touching the back."""
    if kind not in COUCHES:
        raise ValueError(f"couch {kind!r} is not one of {COUCHES}")
    back, lowest, centre = _back(scan)
    nx = scan.hu.shape[2]
    x_mm = (np.arange(nx) - centre) * scan.spacing[2]
    dy = scan.spacing[1]
    if kind == "curved_shell":
        # a cradle curving up at the sides (radius 250 mm); where the curve would cut into the back, the back
        # rests on it: the shell's top wall touches the body over a band
        arc = lowest - (15.0 + x_mm ** 2 / (2 * 250.0)) / dy  # the patient sinks 15 mm into the cradle
        top = np.where(back >= 0, np.maximum(arc, back + 1), arc).round()
        layers = [(2.5, SHELL_HU), (8.0, FOAM_HU), (2.5, SHELL_HU), (12.0, AIR_HU), (3.0, SHELL_HU)]
        value, mask = _stack(scan, top, layers, np.abs(x_mm) < 230.0)
    elif kind == "flat_mattress":
        # the patient sinks 25 mm into a foam mattress in a fabric cover; under it a couch with an aerated core
        flat = lowest - 25.0 / dy
        top = np.where(back >= flat, back + 1, flat).round()
        mattress = [(2.0, FABRIC_HU), (50.0, FOAM_HU), (2.0, FABRIC_HU)]
        value, mask = _stack(scan, top, mattress, np.abs(x_mm) < 240.0)
        under = np.full(nx, top.max() + 53.0 / dy).round()
        couch_value, couch_mask = _stack(scan, under, [(3.0, SHELL_HU), (30.0, -850.0), (3.0, SHELL_HU)],
                                         np.abs(x_mm) < 250.0)
        value = np.where(couch_mask, couch_value, value)
        mask |= couch_mask
    else:  # pet_pallet: a concave carbon pallet with a foam core, on a hollow support beam
        arc = lowest - (10.0 + x_mm ** 2 / (2 * 300.0)) / dy
        top = np.where(back >= 0, np.maximum(arc, back + 1), arc).round()
        value, mask = _stack(scan, top, [(4.0, 400.0), (15.0, -900.0), (4.0, 400.0)], np.abs(x_mm) < 200.0)
        beam_top = np.full(nx, lowest + 30.0 / dy).round()
        beam_value, beam_mask = _stack(scan, beam_top, [(5.0, 200.0), (30.0, AIR_HU), (5.0, 200.0)],
                                       np.abs(x_mm) < 50.0)
        value = np.where(beam_mask, beam_value, value)
        mask |= beam_mask
    return _place(scan, value, mask, seed)


def narrowed(scan: Scan, margin_mm: float = 15.0) -> Scan:
    """The field of view cut to the body's width plus ``margin_mm`` each side: a couch wider than the image runs
    into its border (as in a scan whose reconstruction circle is wider than the image)."""
    xs = np.flatnonzero(((scan.hu > -500) & ~scan.not_lung).any(axis=(0, 1)))
    pad = int(round(margin_mm / scan.spacing[2]))
    keep = slice(max(0, xs[0] - pad), xs[-1] + pad + 1)
    return Scan(scan.hu[:, :, keep].copy(), scan.lung[:, :, keep].copy(), scan.spacing,
                scan.not_lung[:, :, keep].copy())


def with_arms(scan: Scan, position: str, seed: int = 0) -> Scan:
    """Arms ``down`` (resting against the chest wall, every slice) or ``up`` (beside the upper chest, 15 mm
    away from it, upper 40 % of the slices)."""
    if position not in ("down", "up"):
        raise ValueError(f"arms position {position!r} is not 'down' or 'up'")
    nz, ny, nx = scan.hu.shape
    tissue = (scan.hu > -500).any(axis=0)
    ys, xs = np.nonzero(tissue & (scan.hu[nz // 2] > -500))
    left, right, middle = xs.min(), xs.max(), (ys.min() + ys.max()) / 2.0
    ry, rx = 55.0 / scan.spacing[1], 42.0 / scan.spacing[2]
    gap = -3.0 if position == "down" else 15.0  # mm: overlapping (touching) or apart
    shift = (gap / scan.spacing[2]) + rx
    yy, xx = np.mgrid[:ny, :nx].astype(np.float32)
    value, mask = np.full((ny, nx), np.nan, np.float32), np.zeros((ny, nx), bool)
    for cx in (left - shift, right + shift):
        cy = middle + (0.0 if position == "down" else -0.25 * (ys.max() - ys.min()))
        arm = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
        bone = ((yy - cy) / (0.25 * ry)) ** 2 + ((xx - cx) / (0.3 * rx)) ** 2 < 1.0
        skin_fat = arm & ~ndimage.binary_erosion(arm, iterations=max(1, int(round(6.0 / scan.spacing[2]))))
        value[arm] = SOFT_HU
        value[skin_fat] = -100.0
        value[bone] = BONE_HU
        mask |= arm
    slices = np.ones(nz, bool) if position == "down" else np.arange(nz) >= int(0.6 * nz)
    hu = scan.hu.astype(np.float32)
    where = np.broadcast_to(mask, hu.shape) & slices[:, None, None] & (scan.lung == 0) & (hu < -500)
    full = np.broadcast_to(value, hu.shape) + _noise(hu.shape, seed + 1, 12.0)
    hu[where] = full[where]
    return replace(scan, hu=np.clip(np.rint(hu), -1024, 3071).astype(np.int16), not_lung=scan.not_lung | where)


def with_thick_slices(scan: Scan, factor: int) -> Scan:
    """Slices ``factor`` times thicker: each the mean of ``factor`` neighbouring slices (partial volume); a thick
    voxel is lung when at least half of it was."""
    n = (scan.hu.shape[0] // factor) * factor

    def mean(a: np.ndarray) -> np.ndarray:
        return a[:n].reshape(n // factor, factor, *a.shape[1:]).astype(np.float32).mean(axis=1)

    spacing = (scan.spacing[0] * factor, scan.spacing[1], scan.spacing[2])
    return Scan(np.rint(mean(scan.hu)).astype(np.int16), (mean(scan.lung) >= 0.5).astype(np.uint8), spacing,
                mean(scan.not_lung) > 0)


def neck_to_thigh(scan: Scan, below_mm: float = 400.0, above_mm: float = 100.0, seed: int = 0) -> Scan:
    """The chest inside a longer scan: abdomen and pelvis below the lungs (stomach and bowel gas, pelvic bone),
    the neck with the trachea above them."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = scan.hu.shape
    dz = scan.spacing[0]
    n_below, n_above = int(round(below_mm / dz)), int(round(above_mm / dz))
    lowest = scan.hu[0].astype(np.float32)
    body = ndimage.binary_fill_holes(lowest > -500)
    below = np.where(body, SOFT_HU, -1000.0)[None].repeat(n_below, axis=0)
    yy, xx = np.mgrid[:ny, :nx]
    ys, xs = np.nonzero(body)
    cy, cx, hy, hx = ys.mean(), xs.mean(), (ys.max() - ys.min()) / 2, (xs.max() - xs.min()) / 2
    gas = np.zeros(below.shape, bool)
    # stomach under the left dome (patient's left = larger x here), bowel loops lower down
    pockets = [(n_below - 1 - int(30 / dz), cx + 0.35 * hx, cy - 0.2 * hy, 35.0, 45.0)]
    for _ in range(10):
        pockets.append((int(rng.uniform(0.1, 0.8) * n_below), cx + rng.uniform(-0.6, 0.6) * hx,
                        cy + rng.uniform(-0.6, 0.2) * hy, rng.uniform(6, 14), rng.uniform(10, 25)))
    zz = np.arange(n_below)[:, None, None]
    for z0, x0, y0, r_mm, height_mm in pockets:
        r = r_mm / scan.spacing[2]
        gas |= ((((yy - y0) ** 2 + (xx - x0) ** 2) < r ** 2)[None] & (np.abs(zz - z0) * dz < height_mm / 2))
    below[gas] = -1000.0
    below = ndimage.gaussian_filter(below, (0.5, 1.0, 1.0))  # partial volume at the gas walls
    pelvis = (np.abs(zz) < int(0.3 * n_below)) & (((((yy - cy - 0.4 * hy) / (0.25 * hy)) ** 2
                                                     + ((np.abs(xx - cx) - 0.5 * hx) / (0.2 * hx)) ** 2) < 1)[None])
    below[pelvis] = BONE_HU
    neck = ((yy - cy) / (0.45 * hy)) ** 2 + ((xx - cx) / (0.35 * hx)) ** 2 < 1.0
    trachea_cols = scan.hu[-1] < -900  # where the phantom's top slice holds its trachea
    trachea = trachea_cols & neck & ndimage.binary_erosion(neck, iterations=3)
    above = np.where(neck, SOFT_HU, -1000.0)
    above[trachea] = -1000.0
    above = above[None].repeat(n_above, axis=0)
    noise = _noise((n_below + n_above, ny, nx), seed + 2, 12.0)
    below += noise[:n_below] * (below > -900)
    above += noise[n_below:] * (above > -900)
    hu = np.concatenate([below, scan.hu.astype(np.float32), above])
    lung = np.concatenate([np.zeros(below.shape, np.uint8), scan.lung, np.zeros(above.shape, np.uint8)])
    added = np.concatenate([np.ones(below.shape, bool), scan.not_lung, np.ones(above.shape, bool)])
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return Scan(hu, lung, scan.spacing, added)
