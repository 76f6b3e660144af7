//! Container names: dockerd's validation rule and generated `adjective_surname` names.

use rand::seq::IndexedRandom;

const ADJECTIVES: &[&str] = &[
    "brave",
    "calm",
    "clever",
    "eager",
    "elated",
    "festive",
    "gentle",
    "happy",
    "jolly",
    "keen",
    "lucid",
    "mystifying",
    "nifty",
    "optimistic",
    "peaceful",
    "quirky",
    "relaxed",
    "serene",
    "sharp",
    "stoic",
    "tender",
    "upbeat",
    "vibrant",
    "wizardly",
    "zealous",
];

const SURNAMES: &[&str] = &[
    "agnesi", "babbage", "bohr", "curie", "darwin", "euclid", "fermi", "galileo", "hopper",
    "hypatia", "johnson", "kepler", "lamport", "lovelace", "meitner", "noether", "pasteur",
    "ritchie", "shannon", "tesla", "thompson", "turing", "wiles", "wozniak", "yonath",
];

/// dockerd's `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, with an optional leading slash.
pub fn is_valid(name: &str) -> bool {
    let name = name.strip_prefix('/').unwrap_or(name);
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A random `adjective_surname`; after a few collisions callers append digits, as dockerd
/// does.
pub fn generate(attempt: u32) -> String {
    let mut rng = rand::rng();
    let a = ADJECTIVES.choose(&mut rng).copied().unwrap_or("berth");
    let s = SURNAMES.choose(&mut rng).copied().unwrap_or("container");
    if attempt < 3 {
        format!("{a}_{s}")
    } else {
        format!("{a}_{s}{}", rand::random_range(0..100u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_matches_dockerd() {
        for ok in ["web", "/web", "a1", "my_app.v2-3"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", "a", "-web", "_x", "we b", "x/y", "é1"] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn generated_names_are_valid() {
        for i in 0..10 {
            assert!(is_valid(&generate(i)));
        }
    }
}
