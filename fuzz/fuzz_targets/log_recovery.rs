//! Log recovery from arbitrary bytes: a store directory (checkpoint, WAL segments, segment
//! and index files, leftovers of deletes) whose files hold the input. Opening must answer
//! `Ok` or `Err`, never panic; what opens must be readable and open again.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| millrace_fuzz::run_log_recovery(data));
