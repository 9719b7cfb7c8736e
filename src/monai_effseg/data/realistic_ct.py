"""CT-like intensities around a real kidney/tumour label map: the image half of :mod:`monai_effseg.data.realistic`.

The label map is the truth; everything else is painted around it in RAS world millimetres (adult size, no scaling):
a body (super-ellipse with subcutaneous fat and a muscle wall) sized so that the kidneys sit inside the retroperitoneum,
visceral fat, bowel loops, liver (patient's right, at the upper pole of the right kidney), spleen (left), psoas and
paraspinal muscles, aorta and IVC, and the spine with ribs (reusing the phantoms' spine painter at adult scale). The
kidneys are painted last, straight from the label: an enhancing cortex (the outer 4-7 mm, by a distance transform)
around patchy medullary pyramids, and the tumour with a per-case mean HU chosen from a drawn contrast to the kidney
(from clear to subtle), with texture and, for large tumours, a necrotic core. The image then gets the slice
sensitivity profile (a z-blur with FWHM = slice thickness) and correlated noise whose SD scales as
``1/sqrt(slice thickness)``. Tissue values are for a corticomedullary (late arterial) phase, as in KiTS19.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from monai_effseg.data.phantoms import (
    AIR,
    AORTA,
    BOWEL_AIR,
    BOWEL_WALL,
    FAT,
    IVC,
    KIDNEY_CORTEX,
    KIDNEY_MEDULLA,
    LIVER,
    MUSCLE,
    RENAL_TUMOUR,
    SPLEEN,
    VISCERAL,
    _Grid,
    _paint_spine_and_ribs,
    _Painter,
    _rotation,
    _smooth_noise,
)

__all__ = ["Body", "draw_body", "render_ct"]

NECROSIS = 21  # one past the phantoms' tissue ids


@dataclass
class Body:
    """Axial body outline and spine position, RAS world mm (+x patient's right, +y anterior)."""

    cx: float
    cy: float
    a: float  # lateral half-width
    b: float  # antero-posterior half-depth
    power: float  # super-ellipse exponent (2: ellipse; larger: squarer, flatter back)
    fat_mm: float  # subcutaneous fat (at the back; laterally it scales with a / b)
    muscle_mm: float
    spine_y: float  # centre of the vertebral bodies
    midline_x: float

    def bounds(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max) of the outline, wobble (5 %) and taper (4 %) included."""
        return self.cx - 1.1 * self.a, self.cx + 1.1 * self.a, self.cy - 1.1 * self.b, self.cy + 1.1 * self.b

    def radial(self, x, y):
        """1 on the skin, < 1 inside."""
        return (np.abs((x - self.cx) / self.a) ** self.power + np.abs((y - self.cy) / self.b) ** self.power) ** (
            1.0 / self.power
        )

    def cavity_radial(self) -> float:
        return 1.0 - (self.fat_mm + self.muscle_mm) / self.b


def draw_body(rng: np.random.Generator, kidney_points: np.ndarray, extent_points: np.ndarray, midline_x: float) -> Body:
    """A body around the kidneys (``kidney_points``: world mm of kidney voxels, ``extent_points``: of kidney and
    tumour voxels): centre 30-50 mm anterior of the kidneys' centre, spine 5-20 mm anterior of it (behind a horseshoe
    kidney's isthmus, up to 35 mm behind the kidneys' centre) with 58-68 mm of
    back (plus fat) behind it, half-depth 100-130 mm and width 1.25-1.5 x the depth, both enlarged as needed for every
    kidney/tumour point to lie 10 mm inside the abdominal cavity (the body minus fat and muscle wall)."""
    y_k = float(kidney_points[:, 1].mean())
    spine_y = y_k + rng.uniform(5.0, 20.0)
    isthmus = extent_points[np.abs(extent_points[:, 0] - midline_x) < 15.0]  # a horseshoe kidney crosses the midline
    if len(isthmus):  # in front of the spine (and behind the great vessels in life; here they are left out there)
        spine_y = max(min(spine_y, float(isthmus[:, 1].min()) - 28.0), y_k - 35.0)
    fat_mm, muscle_mm = rng.uniform(10.0, 35.0), rng.uniform(8.0, 15.0)
    wall = fat_mm + muscle_mm
    power = rng.uniform(2.5, 3.5)
    cx, cy = midline_x + rng.uniform(-5.0, 5.0), y_k + rng.uniform(30.0, 50.0)
    dx = np.abs(extent_points[:, 0] - cx) + 10.0
    dy = np.abs(extent_points[:, 1] - cy) + 10.0
    ratio = rng.uniform(1.25, 1.5)

    def width(b_cavity):  # half-width the body needs for a cavity of half-depth b_cavity
        reach = (1.0 - np.minimum(dy[:, None] / b_cavity, 0.97) ** power) ** (1.0 / power)
        return (dx[:, None] / reach).max(axis=0) * (b_cavity + wall) / b_cavity

    # The smallest cross-section that holds the points, then no shallower than drawn or than the spine needs.
    candidates = float(dy.max()) / np.linspace(0.97, 0.6, 24)
    area = np.maximum(width(candidates), ratio * (candidates + wall)) * (candidates + wall)
    b = max(float(candidates[np.argmin(area)]) + wall, rng.uniform(100.0, 130.0),
            cy - spine_y + rng.uniform(58.0, 68.0) + fat_mm)  # fmt: skip
    a = max(ratio * b, float(width(np.array([b - wall]))[0]))
    return Body(cx, cy, a, b, power, fat_mm, muscle_mm, spine_y, midline_x)


def _box(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``pad`` voxels (clipped)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hit[0]) - pad, 0), min(int(hit[-1]) + pad + 1, mask.shape[axis])))
    return tuple(box)


def _depth(mask: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) of each voxel of ``mask`` to the nearest voxel outside it (0 outside)."""
    return ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1].astype(np.float32)


