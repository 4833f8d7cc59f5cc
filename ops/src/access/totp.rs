//! Time-based one-time passwords (TOTP, RFC 6238), the second factor of console logins, and the
//! RFC 4648 base32 that authenticator apps use for their secrets.
//!
//! - HOTP (RFC 4226) over HMAC-SHA1 — what every authenticator app computes — on the counter
//!   `floor(unix seconds / 30)`, 6 digits ([`TotpParams::BAGUI`]); the digits are a parameter
//!   (6 to 8) so that RFC 6238's 8-digit test vectors check the same code.
//! - A code is accepted for the current step and one step either side (±30 s of clock drift
//!   between the phone and the server).
//! - [`TotpGuard`] remembers the last accepted step and refuses it and every earlier step, so
//!   a code seen over a shoulder or in a proxy log cannot be used a second time.
//! - Secrets are 20 random bytes (160 bits, RFC 4226's recommended length; at least 16 are
//!   required), shown to the user once as base32 inside an `otpauth://` URI (a QR code).

use ring::hmac;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{RandomError, RandomSource, Secret, constant_time_eq};
use crate::model::Millis;
use crate::notify::encode::percent_encode;

/// The issuer shown in authenticator apps.
pub const ISSUER: &str = "Bagui";

/// The length of a generated secret, in bytes.
pub const SECRET_LEN: usize = 20;

/// The shortest secret accepted, in bytes (RFC 4226: at least 128 bits).
pub const MIN_SECRET_LEN: usize = 16;

/// Step length and number of digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpParams {
    step_seconds: u64,
    digits: u32,
}

impl TotpParams {
    /// 30-second steps, 6 digits: what authenticator apps assume.
    pub const BAGUI: TotpParams = TotpParams {
        step_seconds: 30,
        digits: 6,
    };

    /// Other parameters: a step of 1 s to 1 h and 6 to 8 digits.
    pub fn new(step_seconds: u64, digits: u32) -> Result<TotpParams, TotpError> {
        if !(1..=3600).contains(&step_seconds) {
            return Err(TotpError::Step(step_seconds));
        }
        if !(6..=8).contains(&digits) {
            return Err(TotpError::Digits(digits));
        }
        Ok(TotpParams {
            step_seconds,
            digits,
        })
    }

    pub fn step_seconds(&self) -> u64 {
        self.step_seconds
    }

    pub fn digits(&self) -> u32 {
        self.digits
    }

    /// The step (RFC 6238's `T`) that contains `at`.
    pub fn step_at(&self, at: Millis) -> u64 {
        at / 1000 / self.step_seconds
    }
}

/// A TOTP secret: raw bytes, `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl TotpSecret {
    /// A fresh secret of [`SECRET_LEN`] bytes.
    pub fn generate<R: RandomSource + ?Sized>(rng: &mut R) -> Result<TotpSecret, RandomError> {
        let mut bytes = vec![0u8; SECRET_LEN];
        rng.fill(&mut bytes)?;
        Ok(TotpSecret(bytes))
    }

    /// A secret of at least [`MIN_SECRET_LEN`] bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<TotpSecret, TotpError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(TotpError::SecretTooShort(bytes.len()));
        }
        Ok(TotpSecret(bytes))
    }

    /// Reads the base32 form (as stored, or as typed from an app's setup screen).
    pub fn from_base32(text: &Secret) -> Result<TotpSecret, TotpError> {
        TotpSecret::from_bytes(base32_decode(text.expose())?)
    }

    /// The base32 form (upper case, no padding), to store or to show once.
    pub fn to_base32(&self) -> Secret {
        Secret::new(base32_encode(&self.0))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("***")
    }
}

/// Why a TOTP setting or code was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TotpError {
    #[error("a TOTP step of {0} s is not between 1 and 3600")]
    Step(u64),
    #[error("TOTP codes of {0} digits are not supported; use 6 to 8")]
    Digits(u32),
    #[error("the TOTP secret has {0} bytes; at least {MIN_SECRET_LEN} are required")]
    SecretTooShort(usize),
    #[error("the TOTP secret is not valid base32: {0}")]
    Base32(#[from] Base32Error),
    #[error("the one-time code must be {digits} digits")]
    MalformedCode { digits: u32 },
    #[error("the one-time code is wrong or expired")]
    WrongCode,
    #[error("the one-time code was already used")]
    Replayed,
    #[error("the user name for the authenticator is empty")]
    EmptyUserName,
    #[error("the user name for the authenticator cannot contain `:`")]
    ColonInUserName,
}

