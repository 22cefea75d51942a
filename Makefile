# Entry points for people and CI. Every target sets up its own environment.
PYTHON ?= python3
VENV ?= .venv
# What the device installs: the edge extra, no TensorFlow (demo, test-edge).
EDGE_VENV ?= .venv-edge
SHARED ?= ../shared
BIN := $(VENV)/bin
EDGE_BIN := $(EDGE_VENV)/bin

# The shared data and the local mirror of third-party model files, when they are beside the repo.
export MASKGATE_SHARED ?= $(abspath $(SHARED))
ifneq ($(wildcard $(SHARED)/models),)
export MASKGATE_MIRROR ?= $(abspath $(SHARED)/models)
endif

.PHONY: setup setup-edge demo demo-train test test-edge check-arm64 wheelhouse lint benchmark-train benchmark-scenes benchmark-detectors benchmark-peers benchmark-faults benchmark-web benchmark-mqtt check-systemd clean

# The developer's environment: every extra, TensorFlow included.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# The device's environment: the edge extra alone, as on a Pi (a few wheels, no TensorFlow).
$(EDGE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_BIN)/pip install --quiet --upgrade pip
	$(EDGE_BIN)/pip install --quiet -e ".[edge]"
	touch $@

setup-edge: $(EDGE_VENV)/.installed

# The same plus pytest (the test extra), for the device-side tests.
$(EDGE_VENV)/.installed-test: $(EDGE_VENV)/.installed
	$(EDGE_BIN)/pip install --quiet -e ".[edge,test]"
	touch $@

# The gate on sample footage: the shipped int8 models (RetinaFace, the classifier), simulated pins. Scenes from the
# shared data stand in for a camera, each held for a second as if a person stood at the gate.
# It needs only what a device installs.
DEMO_SCENES ?= $(SHARED)/data/scenes/images/maksssksksss[0-9].jpg
# `make demo WEB=1` also serves the live view (/) and the kiosk screen (/kiosk) on http://127.0.0.1:8080
# while the scenes play; the log's first lines give the URL.
demo: setup-edge
	$(EDGE_BIN)/maskgate models fetch --for edge
	$(EDGE_BIN)/maskgate run --config systemd/demo.toml --source "$(DEMO_SCENES)" \
		$(if $(WEB),--set web.enabled=true --set source.loop=true)

# A short training run on a sample of the faces: fetch, scan, split, train, evaluate, report.
demo-train: setup
	$(BIN)/maskgate models fetch
	rm -rf runs/demo
	$(BIN)/maskgate train --data $(SHARED)/data/faces --out runs/demo --max-per-class 150 \
		--input-size 96 --epochs 2 --fine-tune-epochs 1
	@echo "report: runs/demo/report.md"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

# The device-side suite where only the edge extra is installed: first proves that none of the train
# extra is importable there, then runs every test not marked tf. Pytest's exit status is make's:
# a failure, or no test collected at all (status 5), fails the target.
TRAIN_MODULES := tensorflow keras sklearn matplotlib onnx onnxruntime
test-edge: $(EDGE_VENV)/.installed-test
	@for m in $(TRAIN_MODULES); do \
		if $(EDGE_BIN)/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('$$m') is None)"; then \
			echo "$(EDGE_VENV) is not edge-only: it has $$m" >&2; exit 1; \
		fi; \
	done
	$(EDGE_BIN)/python -m pytest -m "not tf"

# The device's stack on arm64: 64-bit Raspberry Pi OS's base (Debian 12 arm64) emulated by qemu-user,
# maskgate[edge] installed offline from `make wheelhouse`, the arm64-marked tests, detect on ten scenes
# and the demo, compared with this machine's run (docs/runtime.md, "The arm64 check"). Needs root.
check-arm64: $(EDGE_VENV)/.installed
	.ci/check-arm64

# Every wheel a device installs, for an offline install (`systemd/install.sh --wheelhouse DIR`): maskgate's
# own wheel from this checkout and its dependencies' binary wheels for the target, by default 64-bit
# Raspberry Pi OS Bookworm (aarch64, CPython 3.11). WHEEL_EXTRAS=edge,test adds the test suite.
WHEELHOUSE ?= wheelhouse
WHEEL_EXTRAS ?= edge
WHEEL_PYTHON ?= 3.11
WHEEL_ARCH ?= aarch64
WHEEL_PLATFORMS ?= $(foreach v,17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36,\
	manylinux_2_$(v)_$(WHEEL_ARCH)) manylinux2014_$(WHEEL_ARCH) linux_$(WHEEL_ARCH)
wheelhouse: $(EDGE_VENV)/.installed
	rm -rf $(WHEELHOUSE).partial && mkdir -p $(WHEELHOUSE).partial
	$(EDGE_BIN)/pip wheel --quiet --no-deps -w $(WHEELHOUSE).partial .
	$(EDGE_BIN)/pip download --quiet --only-binary=:all: -d $(WHEELHOUSE).partial \
		--python-version $(WHEEL_PYTHON) --implementation cp $(addprefix --platform ,$(WHEEL_PLATFORMS)) \
		"$$(ls $(WHEELHOUSE).partial/maskgate-*.whl)[$(WHEEL_EXTRAS)]"
	rm -rf $(WHEELHOUSE) && mv $(WHEELHOUSE).partial $(WHEELHOUSE)
	@echo "$(WHEELHOUSE): $$(ls $(WHEELHOUSE) | wc -l) wheels for $(WHEEL_ARCH), CPython $(WHEEL_PYTHON)"

