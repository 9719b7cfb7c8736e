"""Martinho's Table 1 next to ours: parameters (used, and with the unused ImageNet head as the thesis counted) and
FLOPs (2 x MAC, :func:`monai_effseg.profile.count_flops`, from shapes only) for network, encoder and decoder conv
stages, at 1x1x128^3 with 4 classes.

    python benchmarks/bench_efficientnet_profile.py [NAMES ...]

``effseg profile --all`` prints the same table without the comparison.
:func:`measure` returns the same figures as a dict; :func:`measure_section` is ``run_all.py``'s ``profile`` section.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from monai_effseg.nets import build_net
from monai_effseg.nets.registry import PROFILE_INPUTS
from monai_effseg.nets.thesis_table1 import REFERENCE_2XMAC_T, REFERENCE_USED_PARAMS_M, THESIS_TABLE1
from monai_effseg.profile import Profile, format_profiles, profile_model


def profile_dict(p: Profile) -> dict:
    """A :class:`~monai_effseg.profile.Profile` as plain JSON-able data."""
    return {"name": p.name, "input": list(p.input_shape), "params": dict(p.params), "flops": dict(p.flops),
            "head_params": p.head_params, "thesis_params": p.thesis_params,
            "table1_params": {part: p.table1_part("params", part) for part in ("network", "encoder", "decoder")},
            "table1_flops": {part: p.table1_part("flops", part) for part in ("network", "encoder", "decoder")}}  # fmt: skip


def table1_row(p: Profile) -> dict:
    """Ours next to Table 1 and tests/data/reference/architectures.md section 4 (params in M, FLOPs in T; None = not
    there)."""
    t = THESIS_TABLE1.get(p.name)
    parts = [p.table1_part("params", part) for part in ("network", "encoder", "decoder")]
    ours = [None if count is None else count / 1e6 for count in parts]  # networks without an encoder/decoder split
    flops = p.flops["network"] / 1e12
    return {
        "name": p.name,
        "params_m": ours[0], "enc_params_m": ours[1], "dec_params_m": ours[2],
        "table1_params_m": t[3] if t else None, "table1_enc_params_m": t[4] if t else None,
        "table1_dec_params_m": t[5] if t else None,
        "used_params": p.params["network"], "reference_used_params_m": REFERENCE_USED_PARAMS_M.get(p.name),
        "flops_t": flops, "table1_flops_t": t[0] if t else None,
        "flops_diff_pct": (flops / t[0] - 1) * 100 if t else None,
        "reference_2xmac_t": REFERENCE_2XMAC_T.get(p.name),
        "reference_diff_pct": (flops / REFERENCE_2XMAC_T[p.name] - 1) * 100 if p.name in REFERENCE_2XMAC_T else None,
    }  # fmt: skip


def measure(
    names: Sequence[str] = tuple(THESIS_TABLE1),
    input_shape: Sequence[int] | None = None,
    keep_going: bool = False,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> dict:
    """Profile ``names`` (at ``input_shape`` with the batch, default each network's paper input) and compare with
    Table 1. Returns ``{"profiles": [...], "table1": [...], "errors": {name: message}, "_objects": [Profile, ...]}``
    (``_objects`` is not JSON-able); with ``keep_going`` a network that fails is recorded in ``errors`` instead of
    raising."""
    profiles, errors = [], {}
    for name in names:
        start = time.perf_counter()
        try:
            shape = tuple(input_shape) if input_shape else (1, *PROFILE_INPUTS.get(name, (1, 128, 128, 128)))
            profiles.append(profile_model(name, build_net(name), shape))
        except Exception as exc:  # noqa: BLE001 - recorded, the rest still runs
            if not keep_going:
                raise
            errors[name] = f"{type(exc).__name__}: {exc}"
            log(f"profile {name} failed: {errors[name]}")
            continue
        log(f"profiled {name} ({time.perf_counter() - start:.1f} s)")
    return {"profiles": [profile_dict(p) for p in profiles], "table1": [table1_row(p) for p in profiles],
            "errors": errors, "_objects": profiles}  # fmt: skip


def registered_networks(first: Sequence[str] = ()) -> list[str]:
    """Every registered network: Table 1's, then the LiteUNet presets, then ``first``, then the rest."""
    import monai_effseg.pruning  # noqa: F401  (registers "sauron_nnunet")
    from monai_effseg.encoders.lite import PRESETS
    from monai_effseg.nets import NETS

    names = [n for n in THESIS_TABLE1 if n in NETS] + [n for n in PRESETS if n in NETS]
    names += [n for n in first if n in NETS and n not in names]
    return names + [n for n in NETS.names() if n not in names]


def measure_section(ctx: Any) -> dict:
    """run_all.py's ``profile`` section (``ctx``: its ``Context``): :func:`measure` of ``profile_names`` (``None``:
    every registered network) with Table 1's rows and the LiteUNet presets' stage tables."""
    from report_sections import OTHER_NETS

    import monai_effseg.pruning  # noqa: F401  (registers "sauron_nnunet")
    from monai_effseg.encoders.lite import PRESETS

    names = ctx.settings.profile_names
    result = measure(list(names or registered_networks(OTHER_NETS)), keep_going=True, log=ctx.log)
    lite = {p["name"]: {"table": PRESETS[p["name"]].table, "caption": PRESETS[p["name"]].caption}
            for p in result["profiles"] if p["name"] in PRESETS}  # fmt: skip
    return {"counter": "torch.utils.flop_counter", "profiles": result["profiles"],
            "table1": [r for r in result["table1"] if r["name"] in THESIS_TABLE1], "lite": lite,
            "errors": result["errors"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=list(THESIS_TABLE1))
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = measure(args.names, input_shape=(1, 1, 128, 128, 128))
    print(format_profiles(result["_objects"]))
    print(
        "\n| network | params (ours, with head) | Table 1 | enc (ours) | Table 1 | dec (ours) | Table 1 "
        "| used params (ours) | reference used | FLOPs (ours) | Table 1 | diff | reference 2xMAC | diff |"
    )
    print("|" + "---|" * 15)
    for r in result["table1"]:

        def m(v):
            return f"{v:.3f}M" if v is not None else "-"

        cells = [
            m(r["params_m"]), m(r["table1_params_m"]), m(r["enc_params_m"]), m(r["table1_enc_params_m"]),
            m(r["dec_params_m"]), m(r["table1_dec_params_m"]), f"{r['used_params']:,}", m(r["reference_used_params_m"]),
            f"{r['flops_t']:.3f}T", f"{r['table1_flops_t']:.3f}T" if r["table1_flops_t"] else "-",
            f"{r['flops_diff_pct']:+.1f}%" if r["flops_diff_pct"] is not None else "-",
            f"{r['reference_2xmac_t']:.3f}T" if r["reference_2xmac_t"] else "-",
            f"{r['reference_diff_pct']:+.2f}%" if r["reference_diff_pct"] is not None else "-",
        ]  # fmt: skip
        print(f"| {r['name']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
