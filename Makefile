# Builds the BPF objects from bpf/ into build/ (never committed).
ARCH := $(shell uname -m)
CLANG ?= clang
BPF_CFLAGS := -O2 -g -target bpf -Wall -Werror -I/usr/include/$(ARCH)-linux-gnu -Ibpf

BPF_HEADERS := $(wildcard bpf/*.h)
BPF_OBJECTS := build/mermin.bpf.o $(patsubst bench/%.bpf.c,build/%.bpf.o,$(wildcard bench/*.bpf.c))

.PHONY: bpf clean
bpf: $(BPF_OBJECTS)

build/%.bpf.o: bpf/%.bpf.c $(BPF_HEADERS) | build
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

build/%.bpf.o: bench/%.bpf.c $(BPF_HEADERS) | build
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

build:
	mkdir -p build

clean:
	rm -rf build

# mermin replay's C loops (src/mermin/replay/_fastrun.c), loaded with ctypes.
.PHONY: replay
replay: build/libmermin_replay.so

build/libmermin_replay.so: src/mermin/replay/_fastrun.c | build
	$(CC) -O2 -g -Wall -Werror -shared -fPIC $< -o $@
bpf: replay  # setup.sh runs `make bpf`: build the replay helper with it
