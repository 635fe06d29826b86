# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp carries a hash of everything that decides the install, so a second `make` is a no-op
# and a changed pin reinstalls.
INSTALL_HASH := $(shell cat Makefile operator/pyproject.toml trainer/pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(INSTALL_HASH)
PYTEST_ARGS ?=

.PHONY: install test lint demo crds clean system-deps test-vllm-api cluster-binaries cluster-up cluster-down \
	images-deps images images-test images-cluster-test images-clean

install: $(STAMP)

$(STAMP):
	@echo "==> installing into $(VENV)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	# torch first, alone: PyPI's only Linux x86_64 build of torch 2.13.0 is the CUDA 13.0 one, which
	# brings triton and 18 nvidia/CUDA wheels (4.7 GB installed, about 4 minutes with an empty pip
	# cache) and runs on the CPU where there is no GPU. There is no CPU build on PyPI to pick instead.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e 'operator[test]' -e 'trainer[test]'
	$(MAKE) --no-print-directory system-deps
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# promtool (rule and PromQL checks) and prometheus (scraped in the integration run) come from
# Debian's prometheus package; chromium renders the evaluation report as a person sees it; git
# serves the promotion tests. Installed only when missing.
system-deps:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
	  echo "==> installing Debian's prometheus package (promtool)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	fi
	@if ! command -v chromium >/dev/null; then \
	  echo "==> installing Debian's chromium (the report's rendering test)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The test cluster runs the chart's operator pod from the operator image (built, or found built,
# by tests/images: about 3 minutes on a fresh machine), and tests/images checks that image;
# CLUSTER_IMAGES= runs it from .venv instead. The trainer and eval images: make images-test.
CLUSTER_IMAGES ?= operator
test: install lint cluster-binaries images-deps
	KUBETUNE_CLUSTER_IMAGES="$(CLUSTER_IMAGES)" KUBETUNE_IMAGE_TESTS="$(CLUSTER_IMAGES)" $(BIN)/python -m pytest $(PYTEST_ARGS)

# The test control plane (tests/cluster): kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, etcd and helm, built with Go from the pins in tests/cluster/go/*/go.mod into a
# per-machine cache (~/.cache/kubetune/cluster); a second build finds them there.
cluster-binaries: install
	$(BIN)/python -m tests.cluster build

# A cluster on 127.0.0.1 in the background, with fake GPU nodes whose pods run as local processes
# (docs/development.md); `source .cluster/env` gives KUBECONFIG and PATH with kubectl and helm.
cluster-up: cluster-binaries
	$(BIN)/python -m tests.cluster up

cluster-down:
	$(BIN)/python -m tests.cluster down

# The three images, built with buildah (vfs storage, chroot isolation: no container engine) from
# images/*/Dockerfile on a Debian base made by debootstrap, into a per-machine cache
# (~/.cache/kubetune/containers); a second build rebuilds only what changed (tests/images).
images-deps:
	@if ! command -v buildah >/dev/null || ! command -v skopeo >/dev/null || ! command -v debootstrap >/dev/null; then \
	  echo "==> installing Debian's buildah, skopeo and debootstrap"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    buildah skopeo debootstrap >/dev/null; \
	fi

images: install images-deps
	nice -n 10 $(BIN)/python -m tests.images build

# Each image run for real: entrypoint, user, read-only root with the pods' mounts, a piece of
# real work, sizes (a table at the end) and an OCI archive export read back by skopeo.
images-test: images
	KUBETUNE_IMAGE_TESTS=all nice -n 10 $(BIN)/python -m pytest -p no:cacheprovider tests/images $(PYTEST_ARGS)

# The chart and operator suites on the test cluster with every pod of the three images run from
# its image (fakes aside): what users run, at the cost of the trainer and eval images.
images-cluster-test: images cluster-binaries
	KUBETUNE_CLUSTER_IMAGES="operator trainer eval" nice -n 10 $(BIN)/python -m pytest -p no:cacheprovider \
	  tests/integration/kube tests/integration/operator $(PYTEST_ARGS)

images-clean:
	$(BIN)/python -m tests.images clean

crds: install
	$(BIN)/kubetune crds

# The repeater story of the seed-000 workflow on a tiny model, from examples/demo/*.yaml through
# `kubetune run`; a second run skips the finished steps.
demo: install
	$(BIN)/python examples/demo/make_inputs.py --output demo-artifacts/inputs
	$(BIN)/kubetune run examples/demo/*.yaml --artifacts demo-artifacts --workdir demo-artifacts/.kubetune

# vLLM's own parameter classes (EngineArgs, SamplingParams, BeamSearchParams, LoRARequest) built
# from what the eval engine asks for, with no GPU: run it after changing the vllm pin. vLLM goes
# into a second venv layered on $(VENV), without its CUDA packages, whose kernels never load here.
VLLM_VENV := .venv-vllm
VLLM_PIN := $(shell grep -o '"vllm==[^"]*"' trainer/pyproject.toml | tr -d '"')
VLLM_CUDA_ONLY := torch|torchaudio|torchvision|torchcodec|flashinfer|nvidia|tilelang|quack|tokenspeed|humming|pynvvideocodec|numba|fastsafetensors|instanttensor|apache-tvm-ffi
test-vllm-api: install
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip==26.3
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps '$(VLLM_PIN)'
	# What both venvs hold must be the same version, or the second would shadow the first.
	$(BIN)/python -m pip freeze | grep -iE '^(numpy|transformers|tokenizers|huggingface.hub|safetensors|pydantic|pydantic.core)==' \
	  > $(VLLM_VENV)/constraints.txt
	$(VLLM_VENV)/bin/python -c 'import importlib.metadata as m, re; \
	  print("\n".join(r for r in m.requires("vllm") if "extra ==" not in r \
	    and not re.match(r"($(VLLM_CUDA_ONLY))\b", r, re.I)))' > $(VLLM_VENV)/requirements.txt
	$(VLLM_VENV)/bin/python -m pip install --quiet -r $(VLLM_VENV)/requirements.txt -c $(VLLM_VENV)/constraints.txt
	# torch and the project's own packages come from $(VENV).
	$(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
	  > "$$($(VLLM_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/kubetune-base.pth"
	PYTHONPATH=operator/src:trainer/src $(VLLM_VENV)/bin/python -m pytest -p no:cacheprovider -rs tests/unit/trainer/eval/test_eval_vllm.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) .kubetune demo-artifacts .cluster
