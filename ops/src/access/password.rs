//! Console passwords: Argon2id hashes stored as PHC strings, and the password policy.
//!
//! # Parameters
//!
//! [`PasswordHashing::DEFAULT`] is Argon2id (v=19) with 19 MiB of memory (`m=19456`), two
//! passes (`t=2`) and one lane (`p=1`), a 16-byte salt and a 32-byte output: the minimum that
//! OWASP's Password Storage Cheat Sheet recommends for Argon2id, and the RustCrypto crate's
//! default. It is sized for the control plane's 2-core server:
//!
//! - **One lane**: the crate computes lanes one after another (its `parallel` feature is off),
//!   so more lanes would only cost time; and one login must never hold both cores that also
//!   serve ingest and the API.
//! - **19 MiB, two passes**: one verification costs about 35 ms of one core (measured on the
//!   2-core development machine, dependencies optimised) and 19 MiB for that moment. The control plane should allow at most two verifications at a
//!   time (one per core), which caps their memory near 40 MiB and makes a burst of logins queue
//!   instead of starving the server, while an offline guess still costs 19 MiB and two passes.
//!
//! Hashes keep their parameters, so raising them later only needs [`needs_rehash`] at the next
//! successful login. [`verify_password`] refuses hashes whose parameters exceed
//! [`MAX_MEMORY_KIB`], [`MAX_ITERATIONS`] or [`MAX_LANES`], so a damaged or planted record
//! cannot make one login allocate gigabytes.
//!
//! # Policy
//!
//! [`PasswordPolicy::DEFAULT`]: at least 12 characters (counted as characters, so 汉字 count
//! one each), at most 256, characters from at least 3 of the 4 classes (lower case, upper case,
//! digits, anything else), and not containing the user name (ignoring case).

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{RandomError, RandomSource, Secret};

/// The largest memory cost (KiB) a stored hash may ask for: 256 MiB.
pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
/// The largest number of passes a stored hash may ask for.
pub const MAX_ITERATIONS: u32 = 16;
/// The largest number of lanes a stored hash may ask for.
pub const MAX_LANES: u32 = 8;

/// The salt length, in bytes (the PHC recommendation).
const SALT_LEN: usize = 16;

/// Argon2id cost parameters (see the module doc for the defaults and why).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordHashing {
    pub memory_kib: u32,
    pub iterations: u32,
    pub lanes: u32,
}

impl PasswordHashing {
    pub const DEFAULT: PasswordHashing = PasswordHashing {
        memory_kib: 19 * 1024,
        iterations: 2,
        lanes: 1,
    };

    fn argon2(&self) -> Result<Argon2<'static>, PasswordError> {
        if self.memory_kib > MAX_MEMORY_KIB
            || self.iterations > MAX_ITERATIONS
            || self.lanes > MAX_LANES
        {
            return Err(PasswordError::CostTooHigh {
                memory_kib: self.memory_kib,
                iterations: self.iterations,
                lanes: self.lanes,
            });
        }
        let params = Params::new(self.memory_kib, self.iterations, self.lanes, None)
            .map_err(|error| PasswordError::Parameters(error.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl Default for PasswordHashing {
    fn default() -> PasswordHashing {
        PasswordHashing::DEFAULT
    }
}

/// Why a password could not be hashed or checked against a stored hash.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PasswordError {
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("stored password hash is not a PHC string: {0}")]
    MalformedHash(String),
    #[error("stored password hash uses `{0}`; only argon2id is accepted")]
    UnsupportedAlgorithm(String),
    #[error(
        "password hash parameters m={memory_kib}, t={iterations}, p={lanes} exceed the limits \
         m={MAX_MEMORY_KIB}, t={MAX_ITERATIONS}, p={MAX_LANES}"
    )]
    CostTooHigh {
        memory_kib: u32,
        iterations: u32,
        lanes: u32,
    },
    #[error("invalid password hash parameters: {0}")]
    Parameters(String),
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// Hashes `password` with [`PasswordHashing::DEFAULT`] and a fresh 16-byte salt from
/// `salt_rng`: the PHC string to store (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
pub fn hash_password<R: RandomSource + ?Sized>(
    password: &Secret,
    salt_rng: &mut R,
) -> Result<String, PasswordError> {
    hash_password_with(&PasswordHashing::DEFAULT, password, salt_rng)
}

