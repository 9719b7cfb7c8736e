"""Documentation conformance (model zoo conventions): every bundle's docs/README.md has the zoo template's sections
and commands that match its configs, docs/data_license.txt names the dataset's licence, large_files.yml follows the
zoo's format; every relative link in the repository's Markdown resolves; the snippets of docs/own_workflow.md run."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
BUNDLE_IDS = [p.name for p in BUNDLES]

# The model zoo's README sections (docs/readme_template.md and the zoo's bundles), plus our deviations section.
TEMPLATE_SECTIONS = [
    "Model Overview",
    "Data",
    "Training configuration",
    "Training commands",
    "Inference commands",
    "Performance",
    "Deviations from the paper",
    "MONAI Label usage",
    "References",
    "License",
]

# Dataset of a bundle (from its evaluation protocol) -> words its data_license.txt must contain.
DATASETS = {"kits": ("KiTS",), "lits": ("LiTS",)}
LICENCE = "CC BY-NC-SA 4.0"

# Options of `python -m monai.bundle run` / `ckpt_export` and of torchrun, i.e. not config ids.
CLI_OPTIONS = {"config_file", "meta_file", "bundle_root", "logging_file", "filepath", "ckpt_file", "net_id",
               "nproc_per_node", "nnodes", "standalone", "master_port"}  # fmt: skip

# Pages linked before they are written: their links only warn. Every linked page exists now, so links must resolve.
PENDING_PAGES: set[str] = set()

MARKDOWN_FILES = sorted(
    [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(b / "docs" / "README.md" for b in BUNDLES)],
    key=lambda p: str(p),
)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def dataset_of(bundle: Path) -> str:
    protocol = str(read_json(bundle / "configs" / "train.json").get("eval_protocol", ""))
    return "lits" if protocol.startswith("lits") else "kits"


def strip_code(text: str) -> str:
    """Markdown without fenced code blocks and inline code spans (links there are examples, not links)."""
    text = re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def code_blocks(text: str, lang: str | None = None) -> list[str]:
    blocks = re.findall(r"^```([\w-]*)\n(.*?)^```", text, flags=re.S | re.M)
    return [body for kind, body in blocks if lang is None or kind == lang]


def headings(text: str) -> list[tuple[int, str]]:
    """(level, title) of every ATX heading outside code blocks."""
    out = []
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        match = None if in_code else re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match:
            out.append((len(match.group(1)), match.group(2)))
    return out


def github_slug(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped (``-`` and ``_`` kept), spaces to hyphens."""
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link in a heading anchors on its text
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, title in headings(path.read_text(encoding="utf-8")):
        slug = github_slug(title)
        count = seen.get(slug, 0)
        found.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return found


def links(text: str) -> list[str]:
    """Targets of inline Markdown links and images, outside code."""
    return [
        m.group(1) for m in re.finditer(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", strip_code(text))
    ]


def bundle_commands(text: str) -> list[str]:
    """Command lines of ``python -m monai.bundle`` and ``torchrun`` in the code blocks (continuations joined)."""
    commands = []
    for block in code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"^[A-Z_]+=\S+\s+", "", line.strip())  # env assignments, e.g. OMP_NUM_THREADS=1
            if line.startswith(("python -m monai.bundle", "torchrun")):
                commands.append(line)
    return commands


@pytest.fixture(params=BUNDLES, ids=BUNDLE_IDS)
def bundle(request) -> Path:
    return request.param


