# labvm — build, test and demo. Every target works as root without sudo.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin
IMAGE_DIR := test/image/out
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/labvm/labvm/daemon.Version=$(VERSION)
PREFIX ?= /usr/local

.PHONY: all build test unit e2e demo image install lint fmt host clean

all: build

## build: compile labvm and labvmd into bin/
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/labvmd ./cmd/labvmd
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/labvm ./cmd/labvm

## host: install missing Debian packages and start virtlogd/libvirtd
host:
	bash test/host/prepare.sh

## image: build (or take from the cache) the small test cloud image
image: host
	bash test/image/build.sh $(IMAGE_DIR)

## test: everything: unit tests and end-to-end tests on real libvirt/QEMU
test: host image
	LABVM_TEST_IMAGE=$(CURDIR)/$(IMAGE_DIR)/tiny.qcow2 $(GO) test -count=1 -timeout 30m ./...

## unit: only the fast tests (no VM boots)
unit:
	$(GO) test -count=1 -short ./...

## demo: walk one instance through its whole life, printing each step
demo: host image build
	bash test/demo.sh $(CURDIR)/$(BIN) $(CURDIR)/$(IMAGE_DIR)/tiny.qcow2

## install: binaries, the systemd units, the labvm group and an example config
install: build
	install -D -m 0755 $(BIN)/labvmd $(DESTDIR)$(PREFIX)/sbin/labvmd
	install -D -m 0755 $(BIN)/labvm $(DESTDIR)$(PREFIX)/bin/labvm
	install -d $(DESTDIR)/etc/systemd/system $(DESTDIR)/etc/labvm
	$(BIN)/labvmd --write-units $(DESTDIR)/etc/systemd/system
	test -e $(DESTDIR)/etc/labvm/labvmd.yaml.example || install -m 0644 docs/labvmd.yaml.example $(DESTDIR)/etc/labvm/labvmd.yaml.example
	getent group labvm >/dev/null || groupadd --system labvm
	@echo "Now: sudo systemctl daemon-reload && sudo systemctl enable --now labvmd.socket labvmd.service"

## lint: gofmt and go vet must be clean
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN) $(IMAGE_DIR)
