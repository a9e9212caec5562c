# make setup: the two environments (idempotent).  make test: setup, then every test.  make run: setup, then the UI.
SHELL := /bin/bash
PYTHON312 ?= $(shell ls -d $$(pyenv root 2>/dev/null)/versions/3.12.*/bin/python3.12 2>/dev/null | tail -n 1 || command -v python3.12)
TRAINER_VENV ?= $(CURDIR)/.venv-trainer
APP_VENV := $(CURDIR)/.venv
UV := $(APP_VENV)/bin/uv
export TRAINER_VENV

.PHONY: setup app-env trainer-env browser test test-fast test-train gpu-check gpu-wheels run lint actionlint trainer-lock app-lock flags clean

setup: app-env trainer-env

app-env: $(APP_VENV)/.installed
trainer-env: $(TRAINER_VENV)/.installed

# uv, not pip: gradio 6 and runpod 1.12 disagree on tomlkit; requirements-overrides.txt says why and pins it.
$(UV):
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found: set PYTHON312=/path/to/python3.12"; exit 1; }
	test -x $(APP_VENV)/bin/python || $(PYTHON312) -m venv $(APP_VENV)
	test -x $(UV) || $(APP_VENV)/bin/pip install -q uv==0.13.8

# Every package pinned by requirements-app.lock (as the trainer env by its lock); a requirement the lock disagrees
# with fails here: run `make app-lock`.
$(APP_VENV)/.installed: requirements.txt requirements-dev.txt requirements-overrides.txt requirements-app.lock | $(UV)
	$(UV) pip install -q --python $(APP_VENV)/bin/python -r requirements.txt -r requirements-dev.txt \
		-c requirements-app.lock --override requirements-overrides.txt
	touch $@

$(TRAINER_VENV)/.installed: requirements-trainer.txt requirements-trainer.lock | $(APP_VENV)/.installed
	test -x $(TRAINER_VENV)/bin/python || $(UV) venv -q --python $(PYTHON312) $(TRAINER_VENV)
	$(UV) pip install -q --python $(TRAINER_VENV)/bin/python -r requirements-trainer.txt -c requirements-trainer.lock
	touch $@

# The UI's browser tests drive Debian's Chromium (no browser download); needs root, as on these machines.
browser:
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# Two test processes: most of the suite waits on SimpleTuner subprocesses, so the second core is free.
test: setup browser
	$(APP_VENV)/bin/python -m pytest -n 2

# Without the trainer env: tests that run it are marked trainer_env or training (pyproject.toml).
test-fast: app-env
	$(APP_VENV)/bin/python -m pytest -m "not training and not trainer_env and not browser"

test-train: setup
	$(APP_VENV)/bin/python -m pytest -m training

lint: app-env
	$(APP_VENV)/bin/ruff check .
	$(APP_VENV)/bin/mypy

# The GitHub workflows (actionlint from requirements-dev.txt; the env's shellcheck checks their `run:` scripts).
actionlint: app-env
	PATH="$(APP_VENV)/bin:$$PATH" $(APP_VENV)/bin/actionlint -no-color .github/workflows/*.yml

# Regenerate the committed SimpleTuner flag list from the installed SimpleTuner.
flags: trainer-env
	$(TRAINER_VENV)/bin/python -P tools/dump_simpletuner_flags.py 2>/dev/null > core/data/simpletuner_flags.json.new
	mv core/data/simpletuner_flags.json.new core/data/simpletuner_flags.json

# The app env's lock: requirements.txt + requirements-dev.txt resolved for the image's platform (Python 3.12,
# x86_64 Linux) with the overrides applied. Needs PyPI.
app-lock: | $(UV)
	{ echo "# Every package of the app env: requirements.txt + requirements-dev.txt with requirements-overrides.txt,"; \
	  echo "# resolved for Python 3.12 on x86_64 Linux (used as constraints). Regenerate: make app-lock"; \
	  $(UV) pip compile requirements.txt requirements-dev.txt --override requirements-overrides.txt \
	    --python-version 3.12 --python-platform x86_64-manylinux_2_28 --no-header -q; } > requirements-app.lock

trainer-lock: trainer-env
	{ echo "# Every package of the trainer env, frozen from a working install (used as constraints). Regenerate: make trainer-lock"; \
	  $(UV) pip freeze --python $(TRAINER_VENV)/bin/python | grep -v -i '^simpletuner=='; } > requirements-trainer.lock
	{ echo "# The image's trainer env (SimpleTuner's cuda13 extra) resolved against requirements-trainer.lock. Regenerate: make trainer-lock"; \
	  printf 'simpletuner[cuda13]==4.10.1\ntransformers==5.22.2\n' | $(UV) pip compile - -c requirements-trainer.lock \
	    --python-version 3.12 --python-platform x86_64-manylinux_2_28 --no-header --no-annotate -q; } > requirements-trainer-cuda.lock

# On a CUDA machine, offline: each tiny family, the recipes' quantizations, previews and captioning (and with 2+ GPUs
# a mixed-aspect run) train a few steps; a line per run, logs and gpu-check.json in --out, then a table
# (bench/gpu_check.py; ARGS="--dry-run" prints the plan, "--families sdxl,flux", "--out DIR"). No setup here: with
# the checkout's envs it uses them; without, python3 with the wheels of `make gpu-wheels` on PYTHONPATH.
GPU_CHECK_PYTHON ?= $(if $(wildcard $(APP_VENV)/bin/python),$(APP_VENV)/bin/python,python3)
gpu-check:
	$(GPU_CHECK_PYTHON) bench/gpu_check.py $(ARGS)

# The wheels the GPU check needs on a CUDA machine whose Python has torch (README, "GPU check"): packed offline from
# the installed trainer env into GPU_WHEELS, under 60 MB (tools/gpu_wheels.py prints each and the total).
GPU_WHEELS ?= $(CURDIR)/gpu-wheels
gpu-wheels:
	$(GPU_CHECK_PYTHON) tools/gpu_wheels.py $(GPU_WHEELS) --venv $(TRAINER_VENV)

PORT ?= 7860
run: setup
	GRADIO_SERVER_PORT=$(PORT) $(APP_VENV)/bin/python -m app

clean:
	rm -rf .pytest_cache .cache
