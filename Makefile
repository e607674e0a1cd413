.PHONY: demo test bootstrap

# Run the main job end to end on the embedded default (SQLite + in-process queue + SmolLM2 + sample data).
demo:
	scripts/bootstrap.sh
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/safetune demo

# Run the whole test suite (sets up the venv and services first).
test:
	scripts/test.sh

bootstrap:
	scripts/bootstrap.sh
