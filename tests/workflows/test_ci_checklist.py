"""docs/operations.md's CI checklist, as a newcomer follows it: its commands in an order AWS
accepts (roles before the KMS keys whose policies name them, keys created as the key
administrator, stacks after their keys), and its one substitution step (tools/render-policies)
turning every template under policies/ into JSON with no placeholder left."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
OPERATIONS = REPO / "docs" / "operations.md"
RENDER = REPO / "tools" / "render-policies"
# What the committed templates used to hold for your values; none may survive rendering.
SAMPLE_VALUES = ("123456789012", "OWNER/REPO", "my-pulumi-state")


def checklist() -> str:
    text = OPERATIONS.read_text()
    start = text.index("### Checklist")
    return text[start:text.index("\n### ", start + 1)]


def commands() -> list[str]:
    """The checklist's shell lines, in order, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", checklist(), re.S)
    return [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def first(pattern: str) -> int:
    found = [i for i, line in enumerate(commands()) if re.search(pattern, line)]
    assert found, f"the checklist runs no {pattern!r}"
    return found[0]


def last(pattern: str) -> int:
    return max(i for i, line in enumerate(commands()) if re.search(pattern, line))


def test_the_checklist_renders_then_creates_roles_then_keys_then_stacks():
    render, keys = first(r"^tools/render-policies "), first(r"\baws kms create-key\b")
    assert render < first(r"\baws iam create-role\b")
    assert last(r"^create_role ") < keys, "KMS refuses a key policy naming a role that does not exist yet"
    assert keys < first(r"\bpulumi stack init dev\b") and keys < first(r"\bpulumi stack init prod\b")
    assert first(r"\bpulumi stack init\b") < first(r"\bgh variable set\b") < first(r"\bpulumi preview\b")


def test_the_keys_are_created_as_the_key_administrator_from_rendered_policies():
    kms = [line for line in commands() if re.search(r"\baws kms\b", line)]
    assert kms and all("--profile key-admin" in line for line in kms), kms
    files = [line for line in commands() if "file://" in line]
    assert files and all('file://$POLICIES/' in line for line in files), "pass the rendered copies, not the templates"


def test_every_role_a_key_policy_names_is_created_before_the_keys():
    created = {line.split()[1] for line in commands()[:first(r"\baws kms create-key\b")] if line.startswith("create_role ")}
    for path in POLICIES.glob("kms-*-key-policy.json"):
        named = set(re.findall(r":role/([\w+=,.@-]+)", path.read_text()))
        assert named and named <= created, f"{path.name}: {sorted(named - created)} not created first"


def test_every_policy_file_is_used_by_the_checklist():
    used = " ".join(commands())
    for path in POLICIES.glob("*.json"):
        stack = re.fullmatch(r"kms-(\w+)-key-policy\.json", path.name)
        if stack:
            assert "kms-$stack-key-policy.json" in used and re.search(rf"for stack in [\w ]*\b{stack[1]}\b", used)
        else:
            assert path.name in used, f"no step of the checklist uses {path.name}"


def run_documented_render(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Runs the checklist's step 1 (its export lines and the render call) as written."""
    step = [line for line in commands()[:first(r"^tools/render-policies ") + 1]
            if line.startswith(("export ", "tools/render-policies "))]
    script = "set -euo pipefail\n" + "\n".join(step) + '\nprintf "%s\\n" "$POLICIES"\nenv\n'
    done = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True,
                          env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    out, *env = done.stdout.splitlines()[1:]
    return Path(out), dict(line.split("=", 1) for line in env if "=" in line)


def test_the_documented_substitution_fills_every_placeholder(tmp_path):
    out, env = run_documented_render(tmp_path)
    assert out.is_relative_to(tmp_path)
    templates = sorted(p.name for p in POLICIES.glob("*.json"))
    assert sorted(p.name for p in out.glob("*.json")) == templates
    for name in templates:
        template, rendered = (POLICIES / name).read_text(), (out / name).read_text()
        assert "${" not in rendered and not any(s in rendered for s in SAMPLE_VALUES), name
        json.loads(rendered)
        for key in re.findall(r"\$\{(\w+)\}", template):
            assert env[key] in rendered, f"{name}: {key}"
    assert f"repo:{env['GITHUB_REPO']}:environment:prod" in (out / "deploy-prod-trust.json").read_text()


def test_every_placeholder_in_policies_is_one_the_step_sets():
    placeholders = {m for p in POLICIES.glob("*.json") for m in re.findall(r"\$\{(\w+)\}", p.read_text())}
    assert placeholders == {"ACCOUNT_ID", "GITHUB_REPO", "STATE_BUCKET", "KEY_ADMIN_ARN"}
    assert not any(s in p.read_text() for p in POLICIES.glob("*.json") for s in (*SAMPLE_VALUES, "role/KeyAdmins"))


VALUES = {"ACCOUNT_ID": "111122223333", "GITHUB_REPO": "acme/vllm-deploy", "STATE_BUCKET": "acme-state",
          "KEY_ADMIN_ARN": "arn:aws:iam::111122223333:role/KeyAdmins"}


@pytest.mark.parametrize(("key", "value"), [("GITHUB_REPO", ""), ("ACCOUNT_ID", "1234"),
                                            ("KEY_ADMIN_ARN", "KeyAdmins")])
def test_render_refuses_a_missing_or_malformed_value(tmp_path, key, value):
    env = {**VALUES, key: value, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([str(RENDER), str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and key in done.stderr
    assert not list((tmp_path / "out").glob("*.json")) if (tmp_path / "out").exists() else True


def test_render_fails_on_a_placeholder_it_does_not_know(tmp_path):
    (tmp_path / "tools").mkdir()
    (tmp_path / "policies").mkdir()
    (tmp_path / "tools" / "render-policies").write_bytes(RENDER.read_bytes())
    (tmp_path / "tools" / "render-policies").chmod(0o755)
    (tmp_path / "policies" / "new.json").write_text('{"Resource": "arn:aws:ssm:${AWS_REGION}:${ACCOUNT_ID}:x"}\n')
    done = subprocess.run([str(tmp_path / "tools" / "render-policies"), str(tmp_path / "out")],
                          capture_output=True, text=True, env={**VALUES, "PATH": "/usr/bin:/bin"})
    assert done.returncode != 0 and "${AWS_REGION}" in done.stderr and "new.json" in done.stderr
    assert not (tmp_path / "out" / "new.json").exists()


def test_render_policies_passes_shellcheck():
    shellcheck = Path(sys.executable).parent / "shellcheck"
    done = subprocess.run([str(shellcheck), "--severity=style", str(RENDER)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
