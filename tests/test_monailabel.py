"""Serving the bundles with MONAI Label 0.8.5's ``monaibundle`` app (docs/monailabel.md).

* ``test_monaibundle_infer_task`` / ``test_monaibundle_train_task`` (every bundle; MONAI Label not needed): run the
  bundle's ``inference.json`` / ``train.json`` exactly as monaibundle's ``BundleInferTask`` / ``BundleTrainTask``
  do (``monailabel/tasks/{infer,train}/bundle.py`` and ``tasks/infer/basic_infer.py`` of monailabel 0.8.5): the
  config as shipped plus only the keys MONAI Label injects (``bundle_root``, ``device``, ``image_path``,
  ``train#trainer#max_epochs``, ``train#dataset#data``, ...), its transform filtering and its inferer call.
* ``test_monailabel_server`` (``kits_nnunet_baseline``): ``monailabel start_server`` on loopback, the real CT posted
  to ``/infer/<bundle>``, then ``/train/<bundle>`` for one epoch; the server is stopped by PID.

"Tiny" bundles: each test deploys a copy of the bundle whose configs carry the sizes of its ``demo.json`` (small
features and patches, one iteration per epoch) and random weights in ``models/model.pt``, as a user deploys a
trained bundle. The server test runs where ``$EFFSEG_MONAILABEL_PYTHON`` (default: this interpreter) imports
monailabel and is skipped, saying so, elsewhere.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_utils import BUNDLE_IDS, BUNDLES, REPO, read_json, synthetic_kind
from monai.bundle import ConfigParser

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")

SERVER_BUNDLE = "kits_nnunet_baseline"
SERVER_PYTHON = os.environ.get("EFFSEG_MONAILABEL_PYTHON") or sys.executable
# demo.json keys that describe the demo run itself (its data, folders, hold-out evaluation), not the model's size
DEMO_ONLY_KEYS = ("demo_cases", "demo_holdout_cases", "dataset_dir", "holdout_dir", "ckpt_dir", "output_dir", "run",
                  "demo_inference_overrides", "stage_overrides")  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# deploying a tiny copy of a bundle, as a user deploys a trained one into <app>/model/<name>
# ---------------------------------------------------------------------------------------------------------------
def _set_and_export(config_file: Path, values: dict) -> None:
    parser = ConfigParser()
    parser.read_config(str(config_file))
    for key, value in values.items():
        parser[key] = value
    ConfigParser.export_config_file(parser.config, str(config_file), indent=4)


def deploy_bundle(bundle: Path, model_dir: Path, datalist: list[dict], writes_to: Path) -> Path:
    """Copy ``bundle`` to ``model_dir/<name>`` with its demo sizes, random weights in ``models/model.pt`` and the
    fingerprint of ``datalist`` in ``models/fingerprint.json``. ``writes_to``: the ``output_dir`` a bundle saver
    would write to (MONAI Label must never write there)."""
    from monai_effseg.data import load_or_compute_fingerprint

    dest = model_dir / bundle.name
    shutil.copytree(bundle, dest, ignore=shutil.ignore_patterns("models", "eval", "runs", "outputs", "__pycache__"))
    (dest / "models").mkdir()
    configs = dest / "configs"
    demo = read_json(configs / "demo.json")
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "demo.json")])
    parser.update({"bundle_root": str(dest)})
    infer = {k: v for k, v in parser.get_parsed_content("demo_inference_overrides").items()
             if k not in ("ckpt_path", "fingerprint_path")}  # fmt: skip
    infer["output_dir"] = str(writes_to)
    if "overlap" in ConfigParser.load_config_file(str(configs / "inference.json")).get("inferer", {}):
        infer["inferer#overlap"] = 0.0  # one pass over each voxel: the sliding-window cost of the test / 8
    _set_and_export(configs / "inference.json", infer)
    train = {k: v for k, v in demo.items() if k not in DEMO_ONLY_KEYS}
    train.update(iterations_per_epoch=1, val_interval=1, batch_size=1, num_workers=0)
    if "overlap" in ConfigParser.load_config_file(str(configs / "train.json")).get("validate", {}).get("inferer", {}):
        train["validate#inferer#overlap"] = 0.0
    _set_and_export(configs / "train.json", train)

    num_classes = ConfigParser.load_config_file(str(configs / "inference.json")).get("num_classes")
    load_or_compute_fingerprint(datalist, dest / "models" / "fingerprint.json", num_classes=num_classes)
    net = _parser(dest / "configs" / "inference.json", dest).get_parsed_content("network_def", instantiate=True)
    torch.save(net.state_dict(), dest / "models" / "model.pt")
    return dest


def _parser(config_file: Path, bundle_root: Path) -> ConfigParser:
    # monailabel: BundleInferTask/BundleTrainTask._load_bundle_config
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser.config.update({"bundle_root": str(bundle_root)})
    return parser


# ---------------------------------------------------------------------------------------------------------------
# monaibundle's infer and train tasks, step by step (monailabel 0.8.5)
# ---------------------------------------------------------------------------------------------------------------
def monaibundle_infer(bundle_dir: Path, image_path: str, device: str = "cpu") -> dict:
    """What ``POST /infer/<bundle>`` does with an uploaded file, up to the ``Writer``; returns the data dict after
    the bundle's ``postprocessing`` (minus its savers), ``Restored`` appended as MONAI Label does."""
    from monai.data import MetaTensor, decollate_batch
    from monai.transforms import Compose, LoadImaged, SaveImaged

    parser = _parser(bundle_dir / "configs" / "inference.json", bundle_dir)
    parser.config["use_click"] = False
    network = parser.get_parsed_content("network_def", instantiate=True)
    metadata = read_json(bundle_dir / "configs" / "metadata.json")
    key_image = next(iter(metadata["network_data_format"]["inputs"]))
    key_pred = next(iter(metadata["network_data_format"]["outputs"]))

    # endpoints/infer.py + MONAILabelApp.infer + BasicInferTask.__call__
    config = {"device": [device], "model_filename": ["model.pt"]}
    request = {"model": bundle_dir.name, "image": image_path, "description": metadata.get("description"),
               "save_label": False}  # fmt: skip
    req = copy.deepcopy(config)
    req.update(request)
    req["device"] = device
    data = copy.deepcopy(req)
    data.update({"image_path": req.get("image")})

    def update_device():  # BundleInferTask._update_device
        parser.config.update({"device": device})

    # BundleInferTask.pre_transforms
    update_device()
    c = parser.get_parsed_content("preprocessing", instantiate=True)
    pre = list(c.transforms) if isinstance(c, Compose) else c
    for t in pre:
        if isinstance(t, LoadImaged):
            t._loader.image_only = False  # LoadImageTensord then calls this LoadImaged for a path input
    for t in pre:
        data = t(data)

    # BundleInferTask.inferer + BasicInferTask._get_network / run_inferer (input_key "image", output "pred")
    update_device()
    inferer = parser.get_parsed_content("inferer", instantiate=True)
    net = copy.deepcopy(network).to(torch.device(device))
    checkpoint = torch.load(bundle_dir / "models" / "model.pt", map_location=torch.device(device))
    net.load_state_dict(checkpoint.get("model", checkpoint), strict=False)
    net.eval()
    inputs = data["image"]
    inputs = inputs if torch.is_tensor(inputs) else torch.from_numpy(inputs)
    inputs = inputs[None].to(torch.device(device))
    with torch.no_grad():
        outputs = inferer(inputs, net)
    data["pred"] = decollate_batch(outputs)[0] if isinstance(outputs, dict) else outputs[0]

    # BundleInferTask.post_transforms: the bundle's postprocessing without SaveImaged, then Restored
    update_device()
    c = parser.get_parsed_content("postprocessing", instantiate=True)
    post = list(c.transforms) if isinstance(c, Compose) else c
    post = [t for t in post if not isinstance(t, SaveImaged)]
    for t in post:
        data = t(data)
    data["_bundle_pred"] = data[key_pred]  # what the bundle's own postprocessing produced
    data = _restored(data, key_pred, key_image, MetaTensor)
    return data


