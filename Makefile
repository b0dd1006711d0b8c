# unicorn: make chosen services fail for the devices behind this machine.
GO      ?= go
BIN     := bin/unicorn
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
STATICCHECK ?= v0.8.2
# Extra flags for `make run`, e.g. make run ARGS='--scenario cud-2020'
ARGS    ?=

.PHONY: build run test test-short bench lint cross clean

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/unicorn

## run: the built-in cud-2019 scenario on 127.0.0.1 (DNS :5353, proxy :8080), no root needed
run: build
	./$(BIN) serve $(ARGS)

## test: every test, with the race detector
test:
	$(GO) test -race -count=1 ./...

test-short:
	$(GO) test -short -count=1 ./...

## bench: Go benchmarks and peer comparisons (dnsmasq, tinyproxy), printed as ratios
## (about 7 minutes; knobs in bench/README.md, e.g. make bench BENCH_SECONDS=5 BENCH_ONLY=dns)
bench: build
	GO='$(GO)' ./bench/run.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK) ./...

## cross: static binaries for home routers and servers, in dist/
cross:
	GOOS=linux GOARCH=amd64 CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/unicorn-linux-amd64 ./cmd/unicorn
	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/unicorn-linux-arm64 ./cmd/unicorn
	GOOS=linux GOARCH=arm GOARM=7 CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/unicorn-linux-armv7 ./cmd/unicorn
	GOOS=linux GOARCH=mipsle GOMIPS=softfloat CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/unicorn-linux-mipsle ./cmd/unicorn

clean:
	rm -rf bin dist
