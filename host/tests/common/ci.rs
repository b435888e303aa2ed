//! Whether a missing tool skips a test or fails it: the one definition of
//! "we run in CI", shared by the host tests and the workspace tests (which
//! include this file).

/// Whether we run in CI (`CI` set, and not empty or `false`), where a
/// missing interop tool or binary is a failure, never a skip.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// Skips (locally) or fails (in CI) when an interop tool is missing.
pub fn require(tool_ok: bool, what: &str) -> bool {
    if tool_ok {
        return true;
    }
    if in_ci() {
        panic!("{what} is required in CI but missing");
    }
    eprintln!("SKIPPED: {what} is not available here");
    false
}
