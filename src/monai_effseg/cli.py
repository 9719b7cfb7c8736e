"""``effseg``: demo, profile, fingerprint, evaluate and export from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def find_bundle(name_or_path: str) -> Path:
    """A bundle directory given as a path, or by name under ``./bundles`` or this checkout's ``bundles/``."""
    candidates = [Path(name_or_path), Path("bundles") / name_or_path, REPO_BUNDLES / name_or_path]
    for candidate in candidates:
        if (candidate / "configs" / "train.json").is_file():
            return candidate.resolve()
    known = sorted(p.name for p in REPO_BUNDLES.glob("*") if (p / "configs").is_dir()) if REPO_BUNDLES.is_dir() else []
    raise SystemExit(
        f"effseg: no bundle {name_or_path!r} (looked in {', '.join(map(str, candidates))}); known: {known}"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from monai_effseg.demo_info import (
        DATASET_NOTES,
        checkpoint_epoch,
        demo_banner,
        demo_phantoms,
        demo_run_name,
        synthetic_cache_dir,
    )

    root = find_bundle(args.bundle)
    if args.dataset == "realistic" and demo_phantoms(root) == "lits":
        raise SystemExit(
            f"effseg demo: {root.name} segments liver; the realistic dataset is built around KiTS19 kidney label "
            "maps and has no liver. Run its demo on the phantoms (leave out --dataset)."
        )
    resume = checkpoint_epoch(root / "models" / demo_run_name(args.dataset))
    # printed before the slow torch / MONAI imports, so the wait and the output paths are known up front
    print(demo_banner(root, synthetic_cache_dir(), resume_epoch=resume, dataset=args.dataset), flush=True)
    from monai_effseg.workflows import run_bundle

    run_bundle(root, ["train.json", "demo.json"], "train", literals={"demo_dataset": args.dataset})
    print(f"\nDataset: {DATASET_NOTES[args.dataset][0]}.\nTumour Dice: {DATASET_NOTES[args.dataset][1]}.", flush=True)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from monai_effseg.nets import NETS, build_net
    from monai_effseg.nets.registry import PROFILE_INPUTS
    from monai_effseg.profile import format_profiles, profile_model, time_forward

    names = NETS.names() if args.all else args.names
    if not names:
        raise SystemExit(f"effseg profile: name networks or pass --all; registered: {', '.join(NETS.names())}")
    torch.set_num_threads(args.threads)
    profiles = []
    for name in names:
        shape = (1, *(args.input_size or PROFILE_INPUTS[name]))
        model = build_net(name)
        p = profile_model(name, model, shape)
        if args.time:
            if args.optimized:
                from monai_effseg.deploy.optimize import optimize_for_inference

                model = optimize_for_inference(model)
            p.extra["time_s"] = time_forward(model, shape, threads=args.threads)
        profiles.append(p)
        print(f"profiled {name}", file=sys.stderr)
    print(format_profiles(profiles))
    print(
        "\nFLOPs = 2 x conv/linear MACs (torch.utils.flop_counter). dec = decoder conv stages (transposed convs and "
        "heads only in the network total). params / enc params count the ImageNet head the thesis counted but never ran; "
        "'used params' is what the module has."
    )
    if args.time:
        print(f"\n| network | CPU forward (s), {args.threads} threads, eval |\n|---|---|")
        for p in profiles:
            print(f"| {p.name} | {p.extra['time_s']:.2f} |")
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from monai_effseg.data import build_datalist, load_or_compute_fingerprint

    datalist = build_datalist(args.dataset_dir, args.layout)
    out = Path(args.out or Path(args.dataset_dir) / "fingerprint.json")
    problem = _unwritable(out)
    if problem:  # checked before reading every case, not after
        print(
            f"effseg fingerprint: cannot write {out}: {problem}. Pass --out with a writable path, e.g. "
            f"--out {Path.home() / 'fingerprint.json'}",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(load_or_compute_fingerprint(datalist, out, num_classes=args.num_classes), indent=2))
    return 0


def _unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be written (its folder is missing or read-only), or ``None``."""
    import tempfile

    folder = path.parent
    if not folder.is_dir():
        return f"{folder} does not exist"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return f"{folder} is not writable ({err.strerror or err})"
    return None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from monai_effseg.metrics.report import run_evaluate

    return run_evaluate(args) or 0


def cmd_export(args: argparse.Namespace) -> int:
    from monai.bundle import ckpt_export

    root = find_bundle(args.bundle)
    ckpt_export(
        net_id="network_def",
        filepath=str(args.out or root / "models" / "model.ts"),
        ckpt_file=str(args.ckpt or root / "models" / "model.pt"),
        meta_file=str(root / "configs" / "metadata.json"),
        config_file=str(root / "configs" / "inference.json"),
        bundle_root=str(root),
        use_trace=args.trace,
        input_shape=[1, 1, *args.input_size] if args.trace else None,
    )
    return 0


def cmd_bundles(args: argparse.Namespace) -> int:
    from monai_effseg.recipes import sync

    root = Path(args.root).resolve()
    differ = sync(root, check=args.check)
    if args.check and differ:
        print(
            f"effseg bundles --check: {len(differ)} bundle file(s) differ from what recipes/ generates:\n  "
            + "\n  ".join(differ)
            + "\nEdit recipes/ (template/, families/, <bundle>.json), not the bundle folders, "
            "then run 'effseg bundles' to regenerate them.",
            file=sys.stderr,
        )
        return 1
    stray = [d for d in differ if d.endswith("(not generated)")]
    if args.check:
        print("effseg bundles: all bundle configs match recipes/")
    else:
        print(f"effseg bundles: {len(differ) - len(stray)} file(s) written")
    if stray:
        print(
            "effseg bundles: no recipe makes " + ", ".join(stray) + "; delete it or add it to recipes/template",
            file=sys.stderr,
        )
        return 1
    return 0


DESCRIPTION = "effseg: demo, profile, fingerprint, evaluate, export and generate the monai-effseg bundles and networks."


def build_parser(evaluate_arguments: bool = True) -> argparse.ArgumentParser:
    """The ``effseg`` parser. ``evaluate_arguments=False`` leaves out ``effseg evaluate``'s own arguments, whose
    definition imports torch and MONAI: :func:`main` builds that only when the command is ``evaluate``, so that
    ``effseg --help`` and every other command's parsing stay fast."""
    from monai_effseg.demo_info import DEMO_DATASETS, demo_table, outputs_help, synthetic_cache_dir

    parser = argparse.ArgumentParser(
        prog="effseg", description=DESCRIPTION, epilog="'effseg COMMAND --help' describes a command."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="train a bundle on the embedded synthetic dataset and evaluate it on a hold-out set (CPU, minutes)",
        description="Train BUNDLE's CPU demo (configs/train.json + configs/demo.json) on synthetic phantoms, then "
        "evaluate it on 6 unseen phantoms: prints the hold-out metrics and writes overlay PNGs. A "
        "checkpoint left in the bundle's models/demo/ is resumed (a finished one trains no epoch); "
        "delete that folder to train again.",
        epilog=f"{demo_table()}\n\n{outputs_help()}\n"
        f"and generates the synthetic data once into {synthetic_cache_dir()} ($EFFSEG_CACHE)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("bundle", help="bundle name (one of those below) or path")
    demo.add_argument(
        "--dataset",
        choices=DEMO_DATASETS,
        default="phantoms",
        help="phantoms (default: ellipsoid phantoms, fast) or realistic (KiTS bundles: CT-like cases around real "
        "KiTS19 label maps, hold-out cases from unseen patients; docs/realistic_data.md)",
    )
    demo.set_defaults(func=cmd_demo)

    prof = sub.add_parser("profile", help="params and FLOPs (2 x MAC) per network, encoder and decoder")
    prof.add_argument("names", nargs="*", help="registered network names")
    prof.add_argument("--all", action="store_true", help="every registered network")
    prof.add_argument(
        "--input-size",
        nargs="+",
        type=int,
        default=None,
        help="C and spatial size, no batch (default: each network's paper input)",
    )
    prof.add_argument("--time", action="store_true", help="also time a CPU forward pass")
    prof.add_argument(
        "--optimized",
        action="store_true",
        help="time after monai_effseg.deploy.optimize.optimize_for_inference (BN folding, channels-last)",
    )
    prof.add_argument("--threads", type=int, default=2)
    prof.set_defaults(func=cmd_profile)

    fp = sub.add_parser("fingerprint", help="compute (and validate) a dataset fingerprint")
    fp.add_argument("dataset_dir")
    fp.add_argument("--layout", default="auto")
    fp.add_argument("--num-classes", type=int, default=None)
    fp.add_argument("--out", default=None, help="JSON path (default DATASET_DIR/fingerprint.json)")
    fp.set_defaults(func=cmd_fingerprint)

    ev = sub.add_parser("evaluate", help="challenge metrics of a prediction folder against a reference folder")
    if evaluate_arguments:
        from monai_effseg.metrics.report import add_evaluate_arguments

        add_evaluate_arguments(ev)
    ev.set_defaults(func=cmd_evaluate)

    ex = sub.add_parser("export", help="TorchScript export of a bundle's network (monai.bundle ckpt_export)")
    ex.add_argument("bundle")
    ex.add_argument("--ckpt", default=None)
    ex.add_argument("--out", default=None)
    ex.add_argument("--trace", action="store_true", help="trace instead of script")
    ex.add_argument("--input-size", nargs="+", type=int, default=[64, 64, 64], help="spatial size for --trace")
    ex.set_defaults(func=cmd_export)

    bu = sub.add_parser(
        "bundles",
        help="generate bundles/*/configs from recipes/ (the template and one delta each)",
        description="Write every bundle's configs/ from recipes/template/ and recipes/<bundle>.json "
        "(see monai_effseg.recipes). --check writes nothing and exits 1 when a bundle "
        "file differs from what the recipes generate.",
    )
    bu.add_argument("--check", action="store_true", help="compare only; exit 1 and name the files that differ")
    bu.add_argument("--root", default=str(REPO_BUNDLES.parent), help="repository root (default: this checkout)")
    bu.set_defaults(func=cmd_bundles)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from monai_effseg.errors import report_root_cause_last

    report_root_cause_last()  # an uncaught error ends on its real cause, not on MONAI's config-expression wrapper
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(evaluate_arguments=command == "evaluate").parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