/// The HOTP value (RFC 4226 §5.3) of `counter`, as `digits` decimal digits.
fn hotp(secret: &[u8], counter: u64, digits: u32) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let mac = tag.as_ref();
    // Dynamic truncation: the low nibble of the last byte picks four bytes.
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        mac[offset],
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]) & 0x7fff_ffff;
    let value = binary % 10u32.pow(digits);
    format!("{value:0width$}", width = digits as usize)
}

/// The code for the step that contains `at`.
pub fn totp_code(secret: &TotpSecret, params: &TotpParams, at: Millis) -> String {
    hotp(secret.as_bytes(), params.step_at(at), params.digits)
}

/// The replay state of one user's TOTP: the last accepted step. Stored by the control plane
/// with the user (serde).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpGuard {
    #[serde(default)]
    pub last_step: Option<u64>,
}

impl TotpGuard {
    pub fn new() -> TotpGuard {
        TotpGuard::default()
    }

    /// Checks `code` at `now`: accepted for the step of `now` and one step either side, once.
    /// Spaces in the code (`123 456`, as apps show it) are ignored.
    pub fn verify(
        &mut self,
        secret: &TotpSecret,
        params: &TotpParams,
        code: &str,
        now: Millis,
    ) -> Result<(), TotpError> {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() != params.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TotpError::MalformedCode {
                digits: params.digits,
            });
        }
        let current = params.step_at(now);
        let mut matched: Option<u64> = None;
        for step in [
            current.checked_sub(1),
            Some(current),
            current.checked_add(1),
        ]
        .into_iter()
        .flatten()
        {
            let expected = hotp(secret.as_bytes(), step, params.digits);
            if constant_time_eq(expected.as_bytes(), code.as_bytes()) {
                matched = Some(step);
            }
        }
        let step = matched.ok_or(TotpError::WrongCode)?;
        if self.last_step.is_some_and(|last| step <= last) {
            return Err(TotpError::Replayed);
        }
        self.last_step = Some(step);
        Ok(())
    }
}

/// The `otpauth://` URI for an authenticator app (Google's Key URI Format):
/// `otpauth://totp/Bagui:{user}?secret=…&issuer=Bagui`, with `digits` and `period` added when
/// they are not 6 and 30. The user name is percent-encoded (汉字 included).
pub fn otpauth_uri(
    user: &str,
    secret: &TotpSecret,
    params: &TotpParams,
) -> Result<Secret, TotpError> {
    let user = user.trim();
    if user.is_empty() {
        return Err(TotpError::EmptyUserName);
    }
    if user.contains(':') {
        return Err(TotpError::ColonInUserName);
    }
    let mut uri = format!(
        "otpauth://totp/{ISSUER}:{}?secret={}&issuer={ISSUER}",
        percent_encode(user),
        secret.to_base32().expose()
    );
    if params.digits != TotpParams::BAGUI.digits {
        uri.push_str(&format!("&digits={}", params.digits));
    }
    if params.step_seconds != TotpParams::BAGUI.step_seconds {
        uri.push_str(&format!("&period={}", params.step_seconds));
    }
    Ok(Secret::new(uri))
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32, upper case, without padding.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u16 = 0;
    let mut bits = 0u32;
    for &byte in bytes {
        buffer = (buffer << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[usize::from((buffer >> bits) & 0x1f)]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            ALPHABET[usize::from((buffer << (5 - bits)) & 0x1f)],
        ));
    }
    out
}

/// Why a text is not base32.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Base32Error {
    #[error("`{character}` at position {position} is not a base32 character (A-Z, 2-7)")]
    Character { position: usize, character: char },
    #[error("{0} base32 characters cannot encode whole bytes")]
    Length(usize),
    #[error("the padding `=` is not where RFC 4648 puts it")]
    Padding,
    #[error("the last base32 character has bits set beyond the data")]
    TrailingBits,
}

