"""Paths the vLLM container can see: every flag of the pinned vLLM that takes a file or
directory, checked against the container's mounts (the model directory and the image's
examples), and the function the LoRA/draft checks reuse."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from serving.container_paths import (
    IMAGE_EXAMPLES_DIR,
    ContainerPathError,
    Mount,
    check_container_path,
    model_mounts,
    path_flags,
)
from serving.vllm_flags import flag_catalog
from tests.serving.test_extra_args import only, problems

REPO = Path(__file__).resolve().parents[2]
MOUNTS = model_mounts("/models/served")


def test_a_path_under_a_mount_resolves_as_vllm_opens_it():
    assert check_container_path("--chat-template", "/models/served/t.jinja", MOUNTS) == "/models/served/t.jinja"
    # relative paths are opened from the image's WORKDIR, as vLLM's docs write them
    assert check_container_path("--chat-template", "examples/tool_chat_template_hermes.jinja", MOUNTS) == (
        f"{IMAGE_EXAMPLES_DIR}/tool_chat_template_hermes.jinja")


@pytest.mark.parametrize("path", ["/home/me/t.jinja", "/models/served/../etc/t.jinja", "t.jinja", "/models/servedX/t"])
def test_a_path_outside_every_mount_is_refused_naming_flag_path_and_fix(path):
    with pytest.raises(ContainerPathError) as caught:
        check_container_path("--tool-parser-plugin", path, MOUNTS)
    message = str(caught.value)
    assert "--tool-parser-plugin" in message and repr(path) in message
    assert "cannot see" in message and "/models/served/<name>" in message


def test_a_file_flag_naming_the_mount_itself_is_refused():
    with pytest.raises(ContainerPathError, match="not a file"):
        check_container_path("--chat-template", "/models/served/", MOUNTS)
    assert check_container_path("--tokenizer", "/models/served", MOUNTS, kind="directory") == "/models/served"


def test_a_path_vllm_writes_needs_a_writable_mount():
    with pytest.raises(ContainerPathError, match="read-only"):
        check_container_path("--download-dir", "/models/served/cache", MOUNTS, kind="directory", written=True)
    writable = (Mount("/scratch", "a scratch volume", writable=True),)
    assert check_container_path("--download-dir", "/scratch/x", writable, kind="directory", written=True) == "/scratch/x"


def test_path_flags_come_from_the_pinned_flag_catalog():
    flags = path_flags()
    catalog = flag_catalog()
    assert all(flag in catalog and catalog[flag].takes_value for flag in flags)
    # what the old hand-written list had is still covered, and more
    for flag in ("--chat-template", "--tool-parser-plugin", "--reasoning-parser-plugin",
                 "--generation-config", "--tokenizer", "--hf-config-path"):
        assert flag in flags
    assert {"--allowed-local-media-path", "--mm-encoder-fp8-scale-path", "--download-dir"} <= set(flags)
    assert flags["--download-dir"].written and flags["--tokenizer"].kind == "directory"


def test_every_catalog_flag_named_like_a_path_is_checked_or_excluded_with_a_reason():
    import json
    data = json.loads((REPO / "serving" / "vllm-path-flags.json").read_text())
    named = {f for f, spec in flag_catalog().items()
             if f.startswith("--") and spec.takes_value and spec.name == f
             and re.search(r"-(path|dir|file|certs|certfile|keyfile|plugin)$", f)}
    assert named <= set(data["path_flags"]) | set(data["not_container_paths"])


@pytest.mark.parametrize("flag", ["--allowed-local-media-path", "--mm-encoder-fp8-scale-path", "--hf-config-path"])
def test_vllm_extra_args_path_flags_beyond_the_old_list_are_checked(flag):
    problem = only([flag, "/data/x"])
    assert flag in problem and "'/data/x'" in problem and "cannot see" in problem


def test_the_images_example_templates_are_accepted_in_vllm_extra_args():
    """The report: the product refused the example templates vLLM's tool parsers point at."""
    for path in (f"{IMAGE_EXAMPLES_DIR}/tool_chat_template_llama3.1_json.jinja",
                 "examples/tool_chat_template_mistral_parallel.jinja"):
        assert problems(["--chat-template", path]) == []


def test_a_written_path_is_refused_with_drop_it():
    problem = only(["--download-dir", "/models/served/hf"])
    assert "--download-dir" in problem and "read-only" in problem and "drop --download-dir" in problem


def test_the_dump_reads_vllms_docstrings(tmp_path):
    spec = importlib.util.spec_from_file_location("dump_path_flags", REPO / "tools" / "dump_path_flags.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "vllm" / "config").mkdir(parents=True)
    (tmp_path / "vllm" / "entrypoints" / "common").mkdir(parents=True)
    (tmp_path / "vllm" / "config" / "model.py").write_text(
        'class ModelConfig:\n    tokenizer: str = None\n    """Name or path of the Hugging Face tokenizer."""\n'
        '    seed: int = 0\n    """Random seed."""\n')
    (tmp_path / "vllm" / "entrypoints" / "common" / "cli_args.py").write_text(
        'class BaseFrontendArgs:\n    chat_template: str | None = None\n    """The file path to the chat template."""\n')
    found = module.path_flags(tmp_path)["path_flags"]
    assert found["--tokenizer"]["kind"] == "directory"
    assert found["--chat-template"]["kind"] == "file"
    assert "--seed" not in found