/// [`hash_password`] with other cost parameters.
pub fn hash_password_with<R: RandomSource + ?Sized>(
    hashing: &PasswordHashing,
    password: &Secret,
    salt_rng: &mut R,
) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_LEN];
    salt_rng.fill(&mut salt)?;
    hash_with_salt(hashing, password.expose().as_bytes(), &salt)
}

fn hash_with_salt(
    hashing: &PasswordHashing,
    password: &[u8],
    salt: &[u8],
) -> Result<String, PasswordError> {
    let hash = hashing
        .argon2()?
        .hash_password_with_salt(password, salt)
        .map_err(|error| PasswordError::Hashing(error.to_string()))?;
    Ok(hash.to_string())
}

/// Parses a stored hash and checks it is one we are willing to compute.
fn parse_stored(phc: &str) -> Result<(PasswordHash, Params), PasswordError> {
    let hash =
        PasswordHash::new(phc).map_err(|error| PasswordError::MalformedHash(error.to_string()))?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err(PasswordError::UnsupportedAlgorithm(
            hash.algorithm.as_str().to_owned(),
        ));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(PasswordError::MalformedHash(
            "the salt or the hash is missing".to_owned(),
        ));
    }
    let params =
        Params::try_from(&hash).map_err(|error| PasswordError::Parameters(error.to_string()))?;
    if params.m_cost() > MAX_MEMORY_KIB
        || params.t_cost() > MAX_ITERATIONS
        || params.p_cost() > MAX_LANES
    {
        return Err(PasswordError::CostTooHigh {
            memory_kib: params.m_cost(),
            iterations: params.t_cost(),
            lanes: params.p_cost(),
        });
    }
    Ok((hash, params))
}

/// Whether `password` matches the stored PHC string: `Ok(false)` for a wrong password, an
/// error for a stored hash that is malformed, not Argon2id or too costly to compute.
pub fn verify_password(phc: &str, password: &Secret) -> Result<bool, PasswordError> {
    let (hash, _) = parse_stored(phc)?;
    match Argon2::default().verify_password(password.expose().as_bytes(), &hash) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(error) => Err(PasswordError::Hashing(error.to_string())),
    }
}

/// Whether a stored hash was made with parameters other than `hashing` (re-hash it at the
/// next successful login). A hash that cannot be parsed also needs one.
pub fn needs_rehash(phc: &str, hashing: &PasswordHashing) -> bool {
    match parse_stored(phc) {
        Ok((_, params)) => {
            params.m_cost() != hashing.memory_kib
                || params.t_cost() != hashing.iterations
                || params.p_cost() != hashing.lanes
        }
        Err(_) => true,
    }
}

/// The password rules (see the module doc for the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordPolicy {
    /// Fewest characters.
    pub min_length: usize,
    /// Most characters (bounds the work of hashing a hostile input).
    pub max_length: usize,
    /// Fewest of the four classes: lower case, upper case, digits, other.
    pub min_classes: usize,
}

impl PasswordPolicy {
    pub const DEFAULT: PasswordPolicy = PasswordPolicy {
        min_length: 12,
        max_length: 256,
        min_classes: 3,
    };

    /// Checks a new password of the user `user_name`; the first rule it breaks.
    pub fn check(&self, password: &Secret, user_name: &str) -> Result<(), PasswordPolicyError> {
        let user_name = user_name.trim();
        if user_name.is_empty() {
            return Err(PasswordPolicyError::EmptyUserName);
        }
        let password = password.expose();
        let length = password.chars().count();
        if length < self.min_length {
            return Err(PasswordPolicyError::TooShort {
                min: self.min_length,
                found: length,
            });
        }
        if length > self.max_length {
            return Err(PasswordPolicyError::TooLong {
                max: self.max_length,
                found: length,
            });
        }
        let classes = [
            password.chars().any(|c| c.is_ascii_lowercase()),
            password.chars().any(|c| c.is_ascii_uppercase()),
            password.chars().any(|c| c.is_ascii_digit()),
            password.chars().any(|c| !c.is_ascii_alphanumeric()),
        ]
        .into_iter()
        .filter(|&present| present)
        .count();
        if classes < self.min_classes {
            return Err(PasswordPolicyError::TooFewClasses {
                min: self.min_classes,
                found: classes,
            });
        }
        if password.to_lowercase().contains(&user_name.to_lowercase()) {
            return Err(PasswordPolicyError::ContainsUserName);
        }
        Ok(())
    }
}