def test_every_bundle_is_documented():
    assert len(BUNDLES) == 9, BUNDLE_IDS
    index = (REPO / "docs" / "bundles.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for b in BUNDLE_IDS:
        assert f"../bundles/{b}/docs/README.md" in index, f"docs/bundles.md does not link {b}"
        assert f"bundles/{b}/docs/README.md" in readme, f"README.md's Documentation does not link {b}"


def test_readme_has_the_zoo_template_sections(bundle):
    text = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    found = headings(text)
    assert found and found[0][0] == 1, "the page must start with a '# <model title>' heading"
    sections = [title for level, title in found if level == 2]
    missing = [s for s in TEMPLATE_SECTIONS if s not in sections]
    assert not missing, f"{bundle.name}/docs/README.md lacks sections {missing}"
    order = [sections.index(s) for s in TEMPLATE_SECTIONS]
    assert order == sorted(order), f"sections out of the template's order: {sections}"


def test_readme_commands_match_the_configs(bundle):
    text = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    commands = bundle_commands(text)
    joined = "\n".join(commands)
    # the zoo's command set: train, demo overlay, multi-GPU overlay with torchrun, inference, evaluation, export
    assert "python -m monai.bundle run --config_file configs/train.json" in joined
    assert "python -m monai.bundle run --config_file \"['configs/train.json','configs/demo.json']\"" in joined
    assert re.search(r"^torchrun .*-m monai\.bundle run --config_file \"\['configs/train\.json','configs/multi_gpu_train\.json'\]\"",
                     joined, flags=re.M), "no torchrun command with the multi_gpu_train.json overlay"  # fmt: skip
    assert "python -m monai.bundle run --config_file configs/inference.json --input_dir" in joined
    assert "--config_file \"['configs/inference.json','configs/evaluate.json']\"" in joined
    assert "python -m monai.bundle ckpt_export network_def" in joined

    configs = {p.name for p in (bundle / "configs").glob("*.json")}
    mentioned = set(re.findall(r"configs/([\w.-]+\.json)", text))
    assert mentioned <= configs, f"{bundle.name}/docs/README.md names missing configs {sorted(mentioned - configs)}"

    ids: set[str] = set()
    for name in ("train.json", "demo.json", "inference.json", "evaluate.json", "multi_gpu_train.json"):
        ids |= set(read_json(bundle / "configs" / name))
    default_dataset = read_json(bundle / "configs" / "train.json")["dataset_dir"]
    for command in commands:
        for option, value in re.findall(r"--([A-Za-z_][\w#]*)(?:[ =](\S+))?", command):
            if option in CLI_OPTIONS:
                continue
            assert option.split("#")[0] in ids, f"{bundle.name}: `--{option}` in `{command}` is no config id"
            if option == "dataset_dir":
                assert value == default_dataset, f"{bundle.name}: --dataset_dir {value} vs train.json {default_dataset}"


def monailabel_server_commands(text: str) -> list[str]:
    """``monailabel start_server`` command lines in the code blocks (continuations joined)."""
    lines = [line.strip() for block in code_blocks(text) for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if re.match(r"^(monailabel|python -m monailabel\.main) start_server\b", line)]


@pytest.mark.parametrize("page", [*(b / "docs" / "README.md" for b in BUNDLES), REPO / "docs" / "monailabel.md"],
                         ids=[*BUNDLE_IDS, "monailabel.md"])  # fmt: skip
def test_monailabel_commands_serve_loopback_without_sam2(page):
    """As docs/monailabel.md: bind the loopback address (MONAI Label's default is 0.0.0.0) and switch SAM2 off (else
    the server downloads its weights at start)."""
    commands = monailabel_server_commands(page.read_text(encoding="utf-8"))
    assert commands, f"{page.relative_to(REPO)} has no MONAI Label start_server command"
    for command in commands:
        assert re.search(r"--host 127\.0\.0\.1(\s|$)", command) and "--conf sam2 false" in command, command
        if page.name == "README.md":
            assert f"--conf models {page.parents[1].name}" in command, command


def test_readme_points_to_benchmarks_and_deviations(bundle):
    text = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    performance = text.split("## Performance", 1)[1].split("\n## ", 1)[0]
    assert "../../../docs/benchmarks.md" in performance, "Performance must point to docs/benchmarks.md"
    deviations = text.split("## Deviations from the paper", 1)[1].split("\n## ", 1)[0]
    assert "../../../docs/deviations.md" in deviations
    assert deviations.count("\n- ") >= 3, "list the bundle's deviations from its paper"


def test_data_license_names_the_dataset_licence(bundle):
    path = bundle / "docs" / "data_license.txt"
    assert path.is_file(), f"{bundle.name} lacks docs/data_license.txt"
    text = path.read_text(encoding="utf-8")
    assert LICENCE in text
    kind = dataset_of(bundle)
    for word in DATASETS[kind]:
        assert word in text, f"{bundle.name}/docs/data_license.txt does not name {word}"
    other = "lits" if kind == "kits" else "kits"
    for word in DATASETS[other]:
        assert word not in text, f"{bundle.name}/docs/data_license.txt names {word}, not its dataset"


def test_large_files_yml(bundle):
    path = bundle / "large_files.yml"
    assert path.is_file(), f"{bundle.name} lacks large_files.yml"
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = spec["large_files"]
    assert isinstance(entries, list) and entries
    for entry in entries:
        assert set(entry) == {"path", "url", "hash_val", "hash_type"}, entry
        assert all(isinstance(v, str) for v in entry.values()), entry
        assert entry["hash_type"] in ("", "md5", "sha1", "sha256", "sha512"), entry
        if not entry["url"]:  # nothing published: no hash may be claimed either
            assert entry["hash_val"] == "" and entry["hash_type"] == "", entry
    assert "models/model.pt" in [e["path"] for e in entries]


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=[str(p.relative_to(REPO)) for p in MARKDOWN_FILES])
def test_relative_links_resolve(path):
    problems, pending = [], []
    for target in links(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            rel = resolved.relative_to(REPO).as_posix() if resolved.is_relative_to(REPO) else str(resolved)
            (pending if rel in PENDING_PAGES else problems).append(target)
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target} (no heading with that anchor)")
    assert not problems, f"{path.relative_to(REPO)}: broken links {problems}"
    if pending:
        warnings.warn(f"{path.relative_to(REPO)} links pages not written yet: {sorted(set(pending))}", stacklevel=1)


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=[str(p.relative_to(REPO)) for p in MARKDOWN_FILES])
def test_no_unfilled_placeholders(path):
    leftovers = re.findall(r"\b[A-Z][A-Z0-9_]*_PLACEHOLDER\b|\bTODO\b|\bTBD\b", path.read_text(encoding="utf-8"))
    assert not leftovers, f"{path.relative_to(REPO)} still has {sorted(set(leftovers))}"


def test_docs_pages_link_each_other():
    docs = REPO / "docs"
    architecture = (docs / "architecture.md").read_text(encoding="utf-8")
    assert code_blocks(architecture, "mermaid"), "architecture.md needs its mermaid diagram"
    for b in BUNDLE_IDS:
        assert f"[{b}](../bundles/{b}/docs/README.md)" in architecture, f"architecture.md's table lacks {b}"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Documentation", 1)[1]
    for page in ("bundles", "architecture", "own_workflow", "multi_gpu", "deviations", "evaluation"):
        assert f"(docs/{page}.md)" in section, f"README.md's Documentation section lacks docs/{page}.md"
    assert "<!-- test-command -->" in readme and "<!-- /test-command -->" in readme


OWN_WORKFLOW = REPO / "docs" / "own_workflow.md"
SNIPPETS = code_blocks(OWN_WORKFLOW.read_text(encoding="utf-8"), "python") if OWN_WORKFLOW.is_file() else []


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_own_workflow_snippet_runs(index, monkeypatch):
    monkeypatch.chdir(REPO)  # the snippets are written to run from the repository root
    code = compile(SNIPPETS[index], f"docs/own_workflow.md[python block {index}]", "exec")
    exec(code, {"__name__": "__own_workflow__"})
