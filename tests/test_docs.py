"""The documentation stays true to the code: README.md and docs/ link only to files and headings that exist,
every experiment command they show in a code block passes its --dry-run, and every script's --help keeps
its docstring's examples as written. No Ray starts here."""

import ast
import re
import shlex
import sys
from pathlib import Path

import pytest

from scripts import ROOT, SCRIPTS, run_main
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

FENCE = re.compile(r"^ {0,3}(```+|~~~+)\s*([\w+-]*)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}


def _text_and_blocks(page: Path) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The page's lines outside fenced code blocks, and each fenced block as (its language, its lines)."""
    prose, blocks, fence, block = [], [], None, None
    for line in page.read_text(encoding="utf-8").splitlines():
        opening = FENCE.match(line)
        if fence is None and opening:
            fence, block = opening.group(1), (opening.group(2).lower(), [])
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
            blocks.append(block)
            fence = None
        elif fence is not None:
            block[1].append(line)
        else:
            prose.append(line)
    return prose, blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without markup, lowercased, punctuation dropped but for
    hyphens, underscores and spaces, and spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a page, repeated headings numbered as GitHub numbers them (-1, -2, ...)."""
    found, seen = set(), {}
    for line in _text_and_blocks(page)[0]:
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            found.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return found


def links(page: Path) -> list[str]:
    """The targets of the page's links and images, outside code (blocks and inline spans)."""
    prose = re.sub(r"`[^`]*`", "", "\n".join(_text_and_blocks(page)[0]))
    return [target for target in LINK.findall(prose) if target]


def test_slugs_follow_github():
    assert slug("Validation and test splits") == "validation-and-test-splits"
    assert slug("Splits, labels and preprocessing") == "splits-labels-and-preprocessing"
    assert slug("Bits/dim") == "bitsdim"
    assert slug("The `--resume` flag") == "the---resume-flag"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    problems = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...: not checked here
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{target}: no file {file.relative_to(ROOT) if ROOT in file.parents else file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
        elif anchor and file.suffix != ".md":
            problems.append(f"{target}: an anchor into a file that is not Markdown")
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_the_readme_keeps_its_two_commands_and_the_fast_loop():
    """.ci/run calls the second command; the README shows it verbatim, in a code block."""
    blocks = [line.strip() for _, lines in _text_and_blocks(ROOT / "README.md")[1] for line in lines]
    assert 'pip install -e ".[fid]" && python experiments/sweep_ddpm.py' in blocks
    assert 'pip install -e ".[dev]" && pytest' in blocks
    assert 'pytest -m "not ray" -n 2' in blocks
    assert 'pip install -e ".[dev]" && pytest' in (ROOT / ".ci" / "run").read_text()


# ---------------------------------------------------------------------------------------------------------
# The commands shown in the docs, dry-run

# Commands that cannot be dry-run even after the substitutions below: {command, as its test id writes it
# (shlex.join): why}. Empty today; each entry must still be shown somewhere, so the list cannot go stale.
CANNOT_DRY_RUN: dict[str, str] = {}

SEPARATORS = {"&&", "||", ";", "|"}


def shown_commands() -> list[tuple[str, list[str]]]:
    """Every `python experiments/...` command in a shell (or plain) code block of README.md and docs/, as
    (the command as shown, its arguments after the script), once each: continuation lines joined, comments
    dropped, a command after `&&` or `;` found too; other commands (pip, ray submit, kubectl) skipped."""
    found = {}
    for page in PAGES:
        for language, lines in _text_and_blocks(page)[1]:
            if language not in SHELL_BLOCKS:
                continue
            for line in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines():
                if not re.search(r"(^|&&|;|\|)\s*(\$\s*)?python3?\s+experiments/", line):
                    continue
                words = shlex.split(line, comments=True)
                commands, current = [], []
                for word in words:
                    if word in SEPARATORS:
                        commands.append(current)
                        current = []
                    else:
                        current.append(word)
                commands.append(current)
                for command in commands:
                    command = command[1:] if command[:1] == ["$"] else command
                    if len(command) >= 2 and re.fullmatch(r"python3?", command[0]) and \
                            command[1].startswith("experiments/"):
                        found.setdefault(shlex.join(command), command[1:])
    return sorted(found.items())


COMMANDS = shown_commands()


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    """A small file or folder in each real dataset's format, written by the export tool on first use."""
    from condgen_bench.datasets import export

    made, root = {}, tmp_path_factory.mktemp("datasets")

    def path_for(dataset: str, shown: str) -> str:
        form = {"fer2013": "fer2013-csv" if shown.endswith(".csv") else "fer2013-folders",
                "ckplus": "ckplus", "imagefolder": "imagefolder"}.get(dataset)
        assert form, f"--data-root {shown} for dataset {dataset!r}: no export format to stand in for it"
        if form not in made:
            made[form] = str(root / ("fer2013.csv" if form == "fer2013-csv" else form))
            export.export(form, made[form], identities=10)
        return made[form]

    return path_for


def runnable(argv: list[str], storage: Path, data_path) -> list[str]:
    """The arguments with what needs a cluster or real data replaced: `--address` dropped (no Ray is
    joined), an s3:// or gs:// storage path or cache folder replaced by a local folder, and each
    `--data-root` replaced by a small file in the format of the `--dataset` before it (the synthetic faces
    written by condgen_bench.datasets.export)."""
    out, dataset, i = [], "synthetic_faces", 0
    while i < len(argv):
        word = argv[i]
        flag, _, inline = word.partition("=")
        value = inline if inline else (argv[i + 1] if i + 1 < len(argv) else "")
        step = 1 if inline or not word.startswith("--") else 2
        if flag == "--address":
            i += step
            continue
        if flag == "--dataset":
            dataset = value
        if flag == "--data-root":
            out += ["--data-root", data_path(dataset, value)]
            i += step
            continue
        if flag in ("--storage-path", "--cache-dir") and re.match(r"(s3|gs)://", value):
            out += [flag, str(storage / flag.strip("-"))]
            i += step
            continue
        assert not re.match(r"(s3|gs)://", word), f"a bucket outside --storage-path / --cache-dir: {word}"
        out.append(word)
        i += 1
    return out


def run_script(script: Path, argv: list[str], capsys) -> tuple[int | str, str, str]:
    """Run an experiment script's main in this process (as `python experiments/x.py ARGV` would), returning
    its exit code, stdout and stderr."""
    code = run_main(script, argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_docs_show_experiment_commands_and_the_allow_list_is_current():
    shown = [command for command, _ in COMMANDS]
    assert any(command.startswith("python experiments/sweep_ddpm.py") for command in shown)
    assert any("--address" in command for command in shown)  # the cluster command is among them
    stale = sorted(set(CANNOT_DRY_RUN) - set(shown))
    assert not stale, f"CANNOT_DRY_RUN lists commands no page shows any more: {stale}"


@pytest.fixture
def one_thread():
    """One torch thread while a dry run builds its networks: tiny steps gain nothing from two, and two
    spinning OpenMP threads slow to a crawl while another process holds the cores (see conftest.py)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("command,argv", COMMANDS, ids=[c for c, _ in COMMANDS])
def test_every_command_shown_passes_its_dry_run(command, argv, data_files, one_thread, tmp_path, monkeypatch,
                                                capsys):
    """The command as shown, with --dry-run added, exits 0. Changed to run here: no `--address` (no cluster
    is joined and no Ray starts), a local folder for an s3:// or gs:// storage path, a small file in the
    real format for a --data-root. The dry run's timing of a training step and a batch of samples (the
    wall-time estimate's prices) is replaced by fixed costs: that is not what this test checks, and at the
    cluster command's 48 px it takes half a minute on 2 cores."""
    if command in CANNOT_DRY_RUN:
        pytest.skip(CANNOT_DRY_RUN[command])
    from condgen_bench.harness import estimate

    monkeypatch.setattr(estimate, "measure", lambda *args, **kwargs: estimate.Costs(0.1, 0.01))
    ray_before = sys.modules.get("ray") is not None and sys.modules["ray"].is_initialized()  # the session's Ray
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)  # a relative path in a command lands here
    script, args = argv[0], runnable(argv[1:], tmp_path, data_files)
    code, out, err = run_script(ROOT / script, [*args, *([] if "--dry-run" in args else ["--dry-run"])], capsys)
    assert code == 0, f"{command}\n(run as {script} {shlex.join(args)} --dry-run) exited {code}:\n{err[-2000:]}"
    assert out.lstrip().startswith(("{", "[")), out[:500]  # the resolved config, as JSON
    ray = sys.modules.get("ray")
    assert ray_before or ray is None or not ray.is_initialized(), "a dry run started Ray"


# ---------------------------------------------------------------------------------------------------------
# --help


def example_lines(script: Path) -> list[str]:
    """The example command lines of a script's docstring (`python ...`, with their continuation lines)."""
    doc = ast.get_docstring(ast.parse(script.read_text()), clean=False) or ""
    lines, continued = [], False
    for line in doc.splitlines():
        if line.strip().startswith("python ") or continued:
            lines.append(line.rstrip())
            continued = line.rstrip().endswith("\\")
    return lines


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_help_keeps_the_docstring_examples_and_shows_only_real_defaults(script, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = run_script(script, ["--help"], capsys)
    assert code == 0
    examples = example_lines(script)
    assert examples, f"{script.name}: its docstring shows no example command"
    # in the source, a continuation is written \\ (a lone \ at a line's end would join the two lines)
    node = ast.parse(script.read_text()).body[0]
    source = script.read_text().splitlines()[node.lineno - 1:node.end_lineno]
    joined = [line for line in source if re.search(r"(?<!\\)(\\\\)*\\$", line)]
    assert not joined, f"{script.name}: a lone backslash ends these docstring lines: {joined}"
    printed = [line.rstrip() for line in out.splitlines()]
    missing = [line for line in examples if line not in printed]
    assert not missing, f"{script.name} --help changed these example lines: {missing}"
    for nothing in ("(default: None)", "(default: False)", "(default: [])", "(default: )"):
        assert nothing not in out, f"{script.name} --help shows {nothing}"


def test_help_shows_a_real_default():
    from condgen_bench.harness.cli import build_parser

    parser = build_parser("x")
    parser.add_argument("--steps", type=int, default=3, help="steps")
    parser.add_argument("--fast", action="store_true", help="fast")
    text = parser.format_help()
    assert "steps (default: 3)" in text and "fast (default" not in text
