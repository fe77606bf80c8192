//! `cargo xtask chat` on the checkpoint `cargo xtask finetune --task instruct` writes:
//! the Alpaca template it recorded, streamed answers, `/reset`, `/quit`, and a
//! conversation longer than the context.

mod common;

use common::{chat, finetune_instruct, fixture};

#[test]
fn chat_uses_the_instruct_template_and_keeps_within_the_context() {
    let run = tempfile::tempdir().unwrap();
    finetune_instruct(&fixture(), run.path(), 1);
    // Six 40-token answers overflow the fixture's 128-token context: old turns must go.
    let input = "Name a colour.\nAnd another?\n/reset\nOne\nTwo\nThree\nFour\n/quit\nnever read\n";
    let out = chat(run.path(), 40, input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("chat template: alpaca"), "{stderr}");
    assert!(stderr.contains("(conversation cleared)"), "{stderr}");
    let answers = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(
        answers, 6,
        "one streamed answer per question, none after /quit"
    );
}
