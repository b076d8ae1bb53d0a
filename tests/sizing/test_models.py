"""Model facts: the catalog, config.json parsing, and the hub resolver behind an injected fetch."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sizing import hub
from sizing.hub import FetchError, resolve
from sizing.models import ModelResolutionError, catalog_models, estimate_param_count, from_catalog

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"
AWQ_DIR = FIXTURES / "qwen2.5-7b-instruct-awq"


@pytest.fixture(autouse=True)
def model_cache(tmp_path, monkeypatch):
    """Every test gets an empty model cache and no HF token from the developer's shell."""
    monkeypatch.setenv(hub.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return tmp_path / "cache"


class RecordingFetch:
    """Stands in for the hub: serves given files by name, records every request."""

    def __init__(self, files: dict[str, bytes | None]):
        self.files = files
        self.calls: list[tuple[str, dict[str, str]]] = []

    def __call__(self, url: str, headers: dict[str, str], timeout: float):
        self.calls.append((url, dict(headers)))
        return self.files.get(url.rsplit("/", 1)[-1])


def awq_config_bytes() -> bytes:
    return (AWQ_DIR / "config.json").read_bytes()


# --- catalog ----------------------------------------------------------------------------------


def test_catalog_matches_hf_id_modelscope_id_and_alias_case_insensitively():
    by_hf = from_catalog("qwen/qwen2.5-7b-INSTRUCT")
    assert by_hf is not None and by_hf.model_id == "Qwen/Qwen2.5-7B-Instruct"
    by_ms = from_catalog("LLM-Research/Meta-Llama-3.1-8B-Instruct")
    assert by_ms is not None and by_ms.model_id == "meta-llama/Llama-3.1-8B-Instruct"
    by_alias = from_catalog("meta-llama/Meta-Llama-3.1-70B-Instruct")
    assert by_alias is not None and by_alias.model_id == "meta-llama/Llama-3.1-70B-Instruct"
    assert from_catalog("nobody/NoSuchModel-7B") is None


def test_catalog_parameter_counts_agree_with_the_architecture_numbers():
    # The catalog's counts are exact (keras-hub presets); the layer numbers must reproduce them,
    # or the KV/activation estimates built on those numbers are wrong too.
    for spec in catalog_models():
        estimate = estimate_param_count(spec)
        if spec.architecture == "Gemma3ForConditionalGeneration":
            # the catalog counts the SigLIP vision tower, which the text formula leaves out
            assert estimate < spec.total_params < estimate * 1.12, spec.model_id
        else:
            assert estimate == pytest.approx(spec.total_params, rel=1e-3), spec.model_id


def test_catalog_flags_natively_quantized_checkpoints():
    assert from_catalog("deepseek-ai/DeepSeek-R1").native_quantization == "fp8"
    gpt_oss = from_catalog("openai/gpt-oss-120b")
    assert gpt_oss.native_quantization == "mxfp4" and gpt_oss.quant_bits == 4.25
    assert from_catalog("Qwen/Qwen2.5-72B-Instruct").native_quantization is None


# --- config.json parsing ----------------------------------------------------------------------


def test_local_awq_directory_gives_quantization_and_architecture():
    spec = resolve(str(AWQ_DIR))
    assert spec.source == "local"
    assert (spec.native_quantization, spec.quant_bits, spec.quant_group_size) == ("awq", 4, 128)
    assert (spec.num_layers, spec.hidden_size, spec.num_kv_heads, spec.head_dim) == (28, 3584, 4, 128)
    assert spec.native_dtype == "float16"
    assert spec.sliding_window_layers == 0  # use_sliding_window is false for Qwen2.5
    # same architecture as the 16-bit model, so the same parameter count
    assert spec.total_params == pytest.approx(from_catalog("Qwen/Qwen2.5-7B-Instruct").total_params, rel=1e-3)
    assert spec.checkpoint_bytes is None


def test_local_directory_takes_exact_size_from_the_safetensors_index(tmp_path):
    model_dir = tmp_path / "awq"
    model_dir.mkdir()
    (model_dir / "config.json").write_bytes(awq_config_bytes())
    (model_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 5_583_457_280}, "weight_map": {}})
    )
    assert resolve(str(model_dir)).checkpoint_bytes == 5_583_457_280


def test_local_directory_without_config_json_says_what_is_missing(tmp_path):
    with pytest.raises(ModelResolutionError, match="has no config.json"):
        resolve(str(tmp_path))