def _restored(data: dict, key: str, ref_image: str, metatensor_cls) -> dict:
    """monailabel.transform.post.Restored(keys=key, ref_image=ref_image): resize to the input's spatial shape if
    needed, drop a unit channel, label affine = the input's original affine (the Writer writes with it)."""
    try:
        from monailabel.transform.post import Restored
    except ImportError:
        Restored = None
    if Restored is not None:
        return Restored(keys=key, ref_image=ref_image)(data)
    from monai.transforms import Resize

    d = dict(data)
    meta = d[ref_image].meta if isinstance(d[ref_image], metatensor_cls) else d.get(f"{ref_image}_meta_dict", {})
    result = d[key]
    current = result.shape[1:]
    spatial = meta.get("spatial_shape", current)[-len(current) :]
    if np.any(np.not_equal(current, spatial)):
        result = Resize(spatial_size=spatial, mode="nearest")(result)
    d[key] = result if len(result.shape) <= 3 else result[0] if result.shape[0] == 1 else result
    if d.get(f"{key}_meta_dict") is None:
        d[f"{key}_meta_dict"] = {}
    d[f"{key}_meta_dict"]["affine"] = meta.get("original_affine")
    return d


def _name_to_device(name: str) -> str:
    # monailabel.utils.others.generic.name_to_device for "cpu" / "cuda[:i]" names
    return "cpu" if name.startswith("cuda") and not torch.cuda.is_available() else name


