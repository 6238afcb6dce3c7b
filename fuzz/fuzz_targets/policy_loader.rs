//! The policy loader must never panic, whatever bytes it is given (`cargo fuzz run policy_loader`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nemosandbox::policy::fuzz_one(data);
});
