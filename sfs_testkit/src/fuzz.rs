//! A small mutational fuzzer on stable Rust, for the decoders that read
//! bytes from the network or from files (docs/security.md, "Fuzzing").
//!
//! Each input is a seed (valid encodings written in the test: the corpus)
//! changed by a few random mutations — bit flips, bytes and integers set to
//! boundary values, truncation, extension, splicing two seeds — or plain
//! random bytes. The target runs under `catch_unwind`: a panic is reported
//! with the input in hex and the case number (the run is deterministic for
//! a seed, so it can be replayed). It is not coverage-guided: what it
//! reaches depends on the seeds.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// Number of inputs per decoder: `SFS_FUZZ_CASES`, else `default`.
pub fn cases(default: u64) -> u64 {
    std::env::var("SFS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: fast, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    i64::MAX as u64,
    u64::MAX,
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>], max_len: usize) {
    match rng.below(8) {
        0 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        1 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] = INTERESTING[rng.below(INTERESTING.len())] as u8;
        }
        2 if input.len() >= 8 => {
            // An aligned-or-not little-endian integer field set to a boundary.
            let width = [2usize, 4, 8][rng.below(3)];
            let at = rng.below(input.len() - width + 1);
            let value = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
            input[at..at + width].copy_from_slice(&value[..width]);
        }
        3 => {
            let keep = rng.below(input.len() + 1);
            input.truncate(keep);
        }
        4 => {
            let extra = rng.below(64);
            for _ in 0..extra {
                input.push(rng.next() as u8);
            }
        }
        5 if !seeds.is_empty() => {
            // Splice: our head, another seed's tail.
            let other = &seeds[rng.below(seeds.len())];
            let cut = rng.below(input.len() + 1);
            let from = rng.below(other.len() + 1);
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        6 if !input.is_empty() => {
            let i = rng.below(input.len());
            let n = rng.below(input.len() - i + 1);
            input.drain(i..i + n);
        }
        _ => {
            let i = rng.below(input.len() + 1);
            input.insert(i, rng.next() as u8);
        }
    }
    input.truncate(max_len);
}

/// What a fuzz run did.
#[derive(Debug)]
pub struct Report {
    pub inputs: u64,
    /// Inputs the target accepted (`true`), to show the run reached past
    /// the first checks.
    pub accepted: u64,
    pub slowest: Duration,
    pub elapsed: Duration,
}

/// Runs `target` on `cases` inputs derived from `seeds`, each at most
/// `max_len` bytes; the target returns whether it accepted the input.
/// Panics (with the input) if the target panicked or one input took longer
/// than `hang` (an input that never returns shows up as the test's
/// timeout).
pub fn run(
    name: &str,
    seeds: &[Vec<u8>],
    cases: u64,
    max_len: usize,
    hang: Duration,
    target: impl Fn(&[u8]) -> bool,
) -> Report {
    let name_bits = name
        .bytes()
        .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
    let mut rng = Rng((0x9e37_79b9_7f4a_7c15 ^ name_bits) | 1);
    let started = Instant::now();
    let mut report = Report {
        inputs: 0,
        accepted: 0,
        slowest: Duration::ZERO,
        elapsed: Duration::ZERO,
    };
    // Quiet the default hook: expected panics are reported below, once.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for case in 0..cases {
        let mut input = if seeds.is_empty() || rng.below(16) == 0 {
            (0..rng.below(max_len + 1))
                .map(|_| rng.next() as u8)
                .collect()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut input, seeds, max_len);
        }
        let one = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| target(&input)));
        let took = one.elapsed();
        let hex = || -> String { input.iter().map(|b| format!("{b:02x}")).collect() };
        match outcome {
            Ok(accepted) => report.accepted += u64::from(accepted),
            Err(panic) => {
                std::panic::set_hook(hook);
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{name}: case {case} panicked ({what}) on input {}", hex());
            }
        }
        if took > hang {
            std::panic::set_hook(hook);
            panic!(
                "{name}: case {case} took {took:?} (limit {hang:?}) on input {}",
                hex()
            );
        }
        report.slowest = report.slowest.max(took);
        report.inputs += 1;
    }
    std::panic::set_hook(hook);
    report.elapsed = started.elapsed();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_target_is_caught_with_its_input() {
        let caught = std::panic::catch_unwind(|| {
            run(
                "demo",
                &[b"abcd".to_vec()],
                10_000,
                64,
                Duration::from_secs(1),
                |b| {
                    assert!(b.first() != Some(&0x7f), "boom");
                    true
                },
            )
        });
        let message = caught
            .unwrap_err()
            .downcast_ref::<String>()
            .cloned()
            .unwrap();
        assert!(
            message.contains("boom") && message.contains("input 7f"),
            "{message}"
        );
    }

    #[test]
    fn runs_are_deterministic_and_count_inputs() {
        let seeds = [vec![1u8, 2, 3, 4, 5, 6, 7, 8, 9]];
        let a = run("x", &seeds, 500, 32, Duration::from_secs(1), |b| {
            b.len() > 4
        });
        let b = run("x", &seeds, 500, 32, Duration::from_secs(1), |b| {
            b.len() > 4
        });
        assert_eq!(a.inputs, 500);
        assert_eq!(a.accepted, b.accepted);
        assert!(a.accepted > 0 && a.accepted < 500);
    }
}
