"""Tool calling against the installed vLLM 0.33.0 (the conformance tier's venv): every parser
the family catalog (serving/catalog/tool_parsers.json) names is registered in vLLM's own
ToolParserManager / ReasoningParserManager, the registry copy the program checks names against
(serving/vllm-facts.json) is the installed one, and the path-flag list
(serving/vllm-path-flags.json) is what tools/dump_path_flags.py reads from the installed source.

The argv with a tool parser (and an example chat template) is judged by vLLM's parser and
engine config in the corpus (tests/conformance/corpus.py, the `tools-*` cases).

Run: ./tools/test-vllm -k tool_parsers. `./tools/test` skips it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from serving.tool_calling import catalog
from serving.vllm_flags import vllm_facts
from tests.conformance import vllm_runner

pytestmark = pytest.mark.vllm_conformance

ROOT = Path(__file__).resolve().parents[2]

# Imports vLLM's registries as `vllm serve` has them (the two torchvision registrations the
# harness stubs for the CPU torch: tests/conformance/vllm_harness/fake_cuda.py).
_REGISTERED = """
import json, sys, types
for m in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules.setdefault(m, types.ModuleType(m))
from vllm.tool_parsers import ToolParserManager
from vllm.reasoning import ReasoningParserManager
import vllm
print(json.dumps({"tool": sorted(ToolParserManager.list_registered()),
                  "reasoning": sorted(ReasoningParserManager.list_registered()),
                  "site": str(Path(vllm.__file__).parent.parent)}))
""".replace("import json, sys, types", "import json, sys, types\nfrom pathlib import Path")


@pytest.fixture(scope="module")
def registered() -> dict:
    problem = vllm_runner.venv_problem()
    if problem:
        pytest.fail(problem)
    done = subprocess.run([str(vllm_runner.venv() / "bin" / "python"), "-c", _REGISTERED],
                          capture_output=True, text=True, timeout=600, cwd="/tmp")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_tool_parsers_every_catalog_parser_is_registered_in_vllm(registered):
    for rule in catalog()["rules"]:
        assert rule["toolCallParser"] in registered["tool"] + [None], rule
        assert rule["reasoningParser"] in registered["reasoning"] + [None], rule


def test_tool_parsers_the_programs_registry_copy_is_vllms(registered):
    assert sorted(vllm_facts()["tool_parsers"]) == registered["tool"]
    assert sorted(vllm_facts()["reasoning_parsers"]) == registered["reasoning"]
    assert "qwen3" not in registered["tool"]  # P21: a name users guess, refused at preview


def test_tool_parsers_path_flags_are_what_the_installed_source_says(registered):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "dump_path_flags.py"),
                           registered["site"], "--check"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
