"""The bundles are presets of one recipe: ``recipes/template/`` plus one small delta per bundle.

Layout (at the repository root)::

    recipes/template/      train.json, demo.json, inference.json, evaluate.json, multi_gpu_train.json,
                           metadata.json, logging.conf: the shared skeleton (the nnU-Net baseline's recipe;
                           metadata.json holds the shared fields, with blanks that every bundle fills in)
    recipes/families/X.json  a delta shared by a family of bundles (``lits``: the 2D/3D liver-then-tumour pipeline)
    recipes/<bundle>.json  one bundle: ``{"extends": family (optional), "<file>.json": {id: value, ...}, ...}``

Two files are optional, written only for the bundles whose delta (or family) names them (``{}`` for no change):
``inference_fast.json`` (the coarse-to-fine CPU overlay) and ``localizer.json``, a whole training config: the
template's ``train.json`` with ``recipes/template/localizer.json`` applied as a delta (the same small localizer
for every bundle) and the bundle's own dataset and classes (``INHERITED_KEYS`` of its ``train.json``), then the
bundle's own ``"localizer.json"`` entries.

A delta for one file maps MONAI config ids (``#`` between levels, list positions as numbers) to values, applied to
the raw (unparsed) JSON in order, family first:

- ``"id": value`` sets the item (MONAI's ``ConfigParser[id] = value``); an existing key keeps its place;
- ``"+id": [...]`` / ``{...}`` extends the list / updates the dict (MONAI's ``+`` merge key);
- ``"-id": null`` removes the item;
- a key new to its dict lands right after the key the delta named before it at the same level (for a removed key:
  in its slot), else at the end of the dict.

``effseg bundles`` writes ``bundles/<bundle>/configs/`` from these (JSON: 4-space indent, lists of scalars on one
line when they fit in 120 columns); ``effseg bundles --check`` compares byte for byte and exits 1 on a difference.
Only ``configs/`` is generated; docs, licences and ``large_files.yml`` stay hand-written.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONFIG_FILES = ("metadata.json", "train.json", "demo.json", "inference.json", "evaluate.json",
                "multi_gpu_train.json", "logging.conf", "inference_fast.json", "localizer.json")  # fmt: skip
OPTIONAL_FILES = ("inference_fast.json", "localizer.json")
DERIVED_FILES = {"localizer.json": "train.json"}  # file -> the template file it is a delta of
# what a derived file takes from the bundle's own rendered base file: the data and the classes it trains on
INHERITED_KEYS = ("dataset_dir", "dataset_layout", "num_classes", "eval_protocol", "val_fraction", "exclude_cases")
WIDTH = 120
_START = object()  # cursor: insert at the beginning of a dict


# ---------------------------------------------------------------------------------------------------------------
# applying a delta
# ---------------------------------------------------------------------------------------------------------------
def _locate(config: Any, id_: str) -> tuple[Any, str]:
    """(container, key) that ``id_`` names. Each level takes the longest ``#``-joined run of parts that is a key
    there, so the flat id keys of an overlay such as ``multi_gpu_train.json`` (``"train#dataloader#sampler"``) are
    found as written; an id that names no existing container is a (new) key of the deepest one found."""
    parts, node = id_.split("#"), config
    while len(parts) > 1 and not (isinstance(node, dict) and "#".join(parts) in node):
        for j in range(len(parts) - 1, 0, -1):
            head = "#".join(parts[:j])
            child = (
                node[int(head)]
                if isinstance(node, list) and head.isdigit()
                else (node.get(head) if isinstance(node, dict) else None)
            )
            if isinstance(child, (dict, list)):
                node, parts = child, parts[j:]
                break
        else:
            break
    return node, "#".join(parts)


def _insert(d: dict, key: str, value: Any, after: Any) -> None:
    """Insert ``key`` into ``d`` after the key ``after`` (``_START``: first; ``None``: last), in place."""
    if after is None or (after is not _START and after not in d):
        d[key] = value
        return
    items = list(d.items())
    at = 0 if after is _START else [k for k, _ in items].index(after) + 1
    items.insert(at, (key, value))
    d.clear()
    d.update(items)


def apply_delta(config: Any, delta: dict) -> Any:
    """``config`` (a raw JSON structure, not modified) with ``delta``'s entries applied in order."""
    config = copy.deepcopy(config)
    cursor: dict[int, tuple[dict, Any]] = {}  # id() of a dict -> (that dict, the key after which a new key lands)
    for raw_id, value in delta.items():
        op, id_ = (raw_id[0], raw_id[1:]) if raw_id[:1] in "+-" else ("=", raw_id)
        parent, key = _locate(config, id_)
        parent_id = id(parent)
        if isinstance(parent, list):
            index = int(key)
            if op == "-":
                del parent[index]
            elif op == "+":
                _merge(parent[index], value, raw_id)
            else:
                parent[index] = copy.deepcopy(value)
            continue
        if op == "-":
            if key not in parent:
                raise KeyError(f"recipe delta {raw_id!r}: no {id_!r} to remove")
            keys = list(parent)
            at = keys.index(key)
            cursor[parent_id] = (parent, keys[at - 1] if at else _START)
            del parent[key]
        elif op == "+" and key in parent:
            _merge(parent[key], value, raw_id)
            cursor[parent_id] = (parent, key)
        elif key in parent:
            parent[key] = copy.deepcopy(value)
            cursor[parent_id] = (parent, key)
        else:
            owner, after = cursor.get(parent_id, (None, None))
            _insert(parent, key, copy.deepcopy(value), after if owner is parent else None)
            cursor[parent_id] = (parent, key)
    return config