def monaibundle_train(bundle_dir: Path, datalist: list[dict], request: dict) -> None:
    """What ``POST /train/<bundle>`` runs (BundleTrainTask.__call__, single device)."""
    import monai.bundle
    from monai.data import partition_dataset

    config_file = bundle_dir / "configs" / "train.json"
    parser = _parser(config_file, bundle_dir)
    ds = [{"image": d["image"], "label": d["label"]} for d in datalist]
    val_split = request.get("val_split", 0.2)
    if val_split > 0.0:
        train_ds, val_ds = partition_dataset(ds, ratios=[(1 - val_split), val_split], shuffle=False)
    else:
        train_ds, val_ds = ds, (None if val_split < 0 else [])
    train_handlers = parser.get("train#handlers", [])
    model_pytorch = bundle_dir / "models" / "model.pt"
    if request.get("pretrained", True) and model_pytorch.exists():
        if not [t for t in train_handlers if t.get("_target_") == "CheckpointLoader"]:
            train_handlers.insert(0, {"_target_": "CheckpointLoader", "load_path": str(model_pytorch),
                                      "load_dict": {"model": "$@network"}, "strict": False})  # fmt: skip
    overrides = {
        "bundle_root": str(bundle_dir),
        "train#trainer#max_epochs": request.get("max_epochs", 50),
        "train#dataset#data": train_ds,
        "device": _name_to_device(request.get("device", "cuda")),
        "train#handlers": train_handlers,
    }
    if val_ds is not None:
        overrides["validate#dataset#data"] = val_ds
    monai.bundle.run(run_id="run", init_id=None, final_id=None,
                     meta_file=str(bundle_dir / "configs" / "metadata.json"), config_file=str(config_file),
                     **overrides)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# per-bundle checks through monai.bundle
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from monai_effseg.data import build_datalist, synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    # cases are saved in IPL, RAS and LPS in turn, with 2.5-5 mm slices: inversion of orientation and spacing counts
    return lambda kind: build_datalist(synthetic_dataset(kind, num_cases=3, seed=11, shape=(40, 40, 20), root=root))


def _assert_input_geometry(label: np.ndarray, label_affine, image_path: str, num_classes: int) -> None:
    src = nib.load(image_path)
    assert tuple(label.shape) == tuple(src.shape), f"label {label.shape} vs input {src.shape}"
    np.testing.assert_allclose(np.asarray(label_affine, dtype=np.float64), src.affine, atol=1e-4)
    assert set(np.unique(label).tolist()) <= set(range(num_classes))


def test_safe_spacingd_leaves_image_path_alone(tmp_path):
    """monai 1.6's Spacingd treats every ``image_*`` entry as a meta dict; MONAI Label's ``image_path`` is a str."""
    from monai.transforms import LoadImaged, Spacingd

    from monai_effseg.transforms import SafeSpacingd

    path = str(tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 9, 10), dtype=np.float32),
                             np.diag([1.5, 1.5, 4.0, 1.0])), path)  # fmt: skip
    data = LoadImaged("image", ensure_channel_first=True, image_only=False)({"image": path, "image_path": path})
    spacing = SafeSpacingd("image", pixdim=(3.0, 3.0, 2.0))
    out = spacing(dict(data))
    assert out["image_path"] == path and isinstance(out["image_meta_dict"], dict)
    ref = Spacingd("image", pixdim=(3.0, 3.0, 2.0))({k: v for k, v in data.items() if k != "image_path"})
    torch.testing.assert_close(out["image"].as_tensor(), ref["image"].as_tensor())
    assert spacing.inverse(out)["image"].shape == data["image"].shape


