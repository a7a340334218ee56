.PHONY: run test lint schema lock
run:  ## run the product (embedded mode)
	scripts/run
test:  ## run every check and test
	scripts/test
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
schema:  ## regenerate the committed OpenAPI schema
	.venv/bin/python manage.py spectacular --file docs/openapi.yaml --validate --fail-on-warn
lock:  ## regenerate requirements/*.txt (pinned, with hashes) from pyproject.toml
	scripts/lock
