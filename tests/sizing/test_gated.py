"""The Hub's word on access, through a fake HfApi that raises what huggingface_hub raises."""

from __future__ import annotations

import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from sizing.gated import AccessRefused, check_access, unchecked_warning
from tests.fakes.hugging_face_hub import FakeHub, hub_error as _error

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
TOKEN = "hf_faketoken_0123456789"


def test_an_open_model_passes_without_a_token_and_never_uses_a_local_login():
    hub = FakeHub(gated=None)
    access = check_access("Qwen/Qwen2.5-7B-Instruct", None, None, hub)
    assert access.checked and access.gated is None
    assert hub.calls == [("model_info", "Qwen/Qwen2.5-7B-Instruct", None, False)]  # False: anonymous


def test_a_gated_model_without_hf_token_is_refused_naming_the_key_and_how_to_set_it():
    with pytest.raises(AccessRefused) as caught:
        check_access(LLAMA, None, None, FakeHub(gated="manual", readers={TOKEN}))
    message = str(caught.value)
    assert f"vllm-deploy:model='{LLAMA}' is a gated model" in message and "hfToken is not set" in message
    assert f"https://huggingface.co/{LLAMA}" in message  # where to request access
    assert "pulumi config set --secret hfToken" in message and "the authors approve" in message


def test_a_gated_model_the_token_cannot_read_is_refused_and_a_token_with_access_passes():
    hub = FakeHub(gated="auto", readers={TOKEN})
    with pytest.raises(AccessRefused) as caught:
        check_access(LLAMA, None, "hf_someone_else", hub)
    message = str(caught.value)
    assert "the account of hfToken has no access to it yet" in message and "hf_someone_else" not in message
    access = check_access(LLAMA, None, TOKEN, hub)
    assert access.checked and access.gated == "auto"
    assert ("auth_check", LLAMA, TOKEN) in hub.calls


def test_a_missing_repository_or_revision_is_refused_with_the_fix():
    with pytest.raises(AccessRefused, match=r"is not on the Hugging Face Hub.*Did you mean Qwen/Qwen2\.5-72B-Instruct\?"):
        check_access("Qwen/Qwen2.5-70B-Instruct", None, None, FakeHub(info_error=_error(RepositoryNotFoundError, 404)))
    with pytest.raises(AccessRefused, match=r"vllm-deploy:modelRevision='v9' does not exist"):
        check_access(LLAMA, "v9", TOKEN, FakeHub(info_error=_error(RevisionNotFoundError, 404)))


def test_an_invalid_token_is_refused_without_showing_it():
    with pytest.raises(AccessRefused) as caught:
        check_access(LLAMA, None, TOKEN, FakeHub(info_error=_error(HfHubHTTPError, 401)))
    assert "vllm-deploy:hfToken is not a valid Hugging Face token" in str(caught.value)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    "error",
    [
        httpx2.ConnectError("[Errno -2] Name or service not known"),
        ConnectionError("offline"),
        TimeoutError("timed out"),
        _error(HfHubHTTPError, 503),
    ],
)
def test_an_unreachable_hub_is_not_a_refusal_but_says_it_was_not_checked(error):
    access = check_access(LLAMA, None, None, FakeHub(info_error=error))
    assert not access.checked and access.why_unchecked
    warning = unchecked_warning(LLAMA, None, access.why_unchecked)
    assert "could not ask the Hugging Face Hub" in warning and "pulumi config set --secret hfToken" in warning


def test_no_client_means_offline():
    assert check_access(LLAMA, None, TOKEN, None) == check_access(LLAMA, None, None, None)
    assert not check_access(LLAMA, None, None, None).checked
