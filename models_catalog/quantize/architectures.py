"""Which architectures llama.cpp's converter turns into GGUF (checked before a job starts).

The list is data shipped with the project (``data/gguf_architectures.json``), generated from
the converter of the llama.cpp version the fleet builds; regenerate it after an upgrade with
``python -m models_catalog.quantize.architectures TOOLS_DIR`` (the folder holding
``convert_hf_to_gguf.py`` and, in newer versions, its ``conversion/`` package).
"""

from __future__ import annotations

import ast
import json
import sys
from functools import cache
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "gguf_architectures.json"


@cache
def gguf_architectures() -> frozenset[str]:
    return frozenset(json.loads(DATA.read_text())["architectures"])


def converter_version() -> str:
    return str(json.loads(DATA.read_text()).get("llama_cpp_python") or "")


def read_from_converter(tools_dir: Path) -> list[str]:
    """The architecture names registered in the converter's sources (parsed, not run)."""
    names: set[str] = set()
    candidates = [tools_dir / "conversion" / "__init__.py", tools_dir / "convert_hf_to_gguf.py"]
    for path in candidates:
        if not path.is_file():
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            # newer: TEXT_MODEL_MAP = {"LlamaForCausalLM": "llama", ...}
            if isinstance(node, ast.AnnAssign | ast.Assign):
                targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
                if any(getattr(t, "id", "") == "TEXT_MODEL_MAP" for t in targets):
                    value = node.value
                    if isinstance(value, ast.Dict):
                        names.update(
                            k.value
                            for k in value.keys
                            if isinstance(k, ast.Constant) and isinstance(k.value, str)
                        )
            # older: @ModelBase.register("LlamaForCausalLM", ...)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "register":
                names.update(
                    a.value
                    for a in node.args
                    if isinstance(a, ast.Constant) and isinstance(a.value, str)
                )
    return sorted(names)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m models_catalog.quantize.architectures TOOLS_DIR VERSION")
        return 2
    names = read_from_converter(Path(argv[0]))
    if not names:
        print(f"no architectures found under {argv[0]}")
        return 1
    data = json.loads(DATA.read_text())
    data["architectures"] = names
    data["llama_cpp_python"] = argv[1]
    DATA.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{len(names)} architectures written to {DATA}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
