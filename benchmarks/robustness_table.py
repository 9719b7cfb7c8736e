"""Run each bad input through the real user entry point and write docs/robustness.md: input, what the user sees
(the last lines of the output and the exit code), verdict.

    python benchmarks/robustness_table.py [--out docs/robustness.md] [--bundle kits_nnunet_baseline]

Entry points: ``effseg fingerprint`` / ``effseg evaluate`` (subprocesses) and the bundle's ``inference.json`` through
``python -m monai.bundle run`` at a tiny network size (a random-weight model.pt is written for it). Nothing is
mocked: a row shows what a user would see today.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


TEXT: dict[str, str] = {}  # the last command's whole output, and the temporary folder to hide


def run(cmd: list[str], timeout: int = 300) -> tuple[int, str]:
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout, env=ENV
        )
    except subprocess.TimeoutExpired:
        return 124, f"(no answer after {timeout} s)"
    TEXT["last"] = proc.stdout + proc.stderr
    return proc.returncode, TEXT["last"]


def last_lines(text: str, n: int = 2) -> str:
    text = text.replace(TEXT.get("tmp", "\0"), "<tmp>")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(("warnings.warn", "^"))]
    return " / ".join(lines[-n:])[-500:]


def warned_lines(text: str, words: tuple[str, ...]) -> str:
    text = text.replace(TEXT.get("tmp", "\0"), "<tmp>")
    hits = [ln.strip() for ln in text.splitlines() if any(w in ln for w in words)]
    return " / ".join(hits[-2:])[-500:]


def save(path: Path, data: np.ndarray, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, area: str, case: str, rc: int, seen: str, ok_rc: int | None, must_name: str | None = None) -> None:
        """``ok_rc``: the exit code a good outcome has (0: handled, carried on; 1/2: refused). ``must_name``: what the
        message has to name (a file or folder) for the outcome to count."""
        named = must_name is None or must_name in seen
        if must_name is not None and not named and TEXT.get("last"):
            hits = [ln.strip() for ln in TEXT["last"].splitlines() if must_name in ln]
            if hits:  # show the line that names it (e.g. above a list of the known layouts)
                seen, named = (hits[-1] + " / " + seen)[:600], True
        seen = seen.replace(TEXT.get("tmp", "\0"), "<tmp>")
        if ok_rc is None:
            verdict = "reported"
        elif (rc == 0) == (ok_rc == 0) and named and seen:
            verdict = "ok: handled, reported" if rc == 0 else "ok: stops with a message naming the input"
        else:
            verdict = "NEEDS WORK" + ("" if named else " (message does not name the input)")
        seen = seen.replace("|", "\\|") or "(no output)"
        self.rows.append((area, case, f"exit {rc}: {seen}", verdict))
        print(f"[{verdict}] {area}: {case}: exit {rc}", flush=True)

    def markdown(self) -> str:
        out = ["| area | input | what the user sees (exit code: last lines) | verdict |", "|---|---|---|---|"]
        out += [f"| {a} | {c} | {s} | {v} |" for a, c, s, v in self.rows]
        return "\n".join(out)


def effseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "monai_effseg.cli", *args]


def _dataset_edits(img: str, seg: str) -> dict:
    """Scenario name -> (edit of a dataset copy, the file the message must name)."""

    def ref(d: Path, rel: str):
        return nib.load(str(d / rel))

    return {
        "truncated image (.nii.gz cut in half)": (lambda d: (d / img).write_bytes((d / img).read_bytes()[:2000]), img),
        "empty image file (0 bytes)": (lambda d: (d / img).write_bytes(b""), img),
        "non-NIfTI file named .nii.gz (a PNG)": (
            lambda d: (d / img).write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 500),
            img,
        ),
        "2D image": (lambda d: save(d / img, np.zeros((32, 32), np.float32)), img),
        "4D image": (lambda d: save(d / img, np.zeros((32, 32, 8, 2), np.float32)), img),
        "NaN voxels in the image": (
            lambda d: save(
                d / img,
                np.where(
                    np.arange(ref(d, img).get_fdata().size).reshape(ref(d, img).shape) % 7 == 0,
                    np.nan,
                    ref(d, img).get_fdata(),
                ).astype(np.float32),
                ref(d, img).affine,
            ),
            img,
        ),
        "label shape differs from image": (lambda d: save(d / seg, np.zeros((10, 10, 10), np.uint8)), seg),
        "label affine differs from image": (
            lambda d: save(
                d / seg, np.asarray(ref(d, seg).dataobj), ref(d, seg).affine @ np.diag([2.0, 2.0, 2.0, 1.0])
            ),
            seg,
        ),
        "label 7 in a label map, no --num-classes": (
            lambda d: save(
                d / seg,
                np.where(np.asarray(ref(d, seg).dataobj) == 1, 7, np.asarray(ref(d, seg).dataobj)).astype(np.uint8),
                ref(d, seg).affine,
            ),
            None,
        ),
    }


def data_scenarios(t: Table, work: Path, kits: Path) -> None:
    """Broken datasets through ``effseg fingerprint``."""

    def variant(name: str, edit) -> Path:
        d = work / name
        shutil.copytree(kits, d)
        edit(d)
        return d

    case = "case_00000"
    img, seg = f"{case}/imaging.nii.gz", f"{case}/segmentation.nii.gz"

    scenarios = _dataset_edits(img, seg)
    for name, (edit, named) in scenarios.items():
        d = variant(name.split(" ")[0].replace("/", "") + str(abs(hash(name)) % 1000), edit)
        rc, text = run(effseg("fingerprint", str(d), "--out", str(work / f"fp{abs(hash(name)) % 1000}.json")))
        if rc == 0 and "label" in name:
            seen = warned_lines(text, ("outside the usual",)) or last_lines(text)
            t.add("dataset (effseg fingerprint)", name, rc, seen, 0, "7")
        else:
            t.add("dataset (effseg fingerprint)", name, rc, last_lines(text), 1, named and f"{d.name}/{named}")
    empty = work / "empty_dataset"
    empty.mkdir()
    rc, text = run(effseg("fingerprint", str(empty)))
    t.add("dataset (effseg fingerprint)", "empty dataset folder", rc, last_lines(text), 1, empty.name)
    unknown = work / "unknown_layout"
    save(unknown / "scan_a.nii.gz", np.zeros((8, 8, 8), np.float32))
    rc, text = run(effseg("fingerprint", str(unknown)))
    t.add(
        "dataset (effseg fingerprint)",
        "unknown dataset layout (flat .nii.gz files)",
        rc,
        last_lines(text),
        1,
        unknown.name,
    )
    ro = work / "read_only"
    shutil.copytree(kits, ro)
    ro.chmod(0o555)
    if os.geteuid() == 0:
        t.rows.append(
            (
                "dataset (effseg fingerprint)",
                "read-only dataset folder, no --out",
                "not run: this script runs as root, which writes into read-only folders (covered by "
                "tests/test_reliability_cli.py)",
                "not measured",
            )
        )
    else:
        rc, text = run(effseg("fingerprint", str(ro)))
        t.add("dataset (effseg fingerprint)", "read-only dataset folder, no --out", rc, last_lines(text), 2, "--out")
    ro.chmod(0o755)


def evaluate_scenarios(t: Table, work: Path, lits: Path) -> None:
    from monai_effseg.data import build_datalist

    def preds(name: str, transform=lambda d: d) -> Path:
        dst = work / name
        for item in build_datalist(lits):
            lab = nib.load(item["label"])
            save(
                dst / (Path(item["image"]).name.split(".")[0] + ".nii.gz"),
                transform(np.asarray(lab.dataobj)),
                lab.affine,
            )
        return dst

    good = preds("preds_good")
    before = sorted(str(p) for p in lits.rglob("*"))
    rc, text = run(effseg("evaluate", str(lits), str(good), "--protocol", "lits"))
    wrote = sorted(str(p) for p in lits.rglob("*")) != before
    t.add(
        "effseg evaluate",
        "folders swapped (reference first)",
        rc,
        last_lines(text) + ("; WROTE INTO THE REFERENCE FOLDER" if wrote else ""),
        1,
        "swapped",
    )
    nested = work / "reference_with_preds"
    shutil.copytree(lits, nested)
    shutil.copytree(good, nested / "preds")
    rc, text = run(effseg("evaluate", str(nested / "preds"), str(nested), "--protocol", "lits", "--only-predicted"))
    t.add(
        "effseg evaluate", "prediction folder inside the reference folder, no --out", rc, last_lines(text), 1, "--out"
    )
    prob = preds("preds_prob", lambda d: (d / 2.0).astype(np.float32) + 0.25)
    rc, text = run(effseg("evaluate", str(prob), str(lits), "--protocol", "lits", "--out", str(work / "r1")))
    t.add("effseg evaluate", "probability map (float) as prediction", rc, last_lines(text), 1, "preds_prob/")
    seven = preds("preds_7", lambda d: np.where(d == 1, 7, d).astype(np.uint8))
    rc, text = run(effseg("evaluate", str(seven), str(lits), "--protocol", "lits", "--out", str(work / "r2")))
    t.add("effseg evaluate", "label 7 in a prediction", rc, last_lines(text), 1, "preds_7/")


def _inference_runner(work: Path, kits: Path, bundle: Path):
    """``(infer(inputs, outputs) -> (exit code, output), scans(name, n) -> folder, datalist)`` for the bundle's
    inference.json at its demo size, with freshly initialised weights."""
    import torch
    from monai.bundle import ConfigParser

    from monai_effseg.data import build_datalist, load_or_compute_fingerprint

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / f) for f in ("train.json", "demo.json")])
    parser.update({"bundle_root": str(bundle)})
    overrides = dict(parser.get_parsed_content("demo_inference_overrides"))
    inf = ConfigParser()
    inf.read_config(str(bundle / "configs" / "inference.json"))
    inf.update(
        {
            "bundle_root": str(bundle),
            **{k: v for k, v in overrides.items() if k not in ("ckpt_path", "fingerprint_path")},
        }
    )
    ckpt, fp = work / "model.pt", work / "fingerprint.json"
    torch.save(inf.get_parsed_content("network_def").state_dict(), ckpt)
    load_or_compute_fingerprint(build_datalist(kits), fp)
    overrides.update(ckpt_path=str(ckpt), fingerprint_path=str(fp))
    items = build_datalist(kits)

    def infer(inputs: Path, outputs: Path) -> tuple[int, str]:
        cmd = [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            str(bundle / "configs" / "inference.json"),
            "--bundle_root",
            str(bundle),
            "--meta_file",
            str(bundle / "configs" / "metadata.json"),
            "--input_dir",
            str(inputs),
            "--output_dir",
            str(outputs),
        ]
        for k, v in overrides.items():
            cmd += [f"--{k}", v if isinstance(v, str) else repr(v)]  # fire reads Python literals
        return run(cmd, timeout=600)

    def scans(name: str, n: int = 1) -> Path:
        d = work / name
        d.mkdir()
        for item in items[:n]:
            shutil.copy(item["image"], d / f"{item['case_id']}.nii.gz")
        return d

    return infer, scans, items


def inference_scenarios(t: Table, work: Path, kits: Path, bundle: Path) -> None:
    infer, scans, items = _inference_runner(work, kits, bundle)
    d = scans("same_dir")
    rc, text = infer(d, d)
    t.add("bundle inference", "output folder == input folder", rc, last_lines(text), 1, "same_dir")
    d = scans("unwritable_in")
    out = work / "unwritable_out"
    out.write_text("a file where the output folder should be")
    rc, text = infer(d, out)
    t.add("bundle inference", "unwritable output (a file in the way)", rc, last_lines(text), 1, "unwritable_out")
    d = work / "mr_range"
    img = nib.load(items[0]["image"])
    save(d / "mr.nii.gz", (np.random.default_rng(0).random(img.shape) * 1e4).astype(np.float32), img.affine)
    rc, text = infer(d, work / "mr_out")
    t.add(
        "bundle inference",
        "MR-like intensities (0-10000) instead of CT HU",
        rc,
        warned_lines(text, ("HU", "intensit", "range")) or last_lines(text),
        None,
    )
    d = work / "spacing"
    save(d / "thin.nii.gz", np.asarray(img.dataobj), np.diag([0.05, 0.05, 0.05, 1.0]))
    rc, text = infer(d, work / "spacing_out")
    t.add(
        "bundle inference",
        "implausible spacing (0.05 mm)",
        rc,
        warned_lines(text, ("spacing", "mm")) or last_lines(text),
        None,
    )
    d = work / "dicom"
    d.mkdir()
    (d / "IM0001.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    rc, text = infer(d, work / "dicom_out")
    t.add("bundle inference", "a folder holding a single .dcm file", rc, last_lines(text), 1, ".dcm")
    d = scans("mixed", 2)
    (d / "broken.nii.gz").write_bytes(b"not a nifti file")
    rc, text = infer(d, work / "mixed_out")
    written = sorted(p.name for p in (work / "mixed_out").glob("*.nii.gz")) if (work / "mixed_out").is_dir() else []
    t.add(
        "bundle inference",
        "mixed folder: 2 good scans + 1 broken file",
        rc,
        (warned_lines(text, ("broken.nii.gz",)) or last_lines(text)) + f" (wrote {len(written)} segmentations)",
        None,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "robustness.md")
    ap.add_argument("--bundle", default="kits_nnunet_baseline")
    ap.add_argument("--only", choices=("data", "evaluate", "inference"), default=None)
    args = ap.parse_args()
    from monai_effseg.data import synthetic_dataset

    t = Table()
    with tempfile.TemporaryDirectory(prefix="effseg_robustness_") as tmp:
        work = Path(tmp)
        TEXT["tmp"] = tmp
        kits = synthetic_dataset("kits", num_cases=2, seed=5, shape=(32, 32, 16), root=work / "cache")
        lits = synthetic_dataset("lits", num_cases=2, seed=5, shape=(32, 32, 16), root=work / "cache")
        for name, fn, extra in (
            ("data", data_scenarios, (kits,)),
            ("evaluate", evaluate_scenarios, (lits,)),
            ("inference", inference_scenarios, (kits, REPO / "bundles" / args.bundle)),
        ):
            if args.only in (None, name):
                sub = work / name
                sub.mkdir()
                fn(t, sub, *extra)
    text = (
        "# Robustness: what a user sees on bad input\n\n"
        f"Generated by `python benchmarks/robustness_table.py` (bundle {args.bundle} at a tiny size, synthetic "
        "data). Each row runs the real entry point in a subprocess; the third column is its exit code and the "
        'last lines it printed. Verdict "ok" needs the expected outcome (stop with exit != 0, or carry on) and a '
        'message naming the input; "reported" rows show the message without a pass/fail rule.\n\n' + t.markdown() + "\n"
    )
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
