//! Compile-time behaviour of `#[service]`: what it accepts (`ui/pass`, compiled and run) and
//! the errors it reports (`ui/fail`, compared with the `.stderr` snapshots beside them).
//!
//! Regenerate the snapshots with `TRYBUILD=overwrite`, then read each one: it should point at
//! the offending tokens with a message saying what to do.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
