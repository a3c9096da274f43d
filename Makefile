# Fresh machine: `make demo`, `make test`. Both create .venv if missing, and first install the
# Debian/Ubuntu system packages they need (as root or with passwordless sudo) or stop at once with
# the apt-get line to run: .ci/system-packages.sh (demo: libgomp1; test: also open3d's and Vulkan's).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch that lies on the dev/CI machines' disk; elsewhere pip fetches it.
TORCH ?= torch==2.13.0

.PHONY: demo test install install-test install-bench bench bench-quick clean system-demo system-test

# Listed first among demo's and test's prerequisites: checked before minutes of pip.
system-demo:
	@.ci/system-packages.sh demo
system-test:
	@.ci/system-packages.sh test

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# trackeval (2D metrics) and roboflow trackers (bench peers) declare opencv-python, which would
# install a second cv2 over opencv-contrib-python-headless; they run on ours, so --no-deps.
EVAL_PKGS := trackeval==1.3.0
BENCH_PKGS := trackers==2.6.1 supervision==0.31.2
BENCH_DEPS := rich requests "pydeprecate>=0.9,<0.14" pyyaml defusedxml matplotlib pillow

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps $(EVAL_PKGS)
	touch $@

# The suite includes the viewer's headless snapshot test, so it installs the viewer extra (open3d).
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test,viewer,cluster]"
	touch $@

# Their regular dependencies first, the --no-deps packages last: pip then has no unmet
# requirement (opencv-python) of an installed package to warn about.
$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/pip install -q $(BENCH_DEPS)
	$(BIN)/pip install -q --no-deps $(BENCH_PKGS)
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-bench: $(VENV)/.installed-bench

bench: install-bench
	$(BIN)/tracker3d bench

bench-quick: install-bench
	$(BIN)/tracker3d bench --quick

demo: system-demo install
	$(BIN)/tracker3d demo

test: system-test install-test
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
