"""PNG overlays of predictions on CT, for the best and worst cases of an evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# background transparent; then kidney/liver, tumour, cyst
_COLOURS = [(0, 0, 0, 0), (0.1, 0.8, 0.2, 0.45), (0.95, 0.15, 0.1, 0.6), (0.2, 0.4, 1.0, 0.6)]
# What each label value means per evaluation protocol (the overlay's colour legend).
LABEL_NAMES = {
    "kits19": {1: "kidney", 2: "tumour"},
    "kits21": {1: "kidney", 2: "tumour", 3: "cyst"},
    "lits": {1: "liver", 2: "tumour"},
}


def load_ras(path: str | Path) -> np.ndarray:
    """A volume as a (x, y, z) RAS array, so every dataset's orientation displays the same way."""
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Orientation

    from monai_effseg.transforms.ct import RAS_LABELS

    # explicit labels: MONAI otherwise warns that their default changes (as the preprocessing passes them too)
    image = Compose([LoadImage(image_only=True), EnsureChannelFirst(), Orientation("RAS", labels=RAS_LABELS)])(
        str(path)
    )
    return np.asarray(image[0])


def axial_slice_with_most_foreground(label: np.ndarray) -> int:
    area = (label > 0).sum(axis=(0, 1))
    return int(area.argmax()) if area.max() > 0 else label.shape[2] // 2


def overlay_figure(
    image: np.ndarray,
    label: np.ndarray,
    pred: np.ndarray,
    title: str = "",
    window: tuple[float, float] = (-160.0, 240.0),
    label_names: dict[int, str] | None = None,
):
    """The overlay figure of (x, y, z) RAS volumes: reference and prediction over the CT on the axial slice with the
    most reference foreground, and a colour legend naming each label (``label_names``; default "label N")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    z = axial_slice_with_most_foreground(label)
    num_labels = int(max(label.max(), pred.max(), max(label_names or [0]), 1)) + 1
    colours = _COLOURS[:num_labels] if num_labels <= len(_COLOURS) else list(plt.get_cmap("tab10").colors[:num_labels])
    cmap = ListedColormap(colours)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.9))
    for ax, mask, name in zip(axes, (label, pred), ("reference", "prediction")):
        # transpose + flip so anterior is up and the patient's right is on the left (radiological view)
        ax.imshow(np.flipud(image[:, :, z].T), cmap="gray", vmin=window[0], vmax=window[1])
        ax.imshow(np.flipud(mask[:, :, z].T), cmap=cmap, vmin=0, vmax=len(cmap.colors) - 1, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    names = label_names or {}
    handles = [Patch(facecolor=(*colours[v][:3], 1.0), label=names.get(v, f"label {v}")) for v in range(1, num_labels)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle(f"{title} (axial slice {z})")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def save_overlay(
    image_path: str | Path,
    label_path: str | Path,
    pred_path: str | Path,
    out_png: str | Path,
    title: str = "",
    window: tuple[float, float] = (-160.0, 240.0),
    label_names: dict[int, str] | None = None,
) -> Path:
    """Two panels on the axial slice with the most reference foreground: reference and prediction over the CT, with
    a colour legend (:func:`overlay_figure`)."""
    import matplotlib.pyplot as plt

    fig = overlay_figure(load_ras(image_path), load_ras(label_path), load_ras(pred_path), title, window, label_names)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png


def save_best_and_worst(
    cases: Sequence[dict],
    score_key: str,
    out_dir: str | Path,
    prefix: str = "overlay",
    label_names: dict[int, str] | None = None,
) -> list[Path]:
    """Overlays of the lowest and highest scoring case. ``cases``: dicts with ``case_id``, ``image``, ``label``,
    ``pred`` paths and the score; ``label_names`` name the legend's colours (e.g. ``LABEL_NAMES["kits21"]``)."""
    scored = [c for c in cases if np.isfinite(c.get(score_key, np.nan))]
    if not scored:
        return []
    scored.sort(key=lambda c: c[score_key])
    picks = {"worst": scored[0], "best": scored[-1]}
    written = []
    for tag, case in picks.items():
        title = f"{tag}: {case['case_id']} {score_key}={case[score_key]:.3f}"
        written.append(
            save_overlay(
                case["image"],
                case["label"],
                case["pred"],
                Path(out_dir) / f"{prefix}_{tag}.png",
                title,
                label_names=label_names,
            )
        )
    return written
