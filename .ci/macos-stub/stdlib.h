/* `cargo check --target *-apple-darwin` runs wasmtime's build script, which
 * compiles a small C helper (src/runtime/vm/helpers.c) for the target. There
 * is no macOS SDK on Linux; the helper needs only NULL from <stdlib.h>, and
 * a check never links the object. So CI compiles it freestanding with clang
 * against this header. */
#include <stddef.h>
