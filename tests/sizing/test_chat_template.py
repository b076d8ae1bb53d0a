"""Whether a model has a chat template, known before anything is created (flagged at preview)."""

import json

import pytest

from sizing.hub import FetchError, directory_has_chat_template, has_chat_template
from sizing.models import catalog_models

CHATML = "{% for m in messages %}{{ m.content }}{% endfor %}"


class FakeHub:
    """The hub's files for one repository; records what was fetched."""

    def __init__(self, files, *, down=False):
        self.files, self.down, self.asked = files, down, []

    def __call__(self, url, headers, timeout):
        self.asked.append(url.rsplit("/", 1)[1])
        if self.down:
            raise FetchError("cannot reach huggingface.co: [Errno 101] Network is unreachable")
        return self.files.get(url.rsplit("/", 1)[1])


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_DEPLOY_MODEL_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"tokenizer_config.json": json.dumps({"chat_template": CHATML})}, True),
        ({"tokenizer_config.json": json.dumps({"chat_template": [{"name": "default", "template": CHATML}]})}, True),
        ({"tokenizer_config.json": "{}", "chat_template.jinja": CHATML}, True),
        ({"tokenizer_config.json": "{}", "chat_template.json": json.dumps({"chat_template": CHATML})}, True),
        ({"tokenizer_config.json": json.dumps({"chat_template": None})}, False),
        ({"tokenizer_config.json": "{}"}, False),
        ({"tekken.json": "{}", "consolidated.safetensors": ""}, True),
        ({"tekken.json": "{}"}, False),  # without consolidated weights vLLM uses the HF tokenizer
    ],
)
def test_a_local_directory_is_read_the_way_vllm_looks_for_a_template(tmp_path, files, expected):
    directory = tmp_path / "model"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    assert directory_has_chat_template(directory) is expected
    assert has_chat_template(str(directory)) is expected


def test_catalog_models_answer_offline():
    def no_network(*_):
        raise AssertionError("a catalog model must not reach the hub")

    for spec in catalog_models():
        assert has_chat_template(spec.model_id, fetch=no_network) is True, spec.model_id


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"tokenizer_config.json": json.dumps({"chat_template": CHATML}).encode()}, True),
        ({"tokenizer_config.json": b"{}", "chat_template.jinja": CHATML.encode()}, True),
        ({"tokenizer_config.json": b'{"bos_token": "<s>"}'}, False),
        ({}, None),  # no tokenizer_config.json at all (a mistral_common-only repository): unknown
    ],
)
def test_a_hub_model_is_read_from_its_tokenizer_files(files, expected):
    hub = FakeHub(files)
    assert has_chat_template("example-org/base-model-1B", fetch=hub) is expected
    assert hub.asked[0] == "tokenizer_config.json"
    again = FakeHub({})
    assert has_chat_template("example-org/base-model-1B", fetch=again) is expected and again.asked == [], "cached"


def test_an_unreachable_hub_leaves_it_unknown_and_the_preview_going():
    assert has_chat_template("example-org/base-model-1B", fetch=FakeHub({}, down=True)) is None