def test_deepseek_v3_config_parses_mla_and_fp8():
    spec = resolve(str(FIXTURES / "deepseek-v3"))
    catalog = from_catalog("deepseek-ai/DeepSeek-V3")
    assert spec.is_mla and (spec.kv_lora_rank, spec.qk_rope_head_dim) == (512, 64)
    assert spec.head_dim == catalog.head_dim == 192
    assert (spec.num_experts, spec.n_shared_experts, spec.first_k_dense_replace) == (256, 1, 3)
    assert spec.native_quantization == "fp8"
    assert spec.total_params == pytest.approx(671e9, rel=1e-3)


def test_gpt_oss_config_parses_sliding_layers_and_mxfp4():
    spec = resolve(str(FIXTURES / "gpt-oss-20b"))
    assert (spec.sliding_window, spec.sliding_window_layers) == (128, 12)
    assert spec.native_quantization == "mxfp4"
    assert (spec.num_experts, spec.experts_per_token, spec.moe_intermediate_size) == (32, 4, 2880)
    assert spec.total_params == pytest.approx(from_catalog("openai/gpt-oss-20b").total_params, rel=1e-3)


def test_gemma3_multimodal_config_reads_nested_text_config_with_defaults():
    spec = resolve(str(FIXTURES / "gemma-3-4b-it"))
    catalog = from_catalog("google/gemma-3-4b-it")
    fields = ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads", "head_dim", "vocab_size")
    assert [getattr(spec, f) for f in fields] == [getattr(catalog, f) for f in fields]
    assert spec.sliding_window_layers == catalog.sliding_window_layers == 29
    assert spec.tie_word_embeddings
    # the SigLIP vision tower is loaded too: the total matches the catalog's count with it
    assert spec.total_params == pytest.approx(catalog.total_params, rel=0.01)