def _near(mask: np.ndarray, spacing, mm: float) -> np.ndarray:
    """Voxels within ``mm`` of ``mask`` (the mask included)."""
    pad = int(np.ceil(mm / min(spacing))) + 1
    box = _box(mask, pad)
    near = np.zeros_like(mask)
    near[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing) <= mm
    return near


def _paint_abdomen(painter: _Painter, body: Body, centre, label: np.ndarray) -> dict[str, float]:
    """Body wall, visceral fat, bowel, liver, spleen, muscles, great vessels, spine and ribs: every tissue but the
    kidneys, kept 3-8 mm (perirenal fat) away from the labelled kidney and tumour."""
    rng, grid, spacing = painter.rng, painter.grid, painter.grid.spacing
    xm, cx, cy = body.midline_x - centre[0], body.cx - centre[0], body.cy - centre[1]
    spine_y = body.spine_y - centre[1]
    theta = np.arctan2(grid.y - cy, grid.x - cx)
    wobble = 1.0 + 0.03 * np.cos(2 * theta + rng.uniform(0, 2 * np.pi)) + 0.02 * np.cos(3 * theta + rng.uniform(0, 6))
    taper = 1.0 + 0.04 * np.sin(grid.z / 120.0 + rng.uniform(0, 2 * np.pi))
    shifted = Body(**{**asdict(body), "cx": cx, "cy": cy})
    radial = shifted.radial(grid.x, grid.y) / (wobble * taper)
    wall = radial <= 1.0 - body.fat_mm / body.b
    cavity = radial <= body.cavity_radial()
    painter.paint(radial <= 1.0, FAT)
    painter.paint(wall, MUSCLE)
    painter.paint(cavity, VISCERAL)

    kidney = label > 0
    free = cavity & ~_near(kidney, spacing, rng.uniform(3.0, 8.0))
    points = np.argwhere(kidney) * np.asarray(spacing) + grid.origin
    y_k, z_k = float(points[:, 1].mean()), float(points[:, 2].mean())
    right, left = points[points[:, 0] >= xm], points[points[:, 0] < xm]
    top_right = float(right[:, 2].max()) if len(right) else z_k + 50.0
    top_left = float(left[:, 2].max()) if len(left) else z_k + 50.0

    for _ in range(int(rng.integers(12, 20))):
        centre_b = (cx + rng.uniform(-0.6, 0.6) * body.a, spine_y + rng.uniform(40, 110), z_k + rng.uniform(-90, 90))
        semi = rng.uniform(12, 25, 3)
        painter.paint(grid.ellipsoid(centre_b, semi), BOWEL_WALL, free)
        if rng.random() < 0.4:
            painter.paint(grid.ellipsoid(centre_b, semi * rng.uniform(0.3, 0.6)), BOWEL_AIR, free)
    liver_centre = (xm + rng.uniform(55, 80), y_k + rng.uniform(10, 40), top_right + rng.uniform(-10, 30))
    liver = grid.ellipsoid(liver_centre, rng.uniform([60, 70, 60], [80, 90, 80]), _rotation(rng, (8, 8, 15)))
    painter.paint(liver, LIVER, free)
    spleen_centre = (xm - rng.uniform(75, 95), y_k + rng.uniform(-15, 10), top_left + rng.uniform(0, 35))
    spleen = grid.ellipsoid(spleen_centre, rng.uniform([18, 40, 40], [28, 55, 55]), _rotation(rng, (10, 10, 30)))
    painter.paint(spleen, SPLEEN, free)
    for side in (-1, 1):
        painter.paint(grid.cylinder_z((xm + side * 28, spine_y - 42), (22, 18)), MUSCLE, wall)
        psoas = grid.cylinder_z((xm + side * 36, spine_y + 2), (12, 14), (-np.inf, z_k + 40))
        painter.paint(psoas, MUSCLE, free)
    painter.paint(grid.cylinder_z((xm - rng.uniform(5, 15), spine_y + 30), (11, 11)), AORTA, free)
    painter.paint(grid.cylinder_z((xm + rng.uniform(20, 30), spine_y + 27), (13, 9)), IVC, free)
    _paint_spine_and_ribs(painter, grid, xm, cy, spine_y, z_k, 1.0, wall & ~cavity)

    fat_hu = rng.uniform(-120, -80)
    return {
        AIR: -1000.0, FAT: fat_hu, VISCERAL: fat_hu + rng.uniform(0, 25), MUSCLE: rng.uniform(40, 65),
        BOWEL_WALL: rng.uniform(25, 55), BOWEL_AIR: rng.uniform(-950, -700), LIVER: rng.uniform(70, 110),
        SPLEEN: rng.uniform(100, 150), AORTA: rng.uniform(200, 350), IVC: rng.uniform(80, 150),
    }  # fmt: skip


