"""transformers loads the tiny model from the mirror with nothing but HF_ENDPOINT and HF_TOKEN.

A subprocess is the faithful setup: huggingface_hub reads HF_ENDPOINT once, at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.hubserver.fixtures import MIRROR_COMMIT, TINY

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SCRIPT = """
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
repo = sys.argv[1]
tokenizer = AutoTokenizer.from_pretrained(repo)
model = AutoModelForCausalLM.from_pretrained(repo)
inputs = tokenizer("The fleet model", return_tensors="pt")
output = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
new = output[0][inputs["input_ids"].shape[1]:]
print(json.dumps({"new_tokens": len(new), "text": tokenizer.decode(new),
                  "layers": model.config.num_hidden_layers, "vocab": len(tokenizer)}))
"""


def _environment(endpoint: str, token: str, cache) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_TOKEN=token,
        HF_HOME=str(cache / "hf-home"),
        HF_HUB_CACHE=str(cache / "hub"),
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def test_transformers_loads_and_generates_through_the_mirror(
    mirror_model, live_server, node_credential, tmp_path
):
    env = _environment(f"{live_server.url}/hub", node_credential, tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, TINY],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["new_tokens"] == 5
    assert answer["layers"] == 2
    assert answer["vocab"] == mirror_model.config["vocab_size"]
    snapshot = tmp_path / "hub" / "models--fleet-test--tiny-llama" / "snapshots" / MIRROR_COMMIT
    assert (snapshot / "model.safetensors").is_file()


def test_transformers_without_a_token_is_refused(mirror_model, live_server, tmp_path):
    env = _environment(f"{live_server.url}/hub", "", tmp_path)
    env.pop("HF_TOKEN")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, TINY],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode != 0
    assert "401" in result.stderr
