//! Failpoints: make the process stop at a named moment so that a test can kill it there.
//!
//! Set `LLM_E2E_FAILPOINT=<point>` and the process pauses for good when it reaches that
//! point. The points:
//!
//! - `mid-write:<file name>`: [`crate::fs::atomic_write`] has put half of the bytes of
//!   `<file name>` into its temporary file (flushed) and renamed nothing;
//! - `after-rename:<file name>`: the file is complete and in place;
//! - `after-step:<n>`: the training loop has finished step `n` (evaluation, logs and
//!   checkpoints included).
//!
//! It prints `failpoint <point>: paused` on stderr and sleeps until it is killed. The fault
//! tests (`xtask/tests/faults.rs`) use this to `kill -9` a run at exact moments; nothing
//! else sets the variable. It is read once per process; unset, a check is one load.

/// The environment variable that arms a failpoint.
pub const ENV: &str = "LLM_E2E_FAILPOINT";

/// The armed failpoint, read from the environment once.
fn armed() -> Option<&'static str> {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ARMED.get_or_init(|| std::env::var(ENV).ok()).as_deref()
}

/// Whether any failpoint is armed (a writer then writes in two halves).
pub fn is_armed() -> bool {
    armed().is_some()
}

/// Pauses forever if `point()` is the armed failpoint; `point` runs only when one is armed.
pub fn check(point: impl FnOnce() -> String) {
    let Some(armed) = armed() else {
        return;
    };
    let point = point();
    if point == armed {
        eprintln!("failpoint {point}: paused");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
