"""The adapters' "try it" methods: the completion request each runtime gets, and parsing."""

from __future__ import annotations

import pytest

from deployments.runtimes import get_adapter

OPENAI_ANSWER = {
    "choices": [{"text": " world", "index": 0, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


@pytest.mark.parametrize("runtime", ["llamacpp", "vllm", "ollama"])
def test_openai_completion_request(runtime: str) -> None:
    path, body = get_adapter(runtime).completion_request("Hello", 8, model="chat")
    assert path == "/v1/completions"
    assert body == {"prompt": "Hello", "max_tokens": 8, "stream": False, "model": "chat"}


def test_request_without_model_name_leaves_it_out() -> None:
    _, body = get_adapter("llamacpp").completion_request("Hi", 1)
    assert "model" not in body


@pytest.mark.parametrize("runtime", ["llamacpp", "vllm", "ollama"])
def test_parse_openai_answer(runtime: str) -> None:
    assert get_adapter(runtime).parse_completion(OPENAI_ANSWER) == (" world", 3, 2)


def test_parse_answer_without_usage_gives_no_counts() -> None:
    answer = {"choices": [{"text": "x"}]}
    assert get_adapter("vllm").parse_completion(answer) == ("x", None, None)


@pytest.mark.parametrize(
    "answer",
    [[], {"choices": []}, {"choices": [{"text": 3}]}, {"error": "boom"}, {"choices": ["x"]}],
)
def test_parse_refuses_what_is_not_a_completion(answer: object) -> None:
    with pytest.raises(ValueError):
        get_adapter("llamacpp").parse_completion(answer)


def test_custom_image_is_not_supported_with_a_clear_message() -> None:
    with pytest.raises(NotImplementedError, match="not supported for custom images"):
        get_adapter("custom").completion_request("Hello", 8)