def test_unknown_family_names_the_missing_fields(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Weird"], "model_type": "weird"}))
    with pytest.raises(ModelResolutionError, match="num_hidden_layers.*not understood"):
        resolve(str(tmp_path))


# --- the hub ----------------------------------------------------------------------------------


def test_hub_model_is_fetched_once_then_served_from_the_cache(model_cache):
    index = json.dumps({"metadata": {"total_size": 5_583_457_280}}).encode()
    fetch = RecordingFetch({"config.json": awq_config_bytes(), "model.safetensors.index.json": index})
    spec = resolve("acme/Qwen2.5-7B-Instruct-AWQ-ft", fetch=fetch)
    urls = [url for url, _ in fetch.calls]
    assert urls == [
        "https://huggingface.co/acme/Qwen2.5-7B-Instruct-AWQ-ft/resolve/main/config.json",
        "https://huggingface.co/acme/Qwen2.5-7B-Instruct-AWQ-ft/resolve/main/model.safetensors.index.json",
    ]
    assert spec.native_quantization == "awq" and spec.checkpoint_bytes == 5_583_457_280
    assert spec.source == "huggingface"

    again = resolve("acme/Qwen2.5-7B-Instruct-AWQ-ft", fetch=fetch)
    assert len(fetch.calls) == 2, "a repeat resolve must not refetch"
    assert again == spec
    assert any(model_cache.rglob("config.json"))


def test_missing_index_is_cached_too_and_weights_fall_back_to_the_estimate():
    fetch = RecordingFetch({"config.json": awq_config_bytes()})  # single-file checkpoint: no index
    first = resolve("someone/small-awq", fetch=fetch)
    resolve("someone/small-awq", fetch=fetch)
    assert len(fetch.calls) == 2 and first.checkpoint_bytes is None


def test_revision_and_modelscope_urls():
    fetch = RecordingFetch({"config.json": awq_config_bytes()})
    resolve("acme/qwen2.5-7b-instruct-awq-ft", source="modelscope", fetch=fetch)
    resolve("acme/Qwen2.5-7B-Instruct-AWQ-ft", revision="v1.0", fetch=fetch)
    urls = [url for url, _ in fetch.calls]
    assert urls[0] == "https://modelscope.cn/models/acme/qwen2.5-7b-instruct-awq-ft/resolve/master/config.json"
    assert "https://huggingface.co/acme/Qwen2.5-7B-Instruct-AWQ-ft/resolve/v1.0/config.json" in urls


def test_hf_token_goes_in_the_header_only_to_huggingface(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue123")
    fetch = RecordingFetch({"config.json": awq_config_bytes()})
    resolve("acme/Qwen2.5-7B-Instruct-AWQ-ft", fetch=fetch)
    resolve("acme/qwen2.5-7b-instruct-awq-ft", source="modelscope", fetch=fetch)
    hf_headers = [h for url, h in fetch.calls if "huggingface.co" in url]
    ms_headers = [h for url, h in fetch.calls if "modelscope.cn" in url]
    assert all(h.get("Authorization") == "Bearer hf_secretvalue123" for h in hf_headers)
    assert all("Authorization" not in h for h in ms_headers)


def test_catalog_models_never_touch_the_network():
    fetch = RecordingFetch({})
    assert resolve("Qwen/Qwen2.5-72B-Instruct", fetch=fetch).source == "catalog"
    assert fetch.calls == []


def test_offline_unknown_model_explains_which_facts_to_give(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue123")

    def offline(url, headers, timeout):
        raise FetchError("cannot reach huggingface.co: [Errno -3] Temporary failure in name resolution")

    with pytest.raises(ModelResolutionError) as caught:
        resolve("acme/private-13b", fetch=offline)
    message = str(caught.value)
    assert "acme/private-13b" in message and "not in the catalog" in message
    assert "layers" in message and "config.json" in message
    assert "--list-models" in message
    # The working offline fix: the exact file the sizer reads, and where to get it.
    cached = hub._cache_path("huggingface", "acme/private-13b", "main", "config.json")
    assert str(cached) in message
    assert "https://huggingface.co/acme/private-13b/blob/main/config.json" in message
    assert "instanceType" not in message  # setting it does not size an unknown model
    assert "hf_secretvalue123" not in message


def test_the_config_json_saved_where_the_message_says_sizes_the_model_offline():
    def offline(url, headers, timeout):
        raise FetchError("cannot reach huggingface.co: no route")

    with pytest.raises(ModelResolutionError) as caught:
        resolve("acme/private-13b", fetch=offline)
    path = Path(str(caught.value).split("\n      ", 1)[1].split("\n", 1)[0])
    path.parent.mkdir(parents=True)
    path.write_bytes(awq_config_bytes())
    spec = resolve("acme/private-13b", fetch=offline)
    assert spec.native_quantization == "awq" and spec.checkpoint_bytes is None


def test_a_mistyped_id_gets_did_you_mean():
    with pytest.raises(ModelResolutionError, match=r"Did you mean Qwen/Qwen2\.5-72B-Instruct\?"):
        resolve("Qwen/Qwen2.5-70B-Instruct", fetch=RecordingFetch({}))


def test_gated_repository_points_at_the_token():
    def gated(url, headers, timeout):
        raise FetchError("HTTP 401", status=401)

    with pytest.raises(ModelResolutionError, match="gated or private.*HF_TOKEN"):
        resolve("meta-llama/Llama-4-Secret", fetch=gated)


def test_missing_repository_is_a_clear_error():
    with pytest.raises(ModelResolutionError, match="config.json not found"):
        resolve("acme/does-not-exist", fetch=RecordingFetch({}))


# --- the real HTTP client against a local server ---------------------------------------------


@pytest.fixture
def local_hub():
    seen: list[dict[str, str]] = []
    files = {"/acme/awq-7b/resolve/main/config.json": awq_config_bytes()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            seen.append({"path": self.path, **dict(self.headers)})
            if self.path.startswith("/moved/"):  # a redirect to another host name
                port = self.server.server_address[1]
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{port}/{self.path[len('/moved/'):]}")
                self.end_headers()
                return
            body = files.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            if body:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_http_fetch_resolves_through_a_real_http_server(local_hub, monkeypatch):
    base, seen = local_hub
    monkeypatch.setitem(hub.HUB_URLS, "huggingface", base + "/{id}/resolve/{rev}/{file}")
    monkeypatch.setenv("HF_TOKEN", "hf_tok")
    spec = resolve("acme/awq-7b")  # default fetch = hub.http_fetch
    assert spec.native_quantization == "awq" and spec.checkpoint_bytes is None  # index was a 404
    assert seen[0]["Authorization"] == "Bearer hf_tok"


def test_http_fetch_does_not_reach_the_hub_with_hf_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FetchError, match="HF_HUB_OFFLINE is set"):
        hub.http_fetch("https://huggingface.co/acme/x/resolve/main/config.json", {}, 2.0)


def test_http_fetch_reports_unreachable_hosts():
    with pytest.raises(FetchError, match="cannot reach"):
        hub.http_fetch("http://127.0.0.1:9/config.json", {}, 2.0)


def test_http_fetch_does_not_forward_the_token_across_a_redirect(local_hub):
    base, seen = local_hub
    body = hub.http_fetch(
        base + "/moved/acme/awq-7b/resolve/main/config.json", {"Authorization": "Bearer hf_tok"}, 5.0
    )
    assert json.loads(body)["quantization_config"]["quant_method"] == "awq"
    assert seen[0]["Authorization"] == "Bearer hf_tok"
    assert seen[1]["path"] == "/acme/awq-7b/resolve/main/config.json"
    assert "Authorization" not in seen[1]


def test_rope_theta_is_read_from_either_transformers_layout():
    from sizing.hf_config import spec_from_config

    base = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000,
            "max_position_embeddings": 4096}
    assert spec_from_config({**base, "rope_theta": 500000.0}, "t/v4", source="local").rope_theta == 500000.0
    assert spec_from_config({**base, "rope_parameters": {"rope_theta": 10000}}, "t/v5", source="local").rope_theta == 10000.0
    assert spec_from_config(base, "t/none", source="local").rope_theta is None


# --- the deployment guide's models, offline, and its typos -----------------------------------


@pytest.mark.parametrize(
    ("model_id", "method", "intermediate"),
    [
        ("Qwen/Qwen2.5-7B-Instruct-AWQ", "awq", 18944),
        ("Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4", "gptq", 18944),
        ("Qwen/Qwen2.5-14B-Instruct-AWQ", "awq", 13824),
        ("Qwen/Qwen2.5-32B-Instruct-AWQ", "awq", 27648),
        ("Qwen/Qwen2.5-72B-Instruct-AWQ", "awq", 29696),
    ],
)
def test_the_qwen_awq_and_gptq_checkpoints_size_offline(model_id, method, intermediate):
    fetch = RecordingFetch({})
    spec = resolve(model_id, fetch=fetch)
    assert fetch.calls == [] and spec.source == "catalog"
    assert (spec.native_quantization, spec.quant_bits, spec.quant_group_size) == (method, 4, 128)
    assert spec.intermediate_size == intermediate
    assert spec.modelscope_id == model_id  # Qwen publishes them under the same id on ModelScope
    assert resolve(model_id, source="modelscope", fetch=fetch).model_id == model_id


def test_the_padded_72b_awq_is_counted_with_its_padding():
    """Qwen padded the 72B AWQ's MLP from 29568 to 29696 (whole 128-groups on every TP rank)."""
    awq, base = from_catalog("Qwen/Qwen2.5-72B-Instruct-AWQ"), from_catalog("Qwen/Qwen2.5-72B-Instruct")
    assert awq.total_params - base.total_params == pytest.approx(3 * 8192 * 128 * 80, abs=1e6)  # 3 decimals


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("Qwen/Qwen2.5-70B-Instruct", "Qwen/Qwen2.5-72B-Instruct"),  # the guide's multi-GPU example
        ("Qwen/Qwen2.5-7B-Instruct-GPTQ", "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4"),  # the guide's GPTQ
        ("deepseek-ai/DeepSeek-R1-671B", "deepseek-ai/DeepSeek-R1"),  # the guide's pipeline example
        ("Qwen/Qwen3-8B-Instruct", "Qwen/Qwen3-8B"),
        ("mistralai/Mistral-7B-Instruct-v0.2", "mistralai/Mistral-7B-Instruct-v0.3"),
        ("google/gemma-3-4b", "google/gemma-3-4b-it"),
    ],
)
def test_a_mistyped_id_is_told_the_catalog_id_it_meant(typed, meant):
    from sizing.models import close_model_ids

    assert close_model_ids(typed)[0] == meant


