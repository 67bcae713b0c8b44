# swd-comfyui: `make demo` (the main job) and `make test` (the suite) set everything up themselves.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
COMFY = $$(cat .comfyui/comfyui_path)
PORT ?= 8188

.PHONY: help setup demo test test-fast serve bench bench-distill package retrain-tiny eval-tiny ablate-tiny clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## create .venv (Python 3.11, torch 2.14.1), fetch ComfyUI 0.30.0, link the pack (idempotent)
	@bash scripts/setup.sh

demo: setup ## run the SD3.5 SwD workflow headless (tiny stand-in models unless real ones are present)
	@$(PY) scripts/demo.py

test: setup ## the whole suite: unit tests, real-ComfyUI integration tests, workflow and browser tests
	@$(PY) -m pytest -c tests/pytest.ini --rootdir tests tests

test-fast: setup ## unit tests of swd_sampler only (no ComfyUI server)
	@$(PY) -m pytest -c tests/pytest.ini --rootdir tests tests/unit

serve: setup ## start ComfyUI with the pack and the frontend on http://127.0.0.1:$(PORT)
	@echo "ComfyUI with swd-comfyui: http://127.0.0.1:$(PORT)"
	@cd "$(COMFY)" && exec "$(CURDIR)/$(PY)" main.py --listen 127.0.0.1 --port $(PORT) --disable-auto-launch \
		$$("$(CURDIR)/$(PY)" -c 'import torch; print("" if torch.cuda.is_available() else "--cpu")')

bench: setup ## print JSON timings of the SwD loop against full-resolution sampling
	@$(PY) benchmarks/bench_sampler.py

bench-distill: setup ## print distillation's peak memory (fake tensors: SD3.5, FLUX, SDXL at 1024 px; FSDP modelled) and steps/s
	@$(PY) benchmarks/bench_distill.py

retrain-tiny: setup ## rebuild models/ (tiny teacher, its samples, then its SwD student) from fixed seeds; RESUME=1 continues
	@OMP_NUM_THREADS=2 $(PY) -m swd_distill teacher --threads 2 --replace-shipped \
		--out models/diffusion_models/swd-tiny-teacher.safetensors $(if $(RESUME),--resume)
	@OMP_NUM_THREADS=2 $(PY) -m swd_distill samples --threads 2
	@OMP_NUM_THREADS=1 $(PY) -m swd_distill distill --threads 1 --replace-shipped --preset "Tiny demo · 4 steps" \
		--steps 500 --warm-steps 100 --batch 32 --rank 32 --lr 3e-4 --cfg 3 --seed 3 \
		--out models/loras/swd-tiny-4-steps.safetensors $(if $(RESUME),--resume)

eval-tiny: setup ## print the tiny family's quality table (validation and held-out captions), through real ComfyUI
	@OMP_NUM_THREADS=2 $(PY) -m swd_distill eval

ablate-tiny: setup ## distil the ablation's students (checkpointed, two at a time) and judge each in ComfyUI
	@bash scripts/ablate_tiny.sh

package: ## build dist/<name>-<version>.zip as `comfy node pack` would and list exactly what ships
	@python3 scripts/package.py

clean: ## remove the venv and the ComfyUI copy
	rm -rf $(VENV) .comfyui
