"""Abdominal CT phantoms: a body with fat, muscle, spine, ribs, aorta, IVC, bowel, spleen, two kidneys with attached
tumours (and optional cysts) and a liver with lesions, in Hounsfield units, with a matching label map.

Geometry is built in RAS world millimetres on a small grid. The anatomy is a scaled-down adult abdomen (scale ``s`` =
body half-width / 160 mm) so that a 96-voxel matrix at 2-3 mm in-plane spacing holds it; organ sizes are quoted below
in adult millimetres and multiplied by ``s``. Every voxel gets one tissue id by painting in priority order; the image
(HU per tissue plus texture, partial-volume blur and correlated noise) and the label are both derived from that one
tissue map, so they can never disagree.

Contrast is that of a corticomedullary-phase CT (KiTS): kidney cortex 160-200 HU, medulla 15-30 HU lower, renal
tumour 50-85 HU (heterogeneous; at least 45 HU below any kidney tissue), cyst 0-15 HU, liver 60-110 HU, liver lesions
40-70 HU below the liver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage

__all__ = ["KITS_CLASSES", "LITS_CLASSES", "Phantom", "make_phantom"]

KITS_CLASSES = {"background": 0, "kidney": 1, "tumor": 2, "cyst": 3}
LITS_CLASSES = {"background": 0, "liver": 1, "tumor": 2}

# Tissue ids, in painting order (a later tissue overwrites an earlier one).
(
    AIR,
    FAT,
    MUSCLE,
    VISCERAL,
    BOWEL_WALL,
    BOWEL_AIR,
    SPLEEN,
    LIVER,
    LIVER_VESSEL,
    LESION,
    KIDNEY_CORTEX,
    KIDNEY_MEDULLA,
    SINUS,
    RENAL_TUMOUR,
    RENAL_CYST,
    AORTA,
    IVC,
    BONE_CORTEX,
    BONE,
    DISC,
    CANAL,
) = range(21)


@dataclass
class Phantom:
    """One phantom in RAS array order (x, y, z): HU image, label map, voxel spacing (mm) and the RAS affine."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray


class _Grid:
    """World coordinates (mm, RAS) of voxel centres, centred on the volume."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]):
        self.shape = shape
        self.spacing = spacing
        axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * sp for n, sp in zip(shape, spacing)]
        self.x, self.y, self.z = np.meshgrid(*axes, indexing="ij", sparse=True)
        self.origin = np.array([-(n - 1) / 2.0 * sp for n, sp in zip(shape, spacing)])

    def ellipsoid(self, centre, semi, rotation: Optional[np.ndarray] = None) -> np.ndarray:
        dx, dy, dz = self.x - centre[0], self.y - centre[1], self.z - centre[2]
        if rotation is None:
            return (dx / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dz / semi[2]) ** 2 <= 1.0
        total = 0.0
        for k in range(3):
            local = rotation[0, k] * dx + rotation[1, k] * dy + rotation[2, k] * dz
            total = total + (local / semi[k]) ** 2
        return total <= 1.0

    def cylinder_z(self, centre_xy, semi_xy, z_range=(-np.inf, np.inf)) -> np.ndarray:
        inside = ((self.x - centre_xy[0]) / semi_xy[0]) ** 2 + ((self.y - centre_xy[1]) / semi_xy[1]) ** 2 <= 1.0
        return inside & (self.z >= z_range[0]) & (self.z <= z_range[1])

    def segment(self, start, end, radius: float) -> np.ndarray:
        start, end = np.asarray(start, np.float32), np.asarray(end, np.float32)
        axis = end - start
        length2 = float(axis @ axis) or 1.0
        dx, dy, dz = self.x - start[0], self.y - start[1], self.z - start[2]
        t = np.clip((dx * axis[0] + dy * axis[1] + dz * axis[2]) / length2, 0.0, 1.0)
        return (dx - t * axis[0]) ** 2 + (dy - t * axis[1]) ** 2 + (dz - t * axis[2]) ** 2 <= radius**2


def _rotation(rng: np.random.Generator, max_deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = (np.deg2rad(rng.uniform(-m, m)) for m in max_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return (rz @ ry @ rx).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape, sigma_vox) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox)
    return field / max(float(field.std()), 1e-6)


def _unit_vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


class _Painter:
    """Builds the tissue map and per-tissue HU values of one phantom."""

    def __init__(self, grid: _Grid, rng: np.random.Generator):
        self.grid = grid
        self.rng = rng
        self.tissue = np.full(grid.shape, AIR, dtype=np.uint8)
        self.hu: dict[int, float] = {}

    def paint(self, mask: np.ndarray, tissue: int, where: Optional[np.ndarray] = None) -> np.ndarray:
        mask = np.broadcast_to(mask, self.grid.shape)
        if where is not None:
            mask = mask & where
        self.tissue[mask] = tissue
        return mask


def _sample_geometry(rng: np.random.Generator, shape: tuple[int, int, int]):
    """Grid shape, spacing and body half-width (mm) of one case."""
    nx, ny, nz_nominal = shape
    # In-plane 0.7-1.0 mm on a 512 matrix, scaled as if that matrix were 256 voxels wide (Tustumi's size).
    in_plane = float(rng.uniform(0.7, 1.0) * 256.0 / max(nx, ny))
    slice_mm = float(rng.choice([2.5, 3.0, 4.0, 5.0], p=[0.2, 0.3, 0.25, 0.25]))
    half_width = in_plane * min(nx, ny) / 2.0 * rng.uniform(0.82, 0.92)
    coverage = rng.uniform(260.0, 320.0) * half_width / 160.0  # 26-32 cm of adult abdomen, scaled
    nz = int(np.clip(round(coverage / slice_mm), round(0.6 * nz_nominal), round(1.4 * nz_nominal)))
    return (nx, ny, nz), (in_plane, in_plane, slice_mm), half_width


def make_phantom(
    rng: np.random.Generator, kind: str = "kits", shape: tuple[int, int, int] = (96, 96, 48), cysts: bool = False
) -> Phantom:
    """One random phantom. ``kind`` picks the labels (``"kits"``: kidney/tumour/cyst, ``"lits"``: liver/tumour) and
    the field of view (KiTS centres the kidneys, LiTS the liver); ``shape`` is the in-plane matrix and the nominal
    number of slices (the slice count varies +-40% with the slice thickness)."""
    if kind not in ("kits", "lits"):
        raise ValueError(f"kind must be 'kits' or 'lits', got {kind!r}")
    grid_shape, spacing, half_width = _sample_geometry(rng, shape)
    grid = _Grid(grid_shape, spacing)
    painter = _Painter(grid, rng)
    extent_z = grid_shape[2] * spacing[2]

    # ------------------------------------------------------------------ body wall
    s = half_width / 160.0
    a, b = half_width, half_width * rng.uniform(0.66, 0.78)
    cx, cy = rng.uniform(-0.03, 0.03) * a, rng.uniform(-0.05, 0.02) * b
    theta = np.arctan2(grid.y - cy, grid.x - cx)
    wobble = 1.0 + 0.03 * np.cos(2 * theta + rng.uniform(0, 2 * np.pi)) + 0.02 * np.cos(3 * theta + rng.uniform(0, 6))
    taper = 1.0 + 0.05 * np.sin(np.pi * grid.z / extent_z + rng.uniform(-1, 1))
    radial = np.sqrt(((grid.x - cx) / a) ** 2 + ((grid.y - cy) / b) ** 2) / (wobble * taper)
    fat_mm, muscle_mm = rng.uniform(8, 24) * s, rng.uniform(6, 11) * s
    body = radial <= 1.0
    wall = radial <= 1.0 - fat_mm / b
    cavity = radial <= 1.0 - (fat_mm + muscle_mm) / b
    painter.paint(body, FAT)
    painter.paint(wall, MUSCLE)
    painter.paint(cavity, VISCERAL)

    # ------------------------------------------------------------------ landmarks (kidney level z_k)
    spine_y = cy - 0.36 * b
    if kind == "kits":
        z_k = rng.uniform(-0.12, 0.05) * extent_z
    else:
        z_k = rng.uniform(-0.02, 0.12) * extent_z - 80.0 * s
    fat_hu, muscle_hu = rng.uniform(-120, -80), rng.uniform(35, 60)
    painter.hu.update({AIR: -1000.0, FAT: fat_hu, VISCERAL: fat_hu + rng.uniform(0, 20), MUSCLE: muscle_hu})

    # bowel loops and stomach: soft-tissue walls with gas, anterior half of the cavity
    for _ in range(int(rng.integers(12, 20))):
        centre = (cx + rng.uniform(-0.65, 0.65) * a, spine_y + rng.uniform(40, 110) * s, z_k + rng.uniform(-70, 90) * s)
        semi = rng.uniform(12, 24, 3) * s
        painter.paint(grid.ellipsoid(centre, semi), BOWEL_WALL, cavity)
        if rng.random() < 0.4:
            painter.paint(grid.ellipsoid(centre, semi * rng.uniform(0.3, 0.6)), BOWEL_AIR, cavity)
    painter.hu.update({BOWEL_WALL: rng.uniform(20, 45), BOWEL_AIR: rng.uniform(-950, -700)})

    # paraspinal muscles and psoas
    for side in (-1, 1):
        painter.paint(grid.cylinder_z((cx + side * 28 * s, spine_y - 42 * s), (22 * s, 18 * s)), MUSCLE, wall)
        psoas = grid.cylinder_z((cx + side * 32 * s, spine_y + 2 * s), (10 * s, 11 * s), (-np.inf, z_k + 40 * s))
        painter.paint(psoas, MUSCLE, cavity)

    # spleen (left = -x in RAS), unlabelled: a kidney-bright confounder
    spleen_centre = (cx - 75 * s, spine_y + rng.uniform(-5, 15) * s, z_k + rng.uniform(60, 85) * s)
    spleen = grid.ellipsoid(spleen_centre, np.array([22, 48, 50]) * s, _rotation(rng, (10, 10, 30)))
    painter.paint(spleen, SPLEEN, cavity)
    painter.hu[SPLEEN] = rng.uniform(100, 140)

    # ------------------------------------------------------------------ liver (right = +x), vessels, lesions
    liver_hu = rng.uniform(60, 110)
    right_lobe = grid.ellipsoid(
        (cx + 62 * s, cy + rng.uniform(-5, 10) * s, z_k + rng.uniform(60, 80) * s),
        np.array([rng.uniform(65, 80), rng.uniform(70, 85), rng.uniform(60, 75)]) * s,
        _rotation(rng, (8, 8, 15)),
    )
    left_lobe = grid.ellipsoid(
        (cx - 10 * s, cy + rng.uniform(25, 45) * s, z_k + rng.uniform(95, 120) * s),
        np.array([rng.uniform(45, 65), rng.uniform(25, 35), rng.uniform(30, 45)]) * s,
        _rotation(rng, (8, 8, 20)),
    )
    liver = painter.paint(right_lobe | left_lobe, LIVER, cavity)
    painter.hu[LIVER] = liver_hu
    liver_idx = np.argwhere(liver)
    for _ in range(int(rng.integers(2, 6))):
        if len(liver_idx) < 2:
            break
        ends = [liver_idx[rng.integers(len(liver_idx))] for _ in range(2)]
        world = [grid.origin + np.asarray(e) * np.asarray(spacing) for e in ends]
        painter.paint(grid.segment(world[0], world[1], rng.uniform(2.0, 3.5) * s), LIVER_VESSEL, liver)
    painter.hu[LIVER_VESSEL] = liver_hu + rng.uniform(20, 45)
    liver = np.isin(painter.tissue, (LIVER, LIVER_VESSEL))
    lesion_hu = liver_hu - rng.uniform(40, 70)
    painter.hu[LESION] = lesion_hu
    n_lesions = int(rng.choice([0, 1, 2, 3], p=[0.1, 0.35, 0.3, 0.25])) if kind == "lits" else int(rng.integers(0, 3))
    _paint_liver_lesions(painter, liver, n_lesions)

    # ------------------------------------------------------------------ kidneys, tumours, cysts
    cortex_hu = rng.uniform(160, 200)
    painter.hu.update({KIDNEY_CORTEX: cortex_hu, KIDNEY_MEDULLA: cortex_hu - rng.uniform(15, 30), SINUS: fat_hu + 40})
    kidneys = []
    for side in (-1, 1):
        centre = np.array(
            [cx + side * rng.uniform(58, 70) * s, spine_y + rng.uniform(-2, 10) * s, z_k + (8 if side < 0 else -8) * s]
        )
        # A little larger than an adult kidney (about 11 x 6 x 4.5 cm) so that a 96-voxel matrix resolves it well.
        semi = np.array([rng.uniform(30, 37), rng.uniform(24, 30), rng.uniform(52, 65)]) * s
        rot = _rotation(rng, (10, 15, 0)) @ _rotation_z(side * rng.uniform(20, 35))
        kidney = grid.ellipsoid(centre, semi, rot)
        medial = rot @ np.array([-side, 0.3, 0.0], dtype=np.float32)
        sinus = grid.ellipsoid(centre + medial * semi[0] * 0.85, semi * np.array([0.35, 0.3, 0.4]), rot)
        painter.paint(kidney, KIDNEY_CORTEX, cavity)
        painter.paint(grid.ellipsoid(centre, semi * 0.62, rot), KIDNEY_MEDULLA, kidney & cavity)
        painter.paint(sinus, SINUS, kidney & cavity)
        kidneys.append((centre, semi, rot, side))
    n_tumours = 1 + int(rng.random() < 0.25)
    for _ in range(n_tumours):
        _paint_renal_mass(painter, kidneys[int(rng.integers(2))], RENAL_TUMOUR, rng.uniform(16, 34) * s, cavity)
    painter.hu[RENAL_TUMOUR] = rng.uniform(50, 85)
    if cysts and rng.random() < 0.7:
        for _ in range(int(rng.integers(1, 3))):
            _paint_renal_mass(painter, kidneys[int(rng.integers(2))], RENAL_CYST, rng.uniform(5, 13) * s, cavity)
    painter.hu[RENAL_CYST] = rng.uniform(0, 15)

    # ------------------------------------------------------------------ vessels and bone (painted last: never organ)
    painter.paint(grid.cylinder_z((cx - 8 * s, spine_y + 30 * s), (10 * s, 10 * s)), AORTA, cavity)
    painter.paint(grid.cylinder_z((cx + 26 * s, spine_y + 28 * s), (12 * s, 9 * s)), IVC, cavity)
    painter.hu.update({AORTA: rng.uniform(180, 280), IVC: rng.uniform(100, 150)})
    _paint_spine_and_ribs(painter, grid, cx, cy, spine_y, z_k, s, wall & ~cavity)

    image, label = _render(painter, kind)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = grid.origin
    return Phantom(image=image, label=label, spacing=spacing, affine=affine)


def _rotation_z(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]], dtype=np.float32)


def _paint_renal_mass(painter: _Painter, kidney, tissue: int, radius: float, cavity: np.ndarray) -> None:
    """A round mass centred near the kidney surface (inside or bulging out), away from the hilum."""
    centre, semi, rot, side = kidney
    rng, grid = painter.rng, painter.grid
    direction = _unit_vector(rng)
    if direction[0] * -side > 0.3:  # would sit in the hilum: mirror it to the lateral side
        direction[0] = -direction[0]
    depth = rng.uniform(0.55, 1.05)
    mass_centre = centre + rot @ (direction * semi * depth)
    mass = grid.ellipsoid(mass_centre, radius * rng.uniform(0.8, 1.2, 3), _rotation(rng, (30, 30, 30)))
    if tissue == RENAL_TUMOUR and rng.random() < 0.5:  # lobulated
        bump = mass_centre + _unit_vector(rng) * radius * 0.7
        mass = mass | grid.ellipsoid(bump, np.full(3, radius * rng.uniform(0.4, 0.7)))
    painter.paint(mass, tissue, cavity & ~np.isin(painter.tissue, (RENAL_TUMOUR,)))


def _paint_liver_lesions(painter: _Painter, liver: np.ndarray, count: int) -> None:
    rng, grid = painter.rng, painter.grid
    candidates = np.argwhere(ndimage.binary_erosion(liver, iterations=2))
    for _ in range(count):
        if len(candidates) == 0:
            return
        # Log-uniform radius, 4-22 mm: in-plane 2-9 voxels, so most lesions hold < 1000 voxels and a few more.
        radius = float(np.exp(rng.uniform(np.log(4.0), np.log(22.0))))
        for _attempt in range(10):
            index = candidates[rng.integers(len(candidates))]
            centre = grid.origin + index * np.asarray(grid.spacing)
            lesion = grid.ellipsoid(centre, radius * rng.uniform(0.8, 1.2, 3)) & liver
            if lesion.sum() >= 8:
                painter.paint(lesion, LESION)
                break


def _paint_spine_and_ribs(painter: _Painter, grid: _Grid, cx, cy, spine_y, z_k, s, muscle_wall) -> None:
    rng = painter.rng
    body_r = 20 * s
    vertebra = grid.cylinder_z((cx, spine_y), (body_r, body_r * 0.85))
    painter.paint(vertebra, BONE_CORTEX)
    painter.paint(grid.cylinder_z((cx, spine_y), (body_r - 3 * s, body_r * 0.85 - 3 * s)), BONE)
    # intervertebral discs every ~30 mm (scaled)
    period, phase = 32 * s, rng.uniform(0, 32 * s)
    disc = (np.mod(grid.z - phase, period) < 8 * s) & vertebra
    painter.paint(disc, DISC)
    arch = grid.cylinder_z((cx, spine_y - 30 * s), (13 * s, 11 * s))
    painter.paint(arch, BONE_CORTEX)
    painter.paint(grid.cylinder_z((cx, spine_y - 30 * s), (7 * s, 7 * s)), CANAL)
    painter.paint(grid.cylinder_z((cx, spine_y - 48 * s), (4 * s, 12 * s)), BONE_CORTEX)
    # lower ribs above the kidneys: oblique, so an axial slice cuts short arcs of the lateral and posterior wall
    theta = np.arctan2(grid.y - cy, grid.x - cx)
    arcs = np.cos(5.0 * theta + grid.z / (6.0 * s) + rng.uniform(0, 2 * np.pi)) > 0.5
    ribs = arcs & (np.sin(theta) < 0.6) & (grid.z > z_k + 10 * s)
    painter.paint(ribs, BONE_CORTEX, muscle_wall)
    painter.hu.update(
        {BONE_CORTEX: rng.uniform(550, 750), BONE: rng.uniform(250, 400), DISC: rng.uniform(70, 100), CANAL: 15.0}
    )


def _render(painter: _Painter, kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng, tissue, shape = painter.rng, painter.tissue, painter.grid.shape
    lut = np.zeros(256, dtype=np.float32)
    for tissue_id, hu in painter.hu.items():
        lut[tissue_id] = hu
    image = lut[tissue]
    texture = _smooth_noise(rng, shape, (2.0, 2.0, 1.0))
    heterogeneous = np.isin(tissue, (RENAL_TUMOUR, LESION))
    image += np.where(heterogeneous, 12.0, 4.0).astype(np.float32) * texture
    # partial volume at edges, then quantum noise with a short correlation length
    image = ndimage.gaussian_filter(image, (0.6, 0.6, 0.35))
    noise = _smooth_noise(rng, shape, 0.6) * rng.uniform(8.0, 16.0)
    image = np.clip(np.round(image + noise), -1024, 3071).astype(np.int16)

    label = np.zeros(shape, dtype=np.uint8)
    if kind == "kits":
        label[np.isin(tissue, (KIDNEY_CORTEX, KIDNEY_MEDULLA))] = KITS_CLASSES["kidney"]
        label[tissue == RENAL_TUMOUR] = KITS_CLASSES["tumor"]
        label[tissue == RENAL_CYST] = KITS_CLASSES["cyst"]
    else:
        label[np.isin(tissue, (LIVER, LIVER_VESSEL))] = LITS_CLASSES["liver"]
        label[tissue == LESION] = LITS_CLASSES["tumor"]
    return image, label