def _paint_kidneys(painter: _Painter, label: np.ndarray) -> dict[str, Any]:
    """Cortex (outer 4-7 mm of the kidney, tumour counted as kidney), medullary pyramids (patchy, inside), tumour and
    its necrotic core (tumours over 15 ml: deeper than 6-12 mm, patchy)."""
    rng, spacing = painter.rng, painter.grid.spacing
    kidney = label > 0
    box = _box(kidney, 1)
    depth = _depth(kidney[box], spacing)
    cortex_mm = rng.uniform(4.0, 7.0)
    patches = _smooth_noise(rng, depth.shape, [4.0 / s for s in spacing])
    medulla = (label[box] == 1) & (depth > cortex_mm) & (patches > -0.5)
    painter.tissue[box][kidney[box]] = KIDNEY_CORTEX
    painter.tissue[box][medulla] = KIDNEY_MEDULLA
    tumour = label[box] == 2
    painter.tissue[box][tumour] = RENAL_TUMOUR
    tumour_ml = float(tumour.sum() * np.prod(spacing) / 1000.0)
    if tumour_ml > 15.0:
        necrotic = tumour & (_depth(tumour, spacing) > rng.uniform(6.0, 12.0)) & (patches > 0.0)
        painter.tissue[box][necrotic] = NECROSIS
    return {"cortex_mm": round(float(cortex_mm), 2), "tumour_ml": round(tumour_ml, 2)}


