//! API tokens: bearer secrets for scripts and integrations, shown once and kept only as a
//! digest.
//!
//! - A token is `bgt_` followed by 32 random bytes in lower-case base32 (52 characters): the
//!   prefix lets people, log scrubbers and secret scanners recognise a Bagui token, and the
//!   alphabet has nothing that URLs, shells or double-click selection break on.
//! - The control plane stores [`StoredToken`], `sha256:` and the hex SHA-256 of the whole token.
//!   A fast hash is enough — unlike passwords, 256 random bits cannot be guessed, however fast
//!   each guess — and it keeps a request's check in microseconds. A stolen store reveals no
//!   token.
//! - [`token_matches`] compares digests in constant time. The control plane may also use
//!   [`StoredToken::of`] of the presented token as the key to find the record: a map lookup is
//!   not constant-time, but what it could leak is about the digest, which tells nothing of the
//!   token.

use std::fmt;

use ring::digest;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::totp::base32_encode;
use super::{RandomError, RandomSource, Secret, constant_time_eq};

/// The prefix of every API token.
pub const API_TOKEN_PREFIX: &str = "bgt_";

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// The length of a whole token: the prefix and 52 base32 characters.
pub const API_TOKEN_LEN: usize = 4 + 52;

/// The prefix of the stored form.
const DIGEST_PREFIX: &str = "sha256:";

/// The stored form of a token: `sha256:<64 lower-case hex digits>`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StoredToken(String);

impl StoredToken {
    /// The stored form of `presented` (also the lookup key of a presented token).
    pub fn of(presented: &str) -> StoredToken {
        let digest = digest::digest(&digest::SHA256, presented.as_bytes());
        let mut text = String::with_capacity(DIGEST_PREFIX.len() + 64);
        text.push_str(DIGEST_PREFIX);
        for byte in digest.as_ref() {
            text.push_str(&format!("{byte:02x}"));
        }
        StoredToken(text)
    }

    /// Reads a stored form back (from the store or configuration).
    pub fn parse(text: &str) -> Result<StoredToken, StoredTokenError> {
        let Some(hex) = text.strip_prefix(DIGEST_PREFIX) else {
            return Err(StoredTokenError::Prefix);
        };
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(StoredTokenError::Digest);
        }
        Ok(StoredToken(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored digest is no secret, but it is printed short: it is a lookup key, not for logs.
impl fmt::Debug for StoredToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "StoredToken({}…)",
            &self.0[..DIGEST_PREFIX.len() + 8]
        )
    }
}

impl TryFrom<String> for StoredToken {
    type Error = StoredTokenError;

    fn try_from(text: String) -> Result<StoredToken, StoredTokenError> {
        StoredToken::parse(&text)
    }
}

impl From<StoredToken> for String {
    fn from(token: StoredToken) -> String {
        token.0
    }
}

/// Why a stored token digest was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoredTokenError {
    #[error("a stored API token must start with `sha256:`")]
    Prefix,
    #[error("a stored API token must hold 64 lower-case hex digits after `sha256:`")]
    Digest,
}

/// A new token: the secret to show the user once, and the form to store.
pub fn new_api_token<R: RandomSource + ?Sized>(
    rng: &mut R,
) -> Result<(Secret, StoredToken), RandomError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    rng.fill(&mut bytes)?;
    let secret = format!(
        "{API_TOKEN_PREFIX}{}",
        base32_encode(&bytes).to_ascii_lowercase()
    );
    let stored = StoredToken::of(&secret);
    Ok((Secret::new(secret), stored))
}

/// Whether a token presented with a request is the one `stored` was made from. Anything that
/// does not look like a token (wrong prefix or length) does not match.
pub fn token_matches(stored: &StoredToken, presented: &str) -> bool {
    if !looks_like_token(presented) {
        return false;
    }
    constant_time_eq(StoredToken::of(presented).0.as_bytes(), stored.0.as_bytes())
}

/// The prefix, the length and the lower-case base32 alphabet (no secret is involved in this
/// check, only the shape).
pub fn looks_like_token(presented: &str) -> bool {
    presented.len() == API_TOKEN_LEN
        && presented.starts_with(API_TOKEN_PREFIX)
        && presented[API_TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::CountingRandom;

    #[test]
    fn a_new_token_matches_its_stored_form_and_nothing_else() {
        let (secret, stored) = new_api_token(&mut CountingRandom::new(0)).unwrap();
        let token = secret.expose();
        assert_eq!(token.len(), API_TOKEN_LEN);
        // 32 bytes 0, 1, …, 31 in lower-case base32.
        // (Python: base64.b32encode(bytes(range(32))), lower case, padding removed.)
        assert_eq!(
            token,
            "bgt_aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypq"
        );
        assert!(looks_like_token(token));
        assert!(token_matches(&stored, token));
        assert!(!token_matches(&stored, &token.to_uppercase()));
        let mut altered = token.to_owned().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'a' { b'b' } else { b'a' };
        assert!(!token_matches(
            &stored,
            std::str::from_utf8(&altered).unwrap()
        ));
        assert!(!token_matches(&stored, ""));
        assert!(!token_matches(&stored, &token[4..]));
        assert!(!token_matches(&stored, &format!("{token}a")));
        assert!(!token_matches(&stored, "bgt_汉"));
        let (other, other_stored) = new_api_token(&mut CountingRandom::new(1)).unwrap();
        assert_ne!(other.expose(), token);
        assert!(!token_matches(&other_stored, token));
        assert!(!token_matches(&stored, other.expose()));
    }

    #[test]
    fn the_stored_form_is_the_sha256_of_the_token() {
        // FIPS 180-2's "abc" vector, through the stored form.
        assert_eq!(
            StoredToken::of("abc").as_str(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (secret, stored) = new_api_token(&mut CountingRandom::new(9)).unwrap();
        assert_eq!(stored, StoredToken::of(secret.expose()));
        assert!(!stored.as_str().contains(&secret.expose()[4..]));
        let json = serde_json::to_string(&stored).unwrap();
        assert_eq!(json, format!("\"{}\"", stored.as_str()));
        assert_eq!(serde_json::from_str::<StoredToken>(&json).unwrap(), stored);
        assert_eq!(format!("{secret:?}"), "***");
        assert!(format!("{stored:?}").starts_with("StoredToken(sha256:"));
    }

    #[test]
    fn malformed_stored_forms_are_refused() {
        assert_eq!(StoredToken::parse(""), Err(StoredTokenError::Prefix));
        assert_eq!(StoredToken::parse("md5:00"), Err(StoredTokenError::Prefix));
        assert_eq!(
            StoredToken::parse("sha256:abc"),
            Err(StoredTokenError::Digest)
        );
        let upper = format!("sha256:{}", "A".repeat(64));
        assert_eq!(StoredToken::parse(&upper), Err(StoredTokenError::Digest));
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(StoredToken::parse(&good).is_ok());
        let error = serde_json::from_str::<StoredToken>("\"sha256:zz\"").unwrap_err();
        assert!(
            error.to_string().contains("64 lower-case hex digits"),
            "{error}"
        );
    }

    #[test]
    fn a_failing_random_source_makes_no_token() {
        let mut failing = CountingRandom::new(0);
        failing.fail = true;
        assert_eq!(new_api_token(&mut failing), Err(RandomError));
    }
}
