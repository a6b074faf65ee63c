# tokenguard: build, demo and test entry points. Run as root on Debian:
# the agent loads eBPF programs and the tests drive the real kernel.

CARGO ?= cargo
# The release binaries, wherever CARGO_TARGET_DIR puts them.
RELEASE_DIR := $(or $(CARGO_TARGET_DIR),target)/release
AGENT := $(RELEASE_DIR)/tokenguard-agent
STANDIN := $(RELEASE_DIR)/tokenguard-kube-standin
C_SOURCES := $(wildcard node-agent-ebpf/*.c node-agent-ebpf/*.h bench/*.c)
# Debian's 6.1 kernel and its BTF, for tests against a kernel other than this one.
KERNEL_DIR := .tokenguard/kernels/debian

.PHONY: all setup build demo test lint fmt clean

all: build

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release -p tokenguard-agent -p tokenguard-e2e --bins

demo: build
	scripts/demo.sh $(AGENT) $(STANDIN)

lint: setup
	$(CARGO) fmt --all --check
	clang-format --dry-run --Werror $(C_SOURCES)
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The ignored tests need the BTF of Debian's kernel in TOKENGUARD_TEST_BTF.
test: lint
	scripts/infra-check.sh
	$(CARGO) test --workspace --no-fail-fast
	scripts/debian-kernel.sh $(KERNEL_DIR) >/dev/null
	TOKENGUARD_TEST_BTF=$(CURDIR)/$(KERNEL_DIR)/vmlinux.btf \
		$(CARGO) test --workspace --no-fail-fast -- --ignored

fmt:
	$(CARGO) fmt --all
	clang-format -i $(C_SOURCES)

clean:
	$(CARGO) clean