@pytest.mark.parametrize("bundle", BUNDLES, ids=BUNDLE_IDS)
def test_monaibundle_infer_task(bundle, synthetic, tmp_path):
    datalist = synthetic(synthetic_kind(bundle))
    writes_to = tmp_path / "bundle_output_dir"
    deployed = deploy_bundle(bundle, tmp_path / "app" / "model", datalist, writes_to)
    num_classes = ConfigParser.load_config_file(str(deployed / "configs" / "inference.json"))["num_classes"]
    image = datalist[0]["image"]  # saved in IPL, at a slice thickness other than the fingerprint's
    assert "".join(nib.aff2axcodes(nib.load(image).affine)) == "IPL"
    data = monaibundle_infer(deployed, image)
    # the bundle's own postprocessing already returns the input grid (Restored must not have to resize, and MONAI
    # Label writes the label with the input's original affine whatever the prediction's orientation)
    bundle_pred = data["_bundle_pred"]
    assert tuple(bundle_pred.shape[-3:]) == tuple(nib.load(image).shape)
    np.testing.assert_allclose(bundle_pred.affine.numpy(), nib.load(image).affine, atol=1e-4)
    _assert_input_geometry(np.asarray(data["pred"]), data["pred_meta_dict"]["affine"], image, num_classes)
    assert not writes_to.exists() or not any(writes_to.iterdir()), "the bundle's saver ran under MONAI Label"


@pytest.mark.parametrize("bundle", BUNDLES, ids=BUNDLE_IDS)
def test_monaibundle_train_task(bundle, synthetic, tmp_path):
    datalist = synthetic(synthetic_kind(bundle))
    deployed = deploy_bundle(bundle, tmp_path / "app" / "model", datalist, tmp_path / "out")
    before = (deployed / "models" / "model.pt").stat().st_mtime_ns
    # MONAI Label's datalist: {"image", "label"} only, no case ids
    monaibundle_train(deployed, datalist[:2], {"max_epochs": 1, "val_split": 0.5, "device": "cpu"})
    assert (
        list((deployed / "models").glob("checkpoint_epoch=1*.pt"))
        or (deployed / "models" / "model.pt").stat().st_mtime_ns != before
    ), "one epoch of training saved nothing"
    # the trained weights load into the inference network the way monaibundle's infer task loads them
    net = _parser(deployed / "configs" / "inference.json", deployed).get_parsed_content("network_def")
    checkpoint = torch.load(deployed / "models" / "model.pt", map_location="cpu")
    missing, unexpected = net.load_state_dict(checkpoint.get("model", checkpoint), strict=False)
    assert not missing and not unexpected


# ---------------------------------------------------------------------------------------------------------------
# the real server
# ---------------------------------------------------------------------------------------------------------------
def install_recipes() -> dict[str, list[str]]:
    """The install recipes of docs/monailabel.md ("## Install"): the bold line before each bash block -> its
    command lines."""
    text = (REPO / "docs" / "monailabel.md").read_text(encoding="utf-8").split("## Install", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"^\*\*(.+?)\*\*.*?^```bash\n(.*?)^```", text, flags=re.S | re.M)
    return {title: [line.strip() for line in body.replace("\\\n", " ").splitlines() if line.strip()]
            for title, body in found}  # fmt: skip


def constraint_pins() -> dict[str, str]:
    lines = (REPO / "constraints-monailabel.txt").read_text(encoding="utf-8").splitlines()
    return dict(re.match(r"^([\w-]+)==(\S+)$", line).groups() for line in lines if "==" in line)


def _torch_install(recipe: list[str]) -> list[str]:
    """The recipe's ``pip install`` of torch and torchvision, as arguments."""
    commands = [shlex.split(line) for line in recipe if line.startswith("pip install")]
    matches = [args for args in commands if "torch" in args]
    assert len(matches) == 1, recipe
    return matches[0]


def _pair_check(recipe: list[str]) -> str:
    """The recipe's check that torchvision's compiled ops load beside its torch."""
    checks = [line for line in recipe if line.startswith("python -c") and "torchvision.ops.nms" in line]
    assert len(checks) == 1, recipe
    return shlex.split(checks[0])[2]


