//! SM3 digests in the `sm3:<hex>` form used on the wire and in join commands.
//!
//! Every integrity hash Bagui defines is SM3 (GB/T 32905): the CA fingerprint an agent pins at
//! join, certificate fingerprints, hardware fingerprints, file digests and the audit chain.

use sm3::{Digest, Sm3};

/// The SM3 digest of `bytes`.
pub fn sm3(bytes: &[u8]) -> [u8; 32] {
    Sm3::digest(bytes).into()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    out
}

/// Decodes hex (either case); `None` if `text` is not whole hex bytes.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok())
        .collect()
}

/// `sm3:<64 hex digits>` of `bytes`.
pub fn sm3_tagged(bytes: &[u8]) -> String {
    format!("sm3:{}", hex(&sm3(bytes)))
}

/// Checks that `text` is a well-formed `sm3:<64 hex digits>` value and normalises its case.
pub fn parse_sm3_tagged(text: &str) -> Result<String, String> {
    let digits = text
        .strip_prefix("sm3:")
        .ok_or_else(|| format!("{text:?} is not of the form sm3:<64 hex digits>"))?;
    if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{text:?} is not of the form sm3:<64 hex digits>"));
    }
    Ok(format!("sm3:{}", digits.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gbt_32905_vector() {
        // GB/T 32905-2016 Appendix A.1: SM3("abc").
        assert_eq!(
            hex(&sm3(b"abc")),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(&[0, 0x7f, 0xff])), Some(vec![0, 0x7f, 0xff]));
        assert_eq!(unhex("ABcd"), Some(vec![0xab, 0xcd]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é1"), None);
    }

    #[test]
    fn tagged_values_parse() {
        let tagged = sm3_tagged(b"abc");
        assert_eq!(
            parse_sm3_tagged(&tagged.to_uppercase().replace("SM3:", "sm3:")),
            Ok(tagged)
        );
        assert!(parse_sm3_tagged("sha256:00").is_err());
        assert!(parse_sm3_tagged("sm3:abc").is_err());
        assert!(parse_sm3_tagged(&format!("sm3:{}", "g".repeat(64))).is_err());
    }
}