# The figures in docs/training.md: the default training run on the full faces dataset.
benchmark-train: setup
	$(BIN)/maskgate models fetch
	$(BIN)/maskgate train --data $(SHARED)/data/faces --out runs/faces-$$(date +%Y%m%d-%H%M%S)

# The scenes benchmark of the edge runtime (docs/runtime.md): detect on every scene, score against the
# VOC boxes. DETECT_ARGS passes options, e.g. DETECT_ARGS="--set detector.input_size=[600,450]".
benchmark-scenes: setup
	$(BIN)/maskgate models fetch --for edge
	mkdir -p runs
	$(BIN)/maskgate detect --source $(SHARED)/data/scenes/images --jsonl runs/scenes.jsonl $(DETECT_ARGS)
	$(BIN)/maskgate score --jsonl runs/scenes.jsonl --voc $(SHARED)/data/scenes --json runs/scenes-score.json \
		$(SCORE_ARGS)

# The detector benchmark of docs/runtime.md, one run on the same frames: every detector backend's time
# per frame at 1 and 2 threads and its scenes metric on the report side of the scene split, and the
# pipeline against the Keras reference. The reference's speed is that of its architecture (MobileNetV2
# at 224 px, as the public pipeline publishes it), so a one-epoch training run stands in for it.
KERAS_REF ?= runs/keras-ref224
$(KERAS_REF)/model.keras:
	$(BIN)/maskgate models fetch
	$(BIN)/maskgate train --data $(SHARED)/data/faces --out $(KERAS_REF) --max-per-class 150 \
		--input-size 224 --epochs 1 --fine-tune-epochs 0

benchmark-detectors: setup $(KERAS_REF)/model.keras
	$(BIN)/maskgate bench --source $(SHARED)/data/scenes/images --frames 700 --voc $(SHARED)/data/scenes \
		--scenes report --threads 1,2 --keras $(KERAS_REF) --json runs/bench-detectors.json

# The peers benchmark of docs/benchmarks.md: maskgate's pipeline beside both references, the Keras pipeline and
# AIZOO's single-stage mask detector, in one run per kind of frame: the report side of the shared scenes, and
# close-range frames (faces of the classifier's test split pasted at 140-260 px on 640x480, seed 18).
CLOSE_RANGE ?= runs/close-range
$(CLOSE_RANGE)/summary.json: | $(VENV)/.installed
	$(BIN)/python tests/make_close_range.py --faces $(SHARED)/data/faces --out $(CLOSE_RANGE) --seed 18

benchmark-peers: setup $(KERAS_REF)/model.keras $(CLOSE_RANGE)/summary.json
	$(BIN)/maskgate models fetch --for edge
	$(BIN)/maskgate models fetch --for bench
	$(BIN)/maskgate bench --source $(SHARED)/data/scenes/images --frames 700 --voc $(SHARED)/data/scenes \
		--scenes report --threads 1,2 --keras $(KERAS_REF) --aizoo --json runs/bench-peers-scenes.json
	$(BIN)/maskgate bench --source $(CLOSE_RANGE)/images --frames 325 --voc $(CLOSE_RANGE) \
		--threads 1,2 --keras $(KERAS_REF) --aizoo --json runs/bench-peers-close.json

# The web benchmark of docs/runtime.md: the gate's frame rate with 0, 1 and 3 live-view viewers and its
# memory with the server on and off, on the demo footage, unpaced, rounds interleaved.
benchmark-web: setup
	mkdir -p runs
	$(BIN)/python tests/bench_web.py --scenes "$(DEMO_SCENES)" --json runs/web.json

# The fault benchmark of docs/runtime.md: hostile images, bundles and configurations through the real
# commands (processed / skipped / refused / crashed), the relay's on-time with the gate frozen, GIL-bound
# or killed mid-pulse, and the memory of a 10,000-frame soak.
benchmark-faults: setup
	mkdir -p runs
	$(BIN)/python tests/bench_faults.py --json runs/faults.json

# The fleet benchmark of docs/integration.md: GATES `maskgate run` processes on the demo footage (half with
# MQTT on) against one local mosquitto and one subscriber: messages published / received / dropped, event
# latency, CPU per gate with MQTT on and off, reconnect time after a broker restart. Needs Debian's mosquitto.
GATES ?= 20
benchmark-mqtt: setup
	mkdir -p runs
	$(BIN)/python tests/bench_mqtt.py --scenes "$(DEMO_SCENES)" --gates $(GATES) --json runs/mqtt.json

# Keeps runs/: it holds training results.
# The service under a real systemd (needs root): a Debian 12 container booted with systemd-nspawn,
# maskgate installed by systemd/install.sh, then READY, the watchdog, stop, restart policy and the
# sandbox checked from inside. The root filesystem is cached in /var/cache/maskgate-systemd.
check-systemd:
	SHARED="$(SHARED)" .ci/check-systemd

clean:
	rm -rf $(VENV) $(EDGE_VENV) .pytest_cache .ruff_cache *.egg-info $(WHEELHOUSE)
