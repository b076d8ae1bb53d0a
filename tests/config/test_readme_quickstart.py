"""README's first screen is a quickstart a newcomer can follow (issue 30), and every command the
README and docs/ give runs as written: each tool it names exists and takes the options given,
each stack it plans has a stack file (or the same block makes one), each key a `--set` or
`pulumi config set` names is a stack key. The figures the quickstart quotes (dev's cost, its
expected start) are the ones the program computes for Pulumi.dev.yaml."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from config.settings import StackConfig
from tests.harness import ROOT, stack_config

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
STACK_KEYS = {f.alias for f in StackConfig.model_fields.values()} | {"apiKey", "hfToken", "modelscopeToken"}


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of each `## ` section, in order; code fences are not headings."""
    out, title, body, fence = [], "", [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and line.startswith("## "):
            out.append((title, "\n".join(body)))
            title, body = line[3:], []
        else:
            body.append(line)
    out.append((title, "\n".join(body)))
    return out


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"^ *```bash\n(.*?)^ *```", text, re.S | re.M)


def _commands(block: str) -> list[list[str]]:
    """Each command of a bash block as argv: continuation lines joined, comments dropped, `&&`
    chains split."""
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", "||", ";", "|"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
    return commands


def _all_commands() -> list[tuple[str, list[str], list[list[str]]]]:
    """(page, argv, the other commands of its block) for every command of README and docs/."""
    found = []
    for page in [README, *DOCS]:
        for block in _bash_blocks(page.read_text()):
            commands = _commands(block)
            found += [(page.relative_to(ROOT).as_posix(), argv, commands) for argv in commands]
    return found


def test_the_first_section_after_the_two_commands_is_what_they_need():
    sections = _sections(README.read_text())
    titles = [title for title, _ in sections[1:]]
    assert titles[0] == "Prerequisites" and titles[1].startswith("How long the first deploy takes"), titles[:3]
    needs = sections[1][1]
    for what in ("Pulumi CLI", "AWS credentials", "policies/", "tools/render-policies", "Outbound SSH",
                 "aws service-quotas get-service-quota --service-code ec2 --quota-code L-DB2E81BA",
                 "Running On-Demand G and VT instances", "L-3819A6DF", "passphrase"):
        assert what in needs, f"README's Prerequisites do not name {what!r}"


def test_the_quickstart_quotes_the_cost_and_start_the_program_computes_for_dev(program):
    quickstart = dict(_sections(README.read_text()))
    text = next(body for title, body in quickstart.items() if title.startswith("How long the first deploy"))
    exports = program(stack_config("dev"), stack="dev").exports
    cost = exports["costUsd"].value
    assert f"| running | ${cost['runningPerHour']:.4f} | ${cost['runningPerMonth']:,.2f} |" in text, cost
    assert f"| stopped (volumes and address only) | ${cost['stoppedPerHour']:.4f} | ${cost['stoppedPerMonth']:,.2f} |" in text
    assert f"`{exports['instanceType'].value}`" in text
    start = next(note for note in exports["sizing"].value["notes"] if "expected start:" in note)
    quoted = re.search(r"expected start: [^\n]*", text).group(0)
    assert quoted in start, f"README quotes {quoted!r}; the program says {start!r}"
    assert "not a measurement" in text


def test_the_tiers_are_named_with_their_times():
    tests = dict(_sections(README.read_text()))["Tests"]
    for tool in ("./tools/test", "./tools/test-cluster", "./tools/test-vllm", "./tools/test-real-vllm"):
        assert re.search(rf"^\| `{re.escape(tool)}`[^|]*\| \d+:\d\d", tests, re.M), f"no time for {tool}"
    assert "@@" not in README.read_text(), "a placeholder was left in README"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"^ *```.*?^ *```", "", page.read_text(), flags=re.S | re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", text, re.M)}


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_links_between_the_pages_resolve(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")) or target == "docs/tenants.md":
            continue  # docs/tenants.md is issue 29's page, written on its own branch
        name, _, anchor = target.partition("#")
        linked = (page.parent / name) if name else page
        assert linked.exists(), f"{page.name} links {target}, which is not there"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{page.name} links {target}: no such heading"


def test_every_tool_command_in_readme_and_docs_runs_as_written():
    from sizing.__main__ import _parser as size_parser

    size_options = {o for action in size_parser()._actions for o in action.option_strings}
    # plan/__main__.py builds its parser inside main(): its options, read from the source
    plan_options = set(re.findall(r'add_argument\("(--[\w-]+)"', (ROOT / "plan" / "__main__.py").read_text()))
    assert {"--json", "--set"} <= plan_options
    checked = 0
    for page, argv, block in _all_commands():
        tool = argv[0].removeprefix("./")
        if not tool.startswith("tools/"):
            continue
        checked += 1
        path = ROOT / tool
        assert path.is_file() and path.stat().st_mode & 0o111, f"{page}: {argv[0]} is not an executable tool"
        options = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")]
        if tool == "tools/size":
            assert set(options) <= size_options, f"{page}: {shlex.join(argv)}: {set(options) - size_options}"
        if tool == "tools/plan":
            assert set(options) <= plan_options, f"{page}: {shlex.join(argv)}: {set(options) - plan_options}"
            stack = next((a for a, prev in zip(argv[1:], argv) if not a.startswith("-") and prev != "--set"), "dev")
            made = any(c[:2] in (["pulumi", "stack"], ["cp", "Pulumi.dev.yaml"]) and (
                stack in c or f"Pulumi.{stack}.yaml" in c) for c in block)
            assert made or (ROOT / f"Pulumi.{stack}.yaml").exists(), f"{page}: {shlex.join(argv)}: no stack file"
            for key in (argv[i + 1].split("=", 1)[0] for i, a in enumerate(argv[:-1]) if a == "--set"):
                assert key in STACK_KEYS, f"{page}: {shlex.join(argv)}: {key} is not a stack key"
    assert checked >= 10, "the README and docs give tool commands"


def test_every_pulumi_config_set_names_a_stack_key():
    for page, argv, _ in _all_commands():
        if argv[:3] != ["pulumi", "config", "set"]:
            continue
        words = [a for a in argv[3:] if not a.startswith("--")]
        key = words[0].split("[", 1)[0].strip("'")
        if "--path" in argv:  # --path 'apiKeys.team-a.key': the stack key is the path's first part
            key = key.split(".", 1)[0]
        assert ":" in key or key in STACK_KEYS, f"{page}: {shlex.join(argv)}: {key} is not a stack key"
