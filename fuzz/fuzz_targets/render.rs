//! cargo-fuzz target: value -> Secret mapping, templates and durations (`make fuzz`).
#![no_main]

#[path = "../../tests/fuzz_check/mod.rs"]
mod fuzz_check;

libfuzzer_sys::fuzz_target!(|input: fuzz_check::Input| {
    fuzz_check::check(&input);
});
