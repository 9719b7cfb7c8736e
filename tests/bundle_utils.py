"""Helpers shared by the bundle tests: discovering bundles and running their configs on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
BUNDLE_IDS = [p.name for p in BUNDLES]


def configs(bundle: Path, *names: str) -> list[str]:
    return [str(bundle / "configs" / n) for n in names]


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def demo_value(bundle: Path, key: str, **overrides):
    """A value of the merged ``train.json`` + ``demo.json``, resolved (e.g. ``demo_inference_overrides``)."""
    parser = ConfigParser()
    parser.read_config(configs(bundle, "train.json", "demo.json"))
    parser.update({"bundle_root": str(bundle), **overrides})
    return parser.get_parsed_content(key)


def synthetic_kind(bundle: Path) -> str:
    """The synthetic dataset a bundle's tests use: ``"lits"`` for bundles evaluated with the LiTS protocol, else
    ``"kits"``."""
    protocol = str(read_json(bundle / "configs" / "train.json").get("eval_protocol", ""))
    return "lits" if protocol.startswith("lits") else "kits"


# Per-bundle overrides that make the 1-iteration conformance runs cheaper than the demo sizes (none needed yet).
TEST_OVERRIDES: dict[str, dict] = {}


def tiny_overrides(bundle: Path) -> dict:
    return dict(TEST_OVERRIDES.get(bundle.name, {}))


def zoo_io(bundle: Path, p: int = 1, n: int = 1, any: int = 1) -> dict:
    """``network_data_format`` of the bundle's metadata as MONAI parses it for ``verify_net_in_out``: the input and
    output shapes (batch 1) at the zoo CI's ``p``, ``n`` and ``any`` (MONAI's defaults, 1) and their dtypes."""
    from monai.bundle.scripts import _get_fake_spatial_shape, _get_net_io_info

    parser = ConfigParser()
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    in_channels, in_spatial, in_dtype, out_channels, out_dtype = _get_net_io_info(parser=parser)
    out_spatial = parser.get("_meta_#network_data_format#outputs#pred#spatial_shape")
    return {
        "input_shape": (1, in_channels, *_get_fake_spatial_shape(in_spatial, p=p, n=n, any=any)),
        "input_dtype": in_dtype,
        "output_shape": (1, out_channels, *_get_fake_spatial_shape(out_spatial, p=p, n=n, any=any)),
        "output_dtype": out_dtype,
    }
