"""Seed 000's Table 1 next to ours: parameters (used, and with the unused ImageNet head as the thesis counted) and
FLOPs (2 x MAC, fvcore) for network, encoder and decoder conv stages, at 1x1x128^3 with 4 classes.

    python benchmarks/bench_efficientnet_profile.py [NAMES ...] [--flops-downscale 2]

FLOPs are counted at 64^3 and scaled by 8 (exact for conv MACs: every level keeps integer sizes); pass
``--flops-downscale 1`` to count at 128^3. ``effseg profile --all`` prints the same table without the comparison.
"""

from __future__ import annotations

import argparse
import sys

import torch

from monai_effseg.nets import build_net
from monai_effseg.nets.thesis_table1 import REFERENCE_2XMAC_T, REFERENCE_USED_PARAMS_M, THESIS_TABLE1
from monai_effseg.profile import format_profiles, profile_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=list(THESIS_TABLE1))
    parser.add_argument("--flops-downscale", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    profiles = []
    for name in args.names:
        profiles.append(profile_model(name, build_net(name), (1, 1, 128, 128, 128), args.flops_downscale))
        print(f"profiled {name}", file=sys.stderr)
    print(format_profiles(profiles))
    print(
        "\n| network | params (ours, with head) | Table 1 | enc (ours) | Table 1 | dec (ours) | Table 1 "
        "| used params (ours) | reference used | FLOPs (ours) | Table 1 | diff | reference 2xMAC | diff |"
    )
    print("|" + "---|" * 15)
    for p in profiles:
        t = THESIS_TABLE1.get(p.name)
        ours = [p.table1_part("params", part) / 1e6 for part in ("network", "encoder", "decoder")]
        flops = p.flops["network"] / 1e12
        thesis = [f"{v:.3f}M" if t else "-" for v in (t[3:] if t else (0, 0, 0))]
        ref_used = REFERENCE_USED_PARAMS_M.get(p.name)
        ref_flops = REFERENCE_2XMAC_T.get(p.name)
        cells = [
            f"{ours[0]:.3f}M", thesis[0], f"{ours[1]:.3f}M", thesis[1], f"{ours[2]:.3f}M", thesis[2],
            f"{p.params['network']:,}", f"{ref_used:.3f}M" if ref_used else "-",
            f"{flops:.3f}T", f"{t[0]:.3f}T" if t else "-", f"{(flops / t[0] - 1) * 100:+.1f}%" if t else "-",
            f"{ref_flops:.3f}T" if ref_flops else "-", f"{(flops / ref_flops - 1) * 100:+.2f}%" if ref_flops else "-",
        ]  # fmt: skip
        print(f"| {p.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