def _tumour_hu(rng, tissue: np.ndarray, hu: dict[int, float], contrast_hu, hypo_probability: float) -> float:
    """Tumour HU (viable part) so that the tumour's mean sits a drawn contrast below (or above) the kidney's mean."""
    n_cortex, n_medulla = int((tissue == KIDNEY_CORTEX).sum()), int((tissue == KIDNEY_MEDULLA).sum())
    kidney_mean = (n_cortex * hu[KIDNEY_CORTEX] + n_medulla * hu[KIDNEY_MEDULLA]) / max(n_cortex + n_medulla, 1)
    contrast = float(np.exp(rng.uniform(np.log(contrast_hu[0]), np.log(contrast_hu[1]))))
    target = float(np.clip(kidney_mean - (contrast if rng.random() < hypo_probability else -contrast), 10.0, 260.0))
    n_tumour, n_necrotic = int((tissue == RENAL_TUMOUR).sum()), int((tissue == NECROSIS).sum())
    necrotic = n_necrotic / max(n_tumour + n_necrotic, 1)
    return float(np.clip((target - necrotic * hu[NECROSIS]) / max(1.0 - necrotic, 1e-3), hu[NECROSIS] + 10.0, 320.0))


def render_ct(
    rng: np.random.Generator,
    label: np.ndarray,
    spacing: tuple[float, float, float],
    centre: np.ndarray,
    body: Body,
    contrast_hu: tuple[float, float] = (10.0, 110.0),
    hypo_probability: float = 0.8,
) -> tuple[np.ndarray, dict[str, Any]]:
    """int16 HU image for a RAS ``label`` (x, y, z; 0 background, 1 kidney, 2 tumour) with voxel ``spacing`` (mm) and
    its centre at world ``centre``, plus the case's intensity record (HU per tissue, the tumour's realised contrast
    to the kidney on the noise-free image, noise SD, blur)."""
    grid = _Grid(label.shape, spacing)
    painter = _Painter(grid, rng)
    hu = _paint_abdomen(painter, body, centre, label)
    record = _paint_kidneys(painter, label)
    hu.update(painter.hu)  # bone values from the spine painter
    hu[KIDNEY_CORTEX], hu[KIDNEY_MEDULLA] = rng.uniform(150, 200), rng.uniform(30, 80)
    hu[NECROSIS] = rng.uniform(5, 30)
    hu[RENAL_TUMOUR] = _tumour_hu(rng, painter.tissue, hu, contrast_hu, hypo_probability)

    lut = np.zeros(256, dtype=np.float32)
    for tissue_id, value in hu.items():
        lut[tissue_id] = value
    amplitude = np.full(256, 4.0, dtype=np.float32)
    amplitude[[SPLEEN, RENAL_TUMOUR, NECROSIS]] = 10.0, rng.uniform(8.0, 20.0), 6.0
    image = lut[painter.tissue] + amplitude[painter.tissue] * _smooth_noise(
        rng, label.shape, [2.0 / s for s in spacing]
    )
    kidney_mean = float(image[label == 1].mean())
    tumour_mean = float(image[label == 2].mean()) if (label == 2).any() else float("nan")

    thickness = float(spacing[2])
    blur_mm = (rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0), thickness / 2.355)  # slice profile FWHM = thickness
    blur_mm = (blur_mm[0], blur_mm[0], blur_mm[2])
    image = ndimage.gaussian_filter(image, [mm / s for mm, s in zip(blur_mm, spacing)], truncate=3.0)
    noise_sd = rng.uniform(8.0, 14.0) * np.sqrt(5.0 / thickness)
    image += _smooth_noise(rng, label.shape, 0.6) * noise_sd
    image = np.clip(np.round(image), -1024, 3071).astype(np.int16)
    record.update({
        "hu": {name: round(float(hu[tissue]), 1) for name, tissue in (
            ("fat", FAT), ("muscle", MUSCLE), ("liver", LIVER), ("spleen", SPLEEN), ("aorta", AORTA),
            ("kidney_cortex", KIDNEY_CORTEX), ("kidney_medulla", KIDNEY_MEDULLA), ("tumour_viable", RENAL_TUMOUR),
            ("tumour_necrosis", NECROSIS))},
        "kidney_mean_hu": round(kidney_mean, 1),
        "tumour_mean_hu": round(tumour_mean, 1) if np.isfinite(tumour_mean) else None,
        "tumour_contrast_hu": round(kidney_mean - tumour_mean, 1) if np.isfinite(tumour_mean) else None,
        "noise_sd_hu": round(float(noise_sd), 1),
        "blur_sigma_mm": [round(float(v), 2) for v in blur_mm],
    })  # fmt: skip
    return image, record
