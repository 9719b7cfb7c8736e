"""PNG overlays of predictions on CT, for the best and worst cases of an evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# background transparent; then kidney/liver, tumour, cyst
_COLOURS = [(0, 0, 0, 0), (0.1, 0.8, 0.2, 0.45), (0.95, 0.15, 0.1, 0.6), (0.2, 0.4, 1.0, 0.6)]


def load_ras(path: str | Path) -> np.ndarray:
    """A volume as a (x, y, z) RAS array, so every dataset's orientation displays the same way."""
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Orientation

    image = Compose([LoadImage(image_only=True), EnsureChannelFirst(), Orientation("RAS")])(str(path))
    return np.asarray(image[0])


def axial_slice_with_most_foreground(label: np.ndarray) -> int:
    area = (label > 0).sum(axis=(0, 1))
    return int(area.argmax()) if area.max() > 0 else label.shape[2] // 2


def save_overlay(
    image_path: str | Path,
    label_path: str | Path,
    pred_path: str | Path,
    out_png: str | Path,
    title: str = "",
    window: tuple[float, float] = (-160.0, 240.0),
) -> Path:
    """Two panels on the axial slice with the most reference foreground: reference and prediction over the CT."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    image, label, pred = load_ras(image_path), load_ras(label_path), load_ras(pred_path)
    z = axial_slice_with_most_foreground(label)
    num_labels = int(max(label.max(), pred.max(), 1)) + 1
    cmap = ListedColormap(_COLOURS[:num_labels] if num_labels <= len(_COLOURS) else None)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.4))
    for ax, mask, name in zip(axes, (label, pred), ("reference", "prediction")):
        # transpose + flip so anterior is up and the patient's right is on the left (radiological view)
        ax.imshow(np.flipud(image[:, :, z].T), cmap="gray", vmin=window[0], vmax=window[1])
        ax.imshow(np.flipud(mask[:, :, z].T), cmap=cmap, vmin=0, vmax=len(cmap.colors) - 1, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(f"{title} (axial slice {z})")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png


def save_best_and_worst(
    cases: Sequence[dict], score_key: str, out_dir: str | Path, prefix: str = "overlay"
) -> list[Path]:
    """Overlays of the lowest and highest scoring case. ``cases``: dicts with ``case_id``, ``image``, ``label``,
    ``pred`` paths and the score."""
    scored = [c for c in cases if np.isfinite(c.get(score_key, np.nan))]
    if not scored:
        return []
    scored.sort(key=lambda c: c[score_key])
    picks = {"worst": scored[0], "best": scored[-1]}
    written = []
    for tag, case in picks.items():
        title = f"{tag}: {case['case_id']} {score_key}={case[score_key]:.3f}"
        written.append(
            save_overlay(case["image"], case["label"], case["pred"], Path(out_dir) / f"{prefix}_{tag}.png", title)
        )
    return written
