"""``python -m tests.hubserver --root DIR [--port N]``: serve a directory of repositories.

``--populate`` first writes the test repositories (the tiny model, GGUF, gated, private and
faulty repositories of the pytest fixtures) into DIR.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from tests.hubserver.server import HubApp


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.hubserver", description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="directory of repositories")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--populate", action="store_true", help="write the test repositories")
    args = parser.parse_args()
    if args.populate:
        from tests.hubserver import fixtures, tinymodel

        args.root.mkdir(parents=True, exist_ok=True)
        fixtures.populate(args.root, tinymodel.tiny_llama())
    app = HubApp(args.root)
    uvicorn.run(app, host=args.host, port=args.port, lifespan="off", log_level="warning")


if __name__ == "__main__":
    main()
