"""Deterministic synthetic chest-CT phantoms: HU volume, lung mask and lesion mask.

The anatomy is laid out relative to the field of view, so any grid (tiny test volumes included) holds a
whole chest; small structures (vessels, lesions) are sized in physical units scaled by the half-width of
the field of view, so they keep their proportions when the grid changes.

Orientation (the same as a supine CT read from DICOM): ``hu[z, y, x]`` with x towards the patient's left,
y towards posterior, z towards superior (z = 0 is the lung base). ``Phantom.affine`` is the matching
nibabel voxel-to-RAS matrix of ``hu.transpose(2, 1, 0)``.

Lesion patterns: ``covid`` = bilateral, peripheral, posterior-predominant ground-glass patches (some with a
consolidated core); ``other`` = one of unilateral lower-lobe consolidation, a thick-walled cavity or solid
nodules in one lung (picked by the seed); ``normal`` = none. ``lesion`` marks the abnormal lung voxels for
every kind, so the mask format is the same whether the infection is COVID or not.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import CovidMTLError
from ..image import CLASSES

DEFAULT_SHAPE: tuple[int, int, int] = (32, 160, 160)
DEFAULT_SPACING: tuple[float, float, float] = (5.0, 2.2, 2.2)
OTHER_PATTERNS: tuple[str, ...] = ("lobar", "cavity", "nodules")
_OTHER_PATTERN_P = (0.5, 0.25, 0.25)

AIR_HU, FAT_HU, SOFT_HU, LUNG_HU, BONE_HU, VESSEL_HU = -1000.0, -100.0, 40.0, -850.0, 700.0, 35.0


@dataclass
class Phantom:
    """One synthetic chest CT. ``hu`` int16, ``lung`` and ``lesion`` uint8 0/1, all (z, y, x)."""

    hu: np.ndarray
    lesion: np.ndarray
    lung: np.ndarray
    spacing: tuple[float, float, float]
    kind: str
    pattern: str
    seed: int

    @property
    def affine(self) -> np.ndarray:
        return ras_affine(self.hu.shape, self.spacing)


def ras_affine(shape: tuple[int, ...], spacing: tuple[float, float, float]) -> np.ndarray:
    """Voxel-to-RAS affine of a (z, y, x) grid stored as (x, y, z), centred on the origin.

    x runs to patient left and y to posterior (DICOM LPS axes), hence the negative RAS diagonal.
    """
    nz, ny, nx = shape
    sz, sy, sx = spacing
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = ((nx - 1) / 2 * sx, (ny - 1) / 2 * sy, -(nz - 1) / 2 * sz)
    return affine


def check_grid(shape, spacing) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """``shape`` and ``spacing`` as int/float triples, or CovidMTLError naming what is wrong."""
    try:
        shape = tuple(int(n) for n in shape)
        spacing = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as exc:
        raise CovidMTLError(f"phantom shape/spacing must be three numbers: {exc}") from None
    if len(shape) != 3 or shape[0] < 2 or min(shape[1:]) < 32:
        raise CovidMTLError(f"phantom shape {shape} must be (z, y, x) with z >= 2 and y, x >= 32")
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise CovidMTLError(f"phantom spacing {spacing} must be three positive mm values")
    return shape, spacing  # type: ignore[return-value]


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CovidMTLError(f"phantom seed must be a non-negative integer, got {seed!r}")
    return int(seed)


class _Grid:
    """Coordinates of every voxel in three frames.

    ``U, V, W``: physical position divided by the half-width of the field of view (isotropic units);
    ``u, v``: position in the body ellipse frame (body boundary at u^2 + v^2 = 1); ``t``: 0 at the first
    slice, 1 at the last one.
    """

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]):
        nz, ny, nx = shape
        self.shape = shape
        self.scale = nx * spacing[2] / 2.0  # mm per unit
        self.step = tuple(s / self.scale for s in spacing)  # voxel size in units, (z, y, x)
        self.W = ((np.arange(nz) - (nz - 1) / 2) * self.step[0]).reshape(-1, 1, 1)
        self.V = ((np.arange(ny) - (ny - 1) / 2) * self.step[1]).reshape(1, -1, 1)
        self.U = ((np.arange(nx) - (nx - 1) / 2) * self.step[2]).reshape(1, 1, -1)
        self.t = np.linspace(0.0, 1.0, nz).reshape(-1, 1, 1)

    def set_body(self, cu: float, cv: float, bu: float, bv: float) -> None:
        self.body_c, self.body_r = (cu, cv), (bu, bv)
        self.u = (self.U - cu) / bu
        self.v = (self.V - cv) / bv

    def to_units(self, u: float, v: float) -> tuple[float, float]:
        """Body-frame (u, v) to isotropic units (U, V)."""
        return self.body_c[0] + self.body_r[0] * u, self.body_c[1] + self.body_r[1] * v

    def voxel(self, U: float, V: float, W: float) -> tuple[int, int, int]:
        nz, ny, nx = self.shape
        z = int(round(W / self.step[0] + (nz - 1) / 2))
        y = int(round(V / self.step[1] + (ny - 1) / 2))
        x = int(round(U / self.step[2] + (nx - 1) / 2))
        return min(max(z, 0), nz - 1), min(max(y, 0), ny - 1), min(max(x, 0), nx - 1)

    def ellipsoid(self, centre: tuple[float, float, float], radii: tuple[float, float, float]) -> np.ndarray:
        """Normalised distance (1 on the surface) to an axis-aligned ellipsoid in isotropic units."""
        (U, V, W), (ru, rv, rw) = centre, radii
        return np.sqrt(((self.U - U) / ru) ** 2 + ((self.V - V) / rv) ** 2 + ((self.W - W) / rw) ** 2)


def _smooth_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return field / max(float(field.std()), 1e-6)


class _Lungs:
    """Per-seed lung geometry: two ellipses per slice whose size follows the apex-to-base profile."""

    def __init__(self, rng: np.random.Generator, grid: _Grid):
        scale = rng.uniform(0.85, 1.05)
        self.offset = rng.uniform(0.42, 0.48)  # lateral distance of each lung centre, body frame
        self.v0 = rng.uniform(0.0, 0.1)
        self.ru = 0.40 * scale * np.array([1.05, 1.0])  # right lung slightly wider (index 0 = right)
        self.rv = 0.78 * scale
        self.t0, self.t1 = rng.uniform(0.02, 0.1), rng.uniform(0.86, 0.97)
        self.dome_top = (rng.uniform(0.33, 0.42), rng.uniform(0.26, 0.34))  # liver lifts the right dome
        self.grid = grid

    def tau(self, t):
        return (t - self.t0) / (self.t1 - self.t0)

    def size(self, tau):
        """Radius factor: full from the base up to mid chest, tapering to the apex."""
        return np.sqrt(np.clip((1.0 - tau) / 0.4, 0.0, 1.0)) * (tau > 0)

    def centre(self, side: int) -> tuple[float, float]:
        return (-self.offset if side == 0 else self.offset), self.v0

    def mask(self, side: int) -> np.ndarray:
        g = self.grid
        tau = self.tau(g.t)
        s = np.maximum(self.size(tau), 1e-6)
        uc, vc = self.centre(side)
        ru, rv = self.ru[side] * s, self.rv * s
        inside = ((g.u - uc) / ru) ** 2 + ((g.v - vc) / rv) ** 2 < 1.0
        # the diaphragm dome rises into the lung base from anterior, leaving posterior crescents
        grow = np.sqrt(np.clip(1.0 - tau / self.dome_top[side], 0.0, 1.0)) * 1.3
        dome = ((g.u - uc) / (ru * grow + 1e-6)) ** 2 + ((g.v - vc + 0.8 * rv) / (rv * grow + 1e-6)) ** 2 < 1.0
        # heart in the lower half, shifted to the patient's left, carves the cardiac notch
        heart_r = 0.3 * np.sin(np.pi * np.clip(tau / 0.62, 0.0, 1.0))
        heart = ((g.u - 0.1) / (heart_r + 1e-6)) ** 2 + ((g.v + 0.22) / (heart_r + 1e-6)) ** 2 < 1.0
        r_body = np.sqrt(g.u ** 2 + g.v ** 2)
        return inside & ~dome & ~heart & (r_body < 0.83) & (np.abs(g.u) > 0.1) & (tau > 0) & (tau < 1)

    def point(self, side: int, tau: float, rho: float, phi: float):
        """Isotropic-unit position at fraction ``rho`` of the lung radius in direction ``phi``.

        ``phi`` = 0 points laterally, +pi/2 posteriorly, -pi/2 anteriorly.
        """
        s = float(self.size(np.array(tau)))
        uc, vc = self.centre(side)
        lateral = -1.0 if side == 0 else 1.0
        u = uc + lateral * np.cos(phi) * rho * self.ru[side] * s
        v = vc + np.sin(phi) * rho * self.rv * s
        t = self.t0 + tau * (self.t1 - self.t0)
        nz = self.grid.shape[0]
        W = (t * (nz - 1) - (nz - 1) / 2) * self.grid.step[0]
        return (*self.grid.to_units(u, v), W)


def _vessel_tree(rng: np.random.Generator, grid: _Grid, lungs: _Lungs, lung: np.ndarray) -> np.ndarray:
    """Tapering tubes from each hilum towards the periphery (pulmonary vessels)."""
    seeds = np.zeros(grid.shape, dtype=bool)
    radius = np.zeros(grid.shape, dtype=np.float32)
    min_r = 0.5 * grid.step[2]
    for side in (0, 1):
        hilum = lungs.point(side, 0.5, 0.55, np.pi)  # medial side of the lung
        for _ in range(12):
            end = lungs.point(side, rng.uniform(0.05, 0.9), rng.uniform(0.5, 0.95), rng.uniform(-np.pi, np.pi))
            length = np.linalg.norm(np.subtract(end, hilum))
            n = max(int(np.ceil(length / min(grid.step) * 2)), 2)
            r_start, r_end = rng.uniform(0.018, 0.026), rng.uniform(0.006, 0.01)
            for f in np.linspace(0.0, 1.0, n):
                U, V, W = (hilum[i] + f * (end[i] - hilum[i]) for i in range(3))
                idx = grid.voxel(U, V, W)
                seeds[idx] = True
                radius[idx] = max(radius[idx], max(r_start + f * (r_end - r_start), min_r))
    dist, nearest = ndimage.distance_transform_edt(~seeds, sampling=grid.step, return_indices=True)
    return (dist <= radius[tuple(nearest)]) & lung


def _airways(grid: _Grid, lungs: _Lungs) -> np.ndarray:
    """Trachea in the upper slices splitting into the two main bronchi."""
    tau = lungs.tau(grid.t)
    carina, end = 0.64, 0.45
    trachea = (grid.u ** 2 + ((grid.v - 0.3) * grid.body_r[1] / grid.body_r[0]) ** 2 < 0.06 ** 2) & (tau >= carina)
    spread = np.clip((carina - tau) / (carina - end), 0.0, 1.0) * 0.28
    bronchi = np.zeros(grid.shape, dtype=bool)
    for sign in (-1.0, 1.0):
        du, dv = grid.u - sign * spread, (grid.v - 0.3 - 0.3 * spread) * grid.body_r[1] / grid.body_r[0]
        bronchi |= (du ** 2 + dv ** 2 < 0.042 ** 2) & (tau < carina) & (tau >= end)
    return np.broadcast_to(trachea | bronchi, grid.shape)


def _bones(rng: np.random.Generator, grid: _Grid) -> np.ndarray:
    """Vertebra (body and arch) posteriorly, a sternum anteriorly and ribs along the chest wall."""
    u, v, t = grid.u, grid.v, grid.t
    vertebra = (u / 0.11) ** 2 + ((v - 0.66) / 0.13) ** 2 < 1.0
    canal = u ** 2 + (v - 0.85) ** 2 < 0.055 ** 2
    arch = (u ** 2 + (v - 0.85) ** 2 < 0.1 ** 2) & ~canal
    sternum = ((u / 0.08) ** 2 + ((v + 0.9) / 0.04) ** 2 < 1.0) & (t > 0.35) & (t < 0.9)
    r, theta = np.sqrt(u ** 2 + v ** 2), np.arctan2(v, u)
    phase, cycles = rng.uniform(0, 2 * np.pi), rng.uniform(2.5, 3.5)
    # ribs run obliquely, so each slice cuts them at angles that shift with z: stripes in (theta, z)
    stripes = np.cos(14 * theta + 2 * np.pi * cycles * t + phase) > 0.55
    away_from_midline = (np.abs(theta - np.pi / 2) > 0.35) & (np.abs(theta + np.pi / 2) > 0.35)
    ribs = (r > 0.84) & (r < 0.89) & stripes & away_from_midline
    return np.broadcast_to(vertebra | arch | sternum | ribs, grid.shape)


def _paint_covid(rng, grid, lungs, lung, hu, lesion, texture, irregular) -> None:
    """Several peripheral, posterior-leaning ground-glass patches per lung, some with consolidation."""
    for side in (0, 1):
        placed = 0
        for _ in range(40):
            if placed >= 2 and (placed >= 5 or rng.random() < 0.3):
                break
            tau = rng.uniform(0.12, 0.85)
            centre = lungs.point(side, tau, rng.uniform(0.72, 0.95), rng.uniform(-0.4, 1.5))
            if not lung[grid.voxel(*centre)]:
                continue
            radii = (rng.uniform(0.1, 0.2), rng.uniform(0.1, 0.2), rng.uniform(0.06, 0.14))
            d = grid.ellipsoid(centre, radii) + 0.18 * irregular
            weight = np.clip((1.0 - d) / 0.3, 0.0, 1.0)
            patch = (weight > 0.2) & lung
            target = rng.uniform(-600.0, -350.0)
            ggo = LUNG_HU + (target - LUNG_HU) * weight + 30.0 * texture
            hu[patch] = np.maximum(hu, ggo)[patch]  # vessels stay visible through ground glass
            if rng.random() < 0.35:
                core = (d < 0.5) & lung
                hu[core] = (rng.uniform(-120.0, 20.0) + 15.0 * texture)[core]
            lesion |= patch
            placed += 1


def _paint_other(rng, grid, lungs, lung, hu, lesion, texture, irregular, vessels) -> str:
    """One-lung infection: lower-lobe consolidation, a cavity, or solid nodules."""
    pattern = OTHER_PATTERNS[rng.choice(len(OTHER_PATTERNS), p=_OTHER_PATTERN_P)]
    side = int(rng.integers(2))
    one_lung = lung & lungs.mask(side)
    if pattern == "lobar":
        uc, vc = lungs.centre(side)
        q = (grid.v - vc) / lungs.rv  # -1 anterior .. +1 posterior
        fissure = 0.12 + 0.5 * (q + 1.0) / 2.0 + rng.uniform(-0.05, 0.08)  # oblique fissure
        region = one_lung & (lungs.tau(grid.t) < fissure + 0.05 * irregular)
        hu[region] = (rng.uniform(5.0, 35.0) + 10.0 * texture)[region]
        hu[region & vessels] = -900.0  # air bronchograms: bronchi run beside the vessels
        lesion |= region
        return pattern
    if pattern == "cavity":
        for _ in range(40):
            centre = lungs.point(side, rng.uniform(0.45, 0.8), rng.uniform(0.1, 0.5), rng.uniform(-np.pi, np.pi))
            if one_lung[grid.voxel(*centre)]:
                break
        r = rng.uniform(0.09, 0.13)
        d = grid.ellipsoid(centre, (r, r, r)) + 0.08 * irregular
        wall_inner = 1.0 - rng.uniform(0.3, 0.45)
        region = (d < 1.0) & one_lung
        hu[region] = (rng.uniform(20.0, 45.0) + 10.0 * texture)[region]
        hu[region & (d < wall_inner)] = AIR_HU
        lesion |= region
        return pattern
    for _ in range(int(rng.integers(3, 7))):  # nodules
        for _ in range(40):
            centre = lungs.point(side, rng.uniform(0.15, 0.85), rng.uniform(0.2, 0.85), rng.uniform(-np.pi, np.pi))
            if one_lung[grid.voxel(*centre)]:
                break
        r = rng.uniform(0.05, 0.09)
        region = (grid.ellipsoid(centre, (r, r, r)) < 1.0) & one_lung
        hu[region] = (rng.uniform(20.0, 50.0) + 8.0 * texture)[region]
        lesion |= region
    return pattern


def make_phantom(
    kind: str,
    seed: int,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
) -> Phantom:
    """Build the phantom for ``kind`` in ``covid_mtl.image.CLASSES`` from ``seed`` alone.

    The same seed gives the same anatomy and noise for every kind, so ``covid`` and ``normal`` phantoms of
    one seed differ only inside the lesion mask.
    """
    if kind not in CLASSES:
        raise CovidMTLError(f"phantom kind {kind!r} is not one of {', '.join(CLASSES)}")
    seed = check_seed(seed)
    shape, spacing = check_grid(shape, spacing)
    anatomy_ss, lesion_ss, noise_ss = np.random.SeedSequence(int(seed)).spawn(3)
    anatomy, lesion_rng, noise = (np.random.default_rng(s) for s in (anatomy_ss, lesion_ss, noise_ss))

    grid = _Grid(shape, spacing)
    # noise fields first, drawn the same way for every kind
    white = noise.standard_normal(shape, dtype=np.float32)
    texture = _smooth_noise(noise, shape, (0.5, 1.5, 1.5))
    irregular = _smooth_noise(noise, shape, (1.0, 4.0, 4.0))

    grid.set_body(anatomy.uniform(-0.03, 0.03), anatomy.uniform(-0.03, 0.03),
                  anatomy.uniform(0.84, 0.93), anatomy.uniform(0.56, 0.68))
    lungs = _Lungs(anatomy, grid)
    r_body = np.sqrt(grid.u ** 2 + grid.v ** 2)
    body = np.broadcast_to(r_body < 1.0, shape)
    fat = np.broadcast_to(r_body > 1.0 - anatomy.uniform(0.04, 0.08), shape) & body
    airway = _airways(grid, lungs) & body
    lung = (lungs.mask(0) | lungs.mask(1)) & ~airway
    vessels = _vessel_tree(anatomy, grid, lungs, lung)
    bone = _bones(anatomy, grid) & body & ~lung

    hu = np.full(shape, AIR_HU, dtype=np.float32)
    hu[body] = SOFT_HU
    hu[fat] = FAT_HU
    hu[bone] = BONE_HU
    hu[lung] = (LUNG_HU + 25.0 * texture)[lung]
    hu[vessels] = VESSEL_HU

    lesion = np.zeros(shape, dtype=bool)
    pattern = "none"
    if kind == "covid":
        _paint_covid(lesion_rng, grid, lungs, lung, hu, lesion, texture, irregular)
        pattern = "ggo"
    elif kind == "other":
        pattern = _paint_other(lesion_rng, grid, lungs, lung, hu, lesion, texture, irregular, vessels)
    hu[airway] = AIR_HU
    # noise only inside the body: flat air outside halves the size of the committed gzipped volumes
    hu[body] += 12.0 * white[body]
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return Phantom(hu=hu, lesion=lesion.astype(np.uint8), lung=lung.astype(np.uint8),
                   spacing=spacing, kind=kind, pattern=pattern, seed=int(seed))