def _merge(target: Any, value: Any, raw_id: str) -> None:
    if isinstance(target, list) and isinstance(value, list):
        target.extend(copy.deepcopy(value))
    elif isinstance(target, dict) and isinstance(value, dict):
        target.update(copy.deepcopy(value))
    else:
        raise ValueError(f"recipe delta {raw_id!r}: '+' needs a list or dict on both sides")


# ---------------------------------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------------------------------
def format_json(obj: Any) -> str:
    """4-space JSON; a list of scalars stays on one line when that line fits in ``WIDTH`` columns."""
    return _format(obj, 0, 0) + "\n"


def _format(obj: Any, indent: int, used: int) -> str:
    pad, inner = " " * indent, " " * (indent + 4)
    if isinstance(obj, dict) and obj:
        items = [f'{inner}{json.dumps(k, ensure_ascii=False)}: '
                 f'{_format(v, indent + 4, indent + 6 + len(json.dumps(k, ensure_ascii=False)))}'
                 for k, v in obj.items()]  # fmt: skip
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj:
        if not any(isinstance(x, (dict, list)) for x in obj):
            line = "[" + ", ".join(json.dumps(x, ensure_ascii=False) for x in obj) + "]"
            if used + len(line) + 1 <= WIDTH:
                return line
        return "[\n" + ",\n".join(inner + _format(x, indent + 4, indent + 4) for x in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------------------
# recipes -> bundle folders
# ---------------------------------------------------------------------------------------------------------------
def recipe_names(recipes: Path) -> list[str]:
    return sorted(p.stem for p in recipes.glob("*.json"))


def render(name: str, recipes: Path) -> dict[str, str]:
    """The text of every file of ``bundles/<name>/configs/``."""
    deltas = [json.loads((recipes / f"{name}.json").read_text(encoding="utf-8"))]
    while "extends" in deltas[0]:
        deltas.insert(
            0, json.loads((recipes / "families" / f"{deltas[0]['extends']}.json").read_text(encoding="utf-8"))
        )
    out = {}
    for file in CONFIG_FILES:
        if file in OPTIONAL_FILES and not any(file in delta for delta in deltas):
            continue
        text = (recipes / "template" / file).read_text(encoding="utf-8")
        if not file.endswith(".json"):
            out[file] = text
            continue
        config = json.loads(text)
        if file in DERIVED_FILES:
            base = json.loads((recipes / "template" / DERIVED_FILES[file]).read_text(encoding="utf-8"))
            own = json.loads(out[DERIVED_FILES[file]])
            config = apply_delta(base, {**config, **{k: own[k] for k in INHERITED_KEYS if k in own}})
        for delta in deltas:
            config = apply_delta(config, delta.get(file, {}))
        out[file] = format_json(config)
    return out


def sync(root: Path = REPO, check: bool = False) -> list[str]:
    """Write (or with ``check``, compare) every bundle's configs; returns the files that differ (were written), and
    any other file in a bundle's ``configs/`` (never deleted here)."""
    recipes, differ = root / "recipes", []
    for name in recipe_names(recipes):
        configs = root / "bundles" / name / "configs"
        # a config no recipe makes (delete it, or add it to the template)
        rendered = render(name, recipes)
        differ += [str(p.relative_to(root)) + " (not generated)" for p in sorted(configs.glob("*"))
                   if p.name not in rendered and p.is_file()]  # fmt: skip
        for file, text in rendered.items():
            path = root / "bundles" / name / "configs" / file
            if path.is_file() and path.read_text(encoding="utf-8") == text:
                continue
            differ.append(str(path.relative_to(root)))
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    return differ


def recipe_lines(root: Path = REPO) -> int:
    """Lines of the template, the families and the deltas."""
    files = [p for p in (root / "recipes").rglob("*") if p.is_file() and p.suffix in (".json", ".conf")]
    return sum(len(p.read_text(encoding="utf-8").splitlines()) for p in files)