impl Default for PasswordPolicy {
    fn default() -> PasswordPolicy {
        PasswordPolicy::DEFAULT
    }
}

/// Why a new password is refused (the message is shown to the user; it never quotes the
/// password).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PasswordPolicyError {
    #[error("the user name is empty")]
    EmptyUserName,
    #[error("the password has {found} characters; at least {min} are required")]
    TooShort { min: usize, found: usize },
    #[error("the password has {found} characters; at most {max} are allowed")]
    TooLong { max: usize, found: usize },
    #[error(
        "the password uses {found} of the 4 character classes (lower case, upper case, digits, \
         symbols); at least {min} are required"
    )]
    TooFewClasses { min: usize, found: usize },
    #[error("the password contains the user name")]
    ContainsUserName,
}

/// [`PasswordPolicy::DEFAULT`]`.check(password, user_name)`.
pub fn check_password_policy(
    password: &Secret,
    user_name: &str,
) -> Result<(), PasswordPolicyError> {
    PasswordPolicy::DEFAULT.check(password, user_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::CountingRandom;

    /// Cheap parameters for the tests that only exercise the plumbing.
    const CHEAP: PasswordHashing = PasswordHashing {
        memory_kib: 256,
        iterations: 2,
        lanes: 1,
    };

    #[test]
    fn hashes_match_the_argon2_reference_vectors() {
        // phc-winner-argon2's test vectors (Argon2id, v=0x13, "password", "somesalt").
        assert_eq!(
            hash_with_salt(&CHEAP, b"password", b"somesalt").unwrap(),
            "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4"
        );
        let reference = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        assert_eq!(
            verify_password(reference, &Secret::new("password")),
            Ok(true)
        );
        assert_eq!(
            verify_password(reference, &Secret::new("Password")),
            Ok(false)
        );
    }

    #[test]
    fn the_default_parameters_hash_and_verify() {
        let password = Secret::new("Qingxiu-2026-noc");
        let phc = hash_password(&password, &mut CountingRandom::new(1)).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        // The salt is the 16 bytes the source gave (1, 2, …, 16), in PHC's unpadded base64.
        assert!(phc.contains("$AQIDBAUGBwgJCgsMDQ4PEA$"), "{phc}");
        assert_eq!(verify_password(&phc, &password), Ok(true));
        assert_eq!(
            verify_password(&phc, &Secret::new("Qingxiu-2026-NOC")),
            Ok(false)
        );
        assert_eq!(verify_password(&phc, &Secret::new("")), Ok(false));
        assert!(!needs_rehash(&phc, &PasswordHashing::DEFAULT));
        assert!(needs_rehash(&phc, &CHEAP));
    }

    #[test]
    fn salts_come_from_the_source_and_differ_per_hash() {
        let password = Secret::new("Qingxiu-2026-noc");
        let first = hash_password_with(&CHEAP, &password, &mut CountingRandom::new(1)).unwrap();
        let again = hash_password_with(&CHEAP, &password, &mut CountingRandom::new(1)).unwrap();
        let other = hash_password_with(&CHEAP, &password, &mut CountingRandom::new(100)).unwrap();
        assert_eq!(first, again);
        assert_ne!(first, other);
        assert_eq!(verify_password(&other, &password), Ok(true));
        let mut failing = CountingRandom::new(0);
        failing.fail = true;
        assert_eq!(
            hash_password_with(&CHEAP, &password, &mut failing),
            Err(PasswordError::Random(RandomError))
        );
    }

    #[test]
    fn malformed_or_foreign_hashes_are_errors_not_mismatches() {
        let password = Secret::new("password");
        for phc in [
            "",
            "not a hash",
            "$argon2id",
            "$argon2id$v=19$m=256,t=2,p=1",
            "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ",
            "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$",
            "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$!!!!",
            "$argon2id$v=19$m=256,t=2,p=1$$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
            "$argon2id$v=19$m=x,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
            "$argon2id$v=19$m=1,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
            "$argon2id$v=19$m=256,t=0,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
            "$argon2id$v=7$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
            "$argon2id$v=19$m=256,t=2,p=1$c2E$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
        ] {
            assert!(verify_password(phc, &password).is_err(), "{phc:?}");
            assert!(needs_rehash(phc, &PasswordHashing::DEFAULT), "{phc:?}");
        }
        assert_eq!(
            verify_password(
                "$argon2i$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
                &password
            ),
            Err(PasswordError::UnsupportedAlgorithm("argon2i".to_owned()))
        );
        assert!(matches!(
            verify_password(
                "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
                &password
            ),
            Err(PasswordError::MalformedHash(_) | PasswordError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn hostile_costs_are_refused_before_any_work() {
        let password = Secret::new("password");
        let error = verify_password(
            "$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
            &password,
        )
        .unwrap_err();
        assert_eq!(
            error,
            PasswordError::CostTooHigh {
                memory_kib: u32::MAX,
                iterations: 2,
                lanes: 1
            }
        );
        assert!(error.to_string().contains("exceed the limits"));
        assert!(matches!(
            verify_password(
                "$argon2id$v=19$m=256,t=1000000,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
                &password
            ),
            Err(PasswordError::CostTooHigh { .. })
        ));
        let greedy = PasswordHashing {
            memory_kib: MAX_MEMORY_KIB + 1,
            ..PasswordHashing::DEFAULT
        };
        assert!(matches!(
            hash_password_with(&greedy, &password, &mut CountingRandom::new(0)),
            Err(PasswordError::CostTooHigh { .. })
        ));
        let useless = PasswordHashing {
            memory_kib: 1,
            ..PasswordHashing::DEFAULT
        };
        assert!(matches!(
            hash_password_with(&useless, &password, &mut CountingRandom::new(0)),
            Err(PasswordError::Parameters(_))
        ));
    }

    #[test]
    fn the_policy_names_the_rule_broken() {
        let check =
            |password: &str, user: &str| check_password_policy(&Secret::new(password), user);
        assert_eq!(check("Guangxi-2026!", "lihua"), Ok(()));
        assert_eq!(
            check("guangxi20261", "lihua"),
            Err(PasswordPolicyError::TooFewClasses { min: 3, found: 2 })
        );
        assert_eq!(check("guangxi-2026", "lihua"), Ok(()));
        assert_eq!(
            check("Guangxi-26", "lihua"),
            Err(PasswordPolicyError::TooShort { min: 12, found: 10 })
        );
        // Exactly 12 characters passes; 11 does not.
        assert_eq!(check("Abcdefgh123!", "lihua"), Ok(()));
        assert_eq!(
            check("Abcdefgh12!", "lihua"),
            Err(PasswordPolicyError::TooShort { min: 12, found: 11 })
        );
        // Characters, not bytes: 11 汉字 and one digit are 12 characters (classes: other, digit).
        assert_eq!(
            check("南宁青秀区运维中心值班1", "lihua"),
            Err(PasswordPolicyError::TooFewClasses { min: 3, found: 2 })
        );
        assert_eq!(check("南宁青秀区运维中心值班a1", "lihua"), Ok(()));
        assert_eq!(
            check("Noc-LiHua-2026", "lihua"),
            Err(PasswordPolicyError::ContainsUserName)
        );
        assert_eq!(
            check("Noc-LiHua-2026", " LIHUA "),
            Err(PasswordPolicyError::ContainsUserName)
        );
        assert_eq!(
            check("Guangxi-2026!", ""),
            Err(PasswordPolicyError::EmptyUserName)
        );
        assert_eq!(
            check("Guangxi-2026!", "   "),
            Err(PasswordPolicyError::EmptyUserName)
        );
        let long = format!("Aa1{}", "x".repeat(254));
        assert_eq!(
            check(&long, "lihua"),
            Err(PasswordPolicyError::TooLong {
                max: 256,
                found: 257
            })
        );
        let longest = format!("Aa1{}", "x".repeat(253));
        assert_eq!(check(&longest, "lihua"), Ok(()));
        assert_eq!(
            check("guangxi20261", "lihua").unwrap_err().to_string(),
            "the password uses 2 of the 4 character classes (lower case, upper case, digits, \
             symbols); at least 3 are required"
        );
    }
}