def test_no_suggestion_for_unrelated_ids_or_a_far_size():
    from sizing.models import close_model_ids

    assert close_model_ids("acme/totally-different") == []
    # One character from the 7B and the 32B too, but 10x and 2x off the size the id names.
    assert close_model_ids("Qwen/Qwen2.5-70B-Instruct", limit=10) == [
        "Qwen/Qwen2.5-72B-Instruct", "Qwen/Qwen2.5-72B-Instruct-AWQ"]
    assert close_model_ids("Qwen/Qwen2.5-7B-Instruct") == []  # exact (any case) is no typo


# --- local model directories: what vLLM needs besides config.json ----------------------------


def _model_dir(tmp_path, *files: str, index: dict | None = None) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_bytes(awq_config_bytes())
    for name in files:
        (directory / name).write_bytes(b"\0" * 8)
    if index is not None:
        (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": index}))
    return directory


def test_a_complete_directory_has_no_problems(tmp_path):
    assert hub.local_model_problems(_model_dir(tmp_path, "model.safetensors", "tokenizer.json")) == []


@pytest.mark.parametrize(
    "files",
    [("pytorch_model.bin", "tokenizer.model"), ("consolidated.pt", "vocab.json", "merges.txt"),
     ("model.safetensors", "tokenizer_config.json", "qwen.tiktoken")],
)
def test_other_weight_and_tokenizer_formats_vllm_loads_are_accepted(tmp_path, files):
    assert hub.local_model_problems(_model_dir(tmp_path, *files)) == []


def test_a_config_only_directory_names_the_weights_and_the_tokenizer(tmp_path):
    problems = hub.local_model_problems(_model_dir(tmp_path))
    assert problems == [
        "no weights (*.safetensors, *.bin or *.pt files)",
        "no tokenizer (tokenizer.json, tokenizer.model, vocab.json, vocab.txt, tokenizer_config.json or *.tiktoken)",
    ]


def test_shards_an_index_lists_must_all_be_there_and_not_empty(tmp_path):
    shards = {"a.weight": "model-00001-of-00003.safetensors", "b.weight": "model-00002-of-00003.safetensors",
              "c.weight": "model-00003-of-00003.safetensors"}
    directory = _model_dir(tmp_path, "model-00001-of-00003.safetensors", "tokenizer.json", index=shards)
    (directory / "model-00002-of-00003.safetensors").write_bytes(b"")
    assert hub.local_model_problems(directory) == [
        "model.safetensors.index.json lists weight files that are missing or empty: "
        "model-00002-of-00003.safetensors, model-00003-of-00003.safetensors"
    ]
    for name in shards.values():
        (directory / name).write_bytes(b"\1")
    assert hub.local_model_problems(directory) == []


def test_an_empty_weight_file_is_no_weights(tmp_path):
    directory = _model_dir(tmp_path, "tokenizer.json")
    (directory / "model.safetensors").write_bytes(b"")
    assert hub.local_model_problems(directory) == ["no weights (*.safetensors, *.bin or *.pt files)"]


# --- ModelScope: the hub's own id --------------------------------------------------------------


def test_modelscope_gets_its_own_id_for_a_catalog_model():
    assert hub.download_repo_id("meta-llama/Llama-3.1-8B-Instruct", "modelscope") == "LLM-Research/Meta-Llama-3.1-8B-Instruct"
    assert hub.download_repo_id("meta-llama/Meta-Llama-3.1-8B-Instruct", "modelscope") == "LLM-Research/Meta-Llama-3.1-8B-Instruct"
    assert hub.download_repo_id("LLM-Research/Meta-Llama-3.1-8B-Instruct", "modelscope") == "LLM-Research/Meta-Llama-3.1-8B-Instruct"
    assert hub.download_repo_id("meta-llama/Llama-3.1-8B-Instruct", "huggingface") == "meta-llama/Llama-3.1-8B-Instruct"
    assert hub.download_repo_id("acme/only-on-modelscope", "modelscope") == "acme/only-on-modelscope"


def test_a_catalog_model_without_a_modelscope_id_is_refused_naming_both_fixes(monkeypatch):
    from dataclasses import replace

    llama = from_catalog("meta-llama/Llama-3.1-8B-Instruct")
    monkeypatch.setattr(hub, "from_catalog", lambda _: replace(llama, modelscope_id=None))
    with pytest.raises(ModelResolutionError) as caught:
        hub.download_repo_id("meta-llama/Llama-3.1-8B-Instruct", "modelscope")
    message = str(caught.value)
    assert "vllm-deploy:model='meta-llama/Llama-3.1-8B-Instruct' with modelSource=modelscope" in message
    assert "its id on modelscope.cn" in message and "modelSource to huggingface" in message


def test_a_mistyped_modelscope_id_is_told_modelscopes_spelling():
    with pytest.raises(ModelResolutionError, match=r"Did you mean LLM-Research/Meta-Llama-3\.1-8B-Instruct\?"):
        resolve("LLM-Research/Meta-Llama-3-8B-Instruct", source="modelscope", fetch=RecordingFetch({}))