/// RFC 4648 base32: upper or lower case, with or without the `=` padding. Refuses characters
/// outside the alphabet, lengths that cannot come from whole bytes, misplaced padding and
/// non-zero unused bits (so every byte string has exactly one accepted spelling per case).
pub fn base32_decode(text: &str) -> Result<Vec<u8>, Base32Error> {
    let data = text.trim_end_matches('=');
    if data.contains('=') {
        return Err(Base32Error::Padding);
    }
    let mut out = Vec::with_capacity(data.len() * 5 / 8);
    let mut buffer: u16 = 0;
    let mut bits = 0u32;
    for (position, character) in data.chars().enumerate() {
        let value = match character {
            'A'..='Z' => u16::from(character as u8 - b'A'),
            'a'..='z' => u16::from(character as u8 - b'a'),
            '2'..='7' => u16::from(character as u8 - b'2') + 26,
            _ => {
                return Err(Base32Error::Character {
                    position,
                    character,
                });
            }
        };
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    // All characters are ASCII from here on, so bytes are characters. Unpadded length mod 8
    // → the padding RFC 4648 adds (`None`: no number of whole bytes gives that length).
    let expected_padding = match data.len() % 8 {
        0 => Some(0),
        2 => Some(6),
        4 => Some(4),
        5 => Some(3),
        7 => Some(1),
        _ => None,
    };
    let Some(expected_padding) = expected_padding else {
        return Err(Base32Error::Length(data.len()));
    };
    let padding = text.len() - data.len();
    if padding != 0 && padding != expected_padding {
        return Err(Base32Error::Padding);
    }
    if buffer != 0 {
        return Err(Base32Error::TrailingBits);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::CountingRandom;

    /// RFC 6238 Appendix B's SHA-1 seed.
    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890".to_vec()).unwrap()
    }

    #[test]
    fn rfc_6238_appendix_b_sha1_vectors() {
        let params = TotpParams::new(30, 8).unwrap();
        for (seconds, expected) in [
            (59_u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(
                totp_code(&rfc_secret(), &params, seconds * 1000),
                expected,
                "T={seconds}"
            );
        }
    }

    #[test]
    fn six_digits_are_the_last_six_of_the_same_value() {
        // RFC 4226 Appendix D: HOTP of the same seed, counters 0 and 1.
        assert_eq!(hotp(rfc_secret().as_bytes(), 0, 6), "755224");
        assert_eq!(hotp(rfc_secret().as_bytes(), 1, 6), "287082");
        assert_eq!(
            totp_code(&rfc_secret(), &TotpParams::BAGUI, 59_000),
            "287082"
        );
        assert_eq!(TotpParams::new(30, 5), Err(TotpError::Digits(5)));
        assert_eq!(TotpParams::new(30, 9), Err(TotpError::Digits(9)));
        assert_eq!(TotpParams::new(0, 6), Err(TotpError::Step(0)));
    }

    #[test]
    fn codes_are_accepted_one_step_either_side_and_no_further() {
        let secret = rfc_secret();
        let params = TotpParams::BAGUI;
        let now = 1_111_111_111_000; // step 37037037, 1 s into it
        let step = params.step_at(now);
        for (offset, accepted) in [
            (-2_i64, false),
            (-1, true),
            (0, true),
            (1, true),
            (2, false),
        ] {
            let code = hotp(
                secret.as_bytes(),
                step.checked_add_signed(offset).unwrap(),
                6,
            );
            let result = TotpGuard::new().verify(&secret, &params, &code, now);
            assert_eq!(result.is_ok(), accepted, "offset {offset}: {result:?}");
            if !accepted {
                assert_eq!(result, Err(TotpError::WrongCode));
            }
        }
        // The step boundary: the code of step+1 is current at its first millisecond.
        let next = (step + 1) * 30_000;
        let code = hotp(secret.as_bytes(), step + 2, 6);
        assert!(
            TotpGuard::new()
                .verify(&secret, &params, &code, next - 1)
                .is_err()
        );
        assert!(
            TotpGuard::new()
                .verify(&secret, &params, &code, next)
                .is_ok()
        );
    }

    #[test]
    fn a_used_step_and_earlier_steps_are_refused() {
        let secret = rfc_secret();
        let params = TotpParams::BAGUI;
        let now = 1_234_567_890_000;
        let step = params.step_at(now);
        let current = totp_code(&secret, &params, now);
        let mut guard = TotpGuard::new();
        assert_eq!(guard.verify(&secret, &params, &current, now), Ok(()));
        assert_eq!(guard.last_step, Some(step));
        assert_eq!(
            guard.verify(&secret, &params, &current, now + 1),
            Err(TotpError::Replayed)
        );
        let previous = hotp(secret.as_bytes(), step - 1, 6);
        assert_eq!(
            guard.verify(&secret, &params, &previous, now),
            Err(TotpError::Replayed)
        );
        let next = hotp(secret.as_bytes(), step + 1, 6);
        assert_eq!(guard.verify(&secret, &params, &next, now), Ok(()));
        assert_eq!(guard.last_step, Some(step + 1));
        // The state survives storage.
        let json = serde_json::to_string(&guard).unwrap();
        let mut restored: TotpGuard = serde_json::from_str(&json).unwrap();
        assert_eq!(
            restored.verify(&secret, &params, &next, now),
            Err(TotpError::Replayed)
        );
    }

    #[test]
    fn malformed_codes_are_refused_before_comparing() {
        let secret = rfc_secret();
        let params = TotpParams::BAGUI;
        let now = 59_000;
        let mut guard = TotpGuard::new();
        for code in ["", "28708", "2870822", "28708a", "２８７０８２", "-28708"] {
            assert_eq!(
                guard.verify(&secret, &params, code, now),
                Err(TotpError::MalformedCode { digits: 6 }),
                "{code:?}"
            );
        }
        assert_eq!(guard.last_step, None);
        assert_eq!(guard.verify(&secret, &params, " 287 082 ", now), Ok(()));
    }

    #[test]
    fn rfc_4648_base32_vectors() {
        for (plain, padded) in [
            ("", ""),
            ("f", "MY======"),
            ("fo", "MZXQ===="),
            ("foo", "MZXW6==="),
            ("foob", "MZXW6YQ="),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI======"),
        ] {
            let unpadded = padded.trim_end_matches('=');
            assert_eq!(base32_encode(plain.as_bytes()), unpadded);
            assert_eq!(
                base32_decode(unpadded).unwrap(),
                plain.as_bytes(),
                "{unpadded}"
            );
            assert_eq!(base32_decode(padded).unwrap(), plain.as_bytes(), "{padded}");
            assert_eq!(
                base32_decode(&unpadded.to_lowercase()).unwrap(),
                plain.as_bytes()
            );
        }
        // RFC 6238's seed in the form authenticator apps are given it.
        assert_eq!(
            base32_encode(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn base32_round_trips_every_length_and_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        for length in 0..=40 {
            for start in [0, 97, 215] {
                let slice = &bytes[start..start + length];
                assert_eq!(base32_decode(&base32_encode(slice)).unwrap(), slice);
            }
        }
    }

    #[test]
    fn bad_base32_is_refused_with_the_reason() {
        assert_eq!(
            base32_decode("MZXW1"),
            Err(Base32Error::Character {
                position: 4,
                character: '1'
            })
        );
        assert_eq!(
            base32_decode("MZ XW").unwrap_err().to_string(),
            "` ` at position 2 is not a base32 character (A-Z, 2-7)"
        );
        assert!(matches!(
            base32_decode("MZ汉"),
            Err(Base32Error::Character {
                character: '汉',
                ..
            })
        ));
        assert_eq!(base32_decode("M"), Err(Base32Error::Length(1)));
        assert_eq!(base32_decode("MZX"), Err(Base32Error::Length(3)));
        assert_eq!(base32_decode("MZXW6Y"), Err(Base32Error::Length(6)));
        assert_eq!(base32_decode("MY==="), Err(Base32Error::Padding));
        assert_eq!(base32_decode("M=Y====="), Err(Base32Error::Padding));
        // "MZ" is "f"; "M3" sets bits beyond the byte.
        assert_eq!(base32_decode("M3"), Err(Base32Error::TrailingBits));
        assert_eq!(base32_decode("========"), Err(Base32Error::Padding));
        assert_eq!(
            base32_decode("汉"),
            Err(Base32Error::Character {
                position: 0,
                character: '汉'
            })
        );
    }

    #[test]
    fn secrets_are_generated_checked_and_never_printed() {
        let secret = TotpSecret::generate(&mut CountingRandom::new(0)).unwrap();
        assert_eq!(secret.as_bytes().len(), SECRET_LEN);
        assert_eq!(format!("{secret:?}"), "***");
        let text = secret.to_base32();
        assert_eq!(text.expose().len(), 32);
        assert_eq!(TotpSecret::from_base32(&text).unwrap(), secret);
        assert_eq!(
            TotpSecret::from_base32(&Secret::new("MZXW6YTBOI")),
            Err(TotpError::SecretTooShort(6))
        );
        assert!(matches!(
            TotpSecret::from_base32(&Secret::new("not base32!")),
            Err(TotpError::Base32(_))
        ));
        let mut failing = CountingRandom::new(0);
        failing.fail = true;
        assert_eq!(TotpSecret::generate(&mut failing), Err(RandomError));
    }

    #[test]
    fn the_otpauth_uri_names_issuer_user_and_secret() {
        let secret = rfc_secret();
        assert_eq!(
            otpauth_uri("lihua", &secret, &TotpParams::BAGUI)
                .unwrap()
                .expose(),
            "otpauth://totp/Bagui:lihua?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Bagui"
        );
        assert_eq!(
            otpauth_uri("李华 noc", &secret, &TotpParams::new(60, 8).unwrap())
                .unwrap()
                .expose(),
            "otpauth://totp/Bagui:%E6%9D%8E%E5%8D%8E%20noc?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Bagui&digits=8&period=60"
        );
        assert_eq!(
            otpauth_uri(" ", &secret, &TotpParams::BAGUI),
            Err(TotpError::EmptyUserName)
        );
        assert_eq!(
            otpauth_uri("a:b", &secret, &TotpParams::BAGUI),
            Err(TotpError::ColonInUserName)
        );
        assert_eq!(
            format!(
                "{:?}",
                otpauth_uri("lihua", &secret, &TotpParams::BAGUI).unwrap()
            ),
            "***"
        );
    }
}