def test_install_recipes_take_torch_and_torchvision_from_one_source():
    recipes = install_recipes()
    assert len(recipes) == 2, list(recipes)
    pins = constraint_pins()
    assert {"torch", "torchvision", "monai", "monailabel"} <= set(pins)
    for title, recipe in recipes.items():
        assert recipe[0].startswith("python3.11 -m venv "), title  # a fresh environment
        args = _torch_install(recipe)
        # both in one command, both pinned by the constraints file, from one index and nothing else
        assert "torchvision" in args and args[args.index("-c") + 1] == "constraints-monailabel.txt", title
        assert not {"--extra-index-url", "--find-links", "-f"} & set(args), title
        if "--index-url" in args:  # pip configuration (find-links, extra-index-url) must not add another source
            assert "--isolated" in args, title
        # checked before MONAI Label is installed on top; the package install keeps the pins
        check = next(i for i, line in enumerate(recipe) if line.startswith("python -c") and _pair_check(recipe) in line)
        assert check == next(i for i, line in enumerate(recipe) if shlex.split(line) == args) + 1, title
        assert recipe[-1].endswith('pip install --no-build-isolation -c constraints-monailabel.txt -e ".[label]"')


def test_pypi_recipe_resolves_one_torch_build(tmp_path):
    """The PyPI recipe's torch line as pip resolves it for a fresh environment here, with this machine's pip
    configuration (a ``find-links`` with a ``+cpu`` torch, a global ``constraint`` cap): both wheels of one build, at
    the pins. ``--dry-run`` reads the wheels' metadata only."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    recipe = next(r for title, r in install_recipes().items() if "PyPI" in title)
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet",
           "--report", str(report), *_torch_install(recipe)[2:]]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300
    )
    if proc.returncode != 0 and re.search(r"NewConnectionError|Temporary failure in name resolution", proc.stderr):
        pytest.skip(f"no package index reachable: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved = {item["metadata"]["name"]: item["metadata"] for item in read_json(report)["install"]}
    torch_v, vision_v = Version(resolved["torch"]["version"]), Version(resolved["torchvision"]["version"])
    pins = constraint_pins()
    assert (torch_v.public, vision_v.public) == (pins["torch"], pins["torchvision"])
    assert torch_v.local == vision_v.local, f"torch {torch_v} next to torchvision {vision_v}: two builds"
    needs = [Requirement(r) for r in resolved["torchvision"].get("requires_dist", []) if r.startswith("torch")]
    assert all(torch_v in r.specifier for r in needs if r.name == "torch"), needs


def _server_python_has_monailabel() -> tuple[bool, str]:
    proc = subprocess.run([SERVER_PYTHON, "-c", "import monailabel; print(monailabel.__version__)"],
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120)  # fmt: skip
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return proc.returncode == 0, lines[-1] if lines else f"exit code {proc.returncode}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kits_label(test_data: Path, dest: Path) -> None:
    data = test_data / "abdomen_ct_3mm"
    ref = nib.load(data / "kidney_left.nii.gz")
    kidneys = (np.asarray(ref.dataobj) > 0) | (np.asarray(nib.load(data / "kidney_right.nii.gz").dataobj) > 0)
    nib.save(nib.Nifti1Image(kidneys.astype(np.uint8), ref.affine), dest)


def _http(
    url: str,
    method: str = "GET",
    json_body=None,
    fields: dict | None = None,
    files: dict | None = None,
    params: dict | None = None,
    timeout: float = 60,
) -> tuple[int, bytes]:
    """A request with the standard library only (JSON body, or multipart ``fields`` + ``files`` {name: path})."""
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    headers, body = {}, None
    if json_body is not None:
        headers["Content-Type"], body = "application/json", json.dumps(json_body).encode()
    elif fields or files:
        boundary = uuid.uuid4().hex
        parts = []
        for name, value in (fields or {}).items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        for name, path in (files or {}).items():
            head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{Path(path).name}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n")  # fmt: skip
            parts.append(head.encode() + Path(path).read_bytes() + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"monailabel exited with {proc.returncode}:\n{log.read_text(encoding='utf-8')[-4000:]}")
        try:
            if _http(url, timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"monailabel did not answer {url} within {timeout:.0f} s:\n{log.read_text(encoding='utf-8')[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server by its PID (it leads its own session, so its workers go with it)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def test_monailabel_server(test_data, tmp_path):
    ok, detail = _server_python_has_monailabel()
    if not ok:
        pytest.skip(f"monailabel cannot be imported by {SERVER_PYTHON} ({detail}); install it as in "
                    "docs/monailabel.md or set EFFSEG_MONAILABEL_PYTHON to an interpreter that has it")  # fmt: skip
    # the server environment is the recipe's: its pinned torch/torchvision pair, which passes the recipe's own check
    for recipe in install_recipes().values():
        proc = subprocess.run(
            [SERVER_PYTHON, "-c", _pair_check(recipe)],
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([SERVER_PYTHON, "-c", "import torch, torchvision; print(torch.__version__, "
                           "torchvision.__version__)"], capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)  # fmt: skip
    versions = [v.split("+")[0] for v in proc.stdout.split()]
    assert versions == [constraint_pins()["torch"], constraint_pins()["torchvision"]], proc.stdout + proc.stderr

    ct = test_data / "abdomen_ct_3mm" / "ct.nii.gz"
    studies = tmp_path / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for name in ("ct_a", "ct_b"):  # two labelled studies: /train splits them 1 + 1
        shutil.copy(ct, studies / f"{name}.nii.gz")
        _kits_label(test_data, studies / "labels" / "final" / f"{name}.nii.gz")
    datalist = [{"image": str(studies / "ct_a.nii.gz"), "label": str(studies / "labels" / "final" / "ct_a.nii.gz"),
                 "case_id": "ct_a"}]  # fmt: skip

    env = {k: v for k, v in os.environ.items() if not k.startswith("MONAI_LABEL_")}
    env.update(OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    apps = tmp_path / "apps"
    subprocess.run([SERVER_PYTHON, "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle",
                    "--output", str(apps)], check=True, capture_output=True, env=env, timeout=300)  # fmt: skip
    app = apps / "monaibundle"
    writes_to = tmp_path / "bundle_output_dir"
    deployed = deploy_bundle(REPO / "bundles" / SERVER_BUNDLE, app / "model", datalist, writes_to)

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    cmd = [SERVER_PYTHON, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
           "--conf", "models", SERVER_BUNDLE, "--conf", "zoo_source", "github", "--conf", "sam2", "false",
           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                start_new_session=True)  # fmt: skip
    try:
        _wait_for(f"{url}/info/", proc, log, timeout=300)
        info = json.loads(_http(f"{url}/info/", timeout=30)[1])
        assert SERVER_BUNDLE in info["models"] and SERVER_BUNDLE in info["trainers"], info.keys()

        # auto-segmentation of the real CT, uploaded as a file
        status, body = _http(f"{url}/infer/{SERVER_BUNDLE}", "POST", params={"output": "image"},
                             fields={"params": json.dumps({"device": "cpu"})}, files={"file": ct},
                             timeout=600)  # fmt: skip
        assert status == 200, body[-2000:]
        label_file = tmp_path / "label.nii.gz"
        label_file.write_bytes(body)
        label = nib.load(label_file)
        _assert_input_geometry(np.asarray(label.dataobj), label.affine, str(ct), num_classes=4)
        assert not writes_to.exists() or not any(writes_to.iterdir()), "the bundle's saver ran under MONAI Label"

        # one epoch of training on the two labelled studies
        before = (deployed / "models" / "model.pt").stat().st_mtime_ns
        status, body = _http(
            f"{url}/train/{SERVER_BUNDLE}",
            "POST",
            json_body={"max_epochs": 1, "val_split": 0.5, "multi_gpu": False, "device": "cpu"},
        )
        assert status == 200, body[-2000:]
        deadline = time.monotonic() + 600
        task = {}
        while time.monotonic() < deadline:
            task = json.loads(_http(f"{url}/train/", timeout=30)[1])
            if task.get("status") in ("DONE", "ERROR", "STOPPED"):
                break
            time.sleep(2)
        details = "\n".join(task.get("details", [])[-60:])
        assert task.get("status") == "DONE", f"train task {task.get('status')}:\n{details}"
        assert (deployed / "models" / "checkpoint_epoch=1.pt").is_file(), details
        assert (deployed / "models" / "model.pt").stat().st_mtime_ns != before, "validation saved no model.pt"
    finally:
        _stop(proc)
    assert proc.poll() is not None
