//! SM3 as rustls' transcript hash, and HMAC-SM3 for rustls' generic HKDF.

use ::hmac as hmac_crate;
use rustls::crypto::hash::{self, HashAlgorithm};
use rustls::crypto::hmac;
use sm3::{Digest, Sm3};

use crate::kdf::{HmacSm3, SM3_OUTPUT_LEN};

/// TLS has no `HashAlgorithm` code point for SM3 (the registry is a TLS 1.2 relic). rustls
/// compares these values only to decide whether a session may resume under another suite, so
/// any value no other hash uses will do; this one is from the registry's private-use range
/// (224–255).
const SM3_HASH_ALGORITHM: HashAlgorithm = HashAlgorithm::Unknown(0xe3);

/// SM3 (GB/T 32905) for rustls.
#[derive(Debug)]
pub(crate) struct Sm3Hash;

pub(crate) static SM3: Sm3Hash = Sm3Hash;

impl hash::Hash for Sm3Hash {
    fn start(&self) -> Box<dyn hash::Context> {
        Box::new(Sm3Context(Sm3::new()))
    }

    fn hash(&self, data: &[u8]) -> hash::Output {
        hash::Output::new(&Sm3::digest(data))
    }

    fn output_len(&self) -> usize {
        SM3_OUTPUT_LEN
    }

    fn algorithm(&self) -> HashAlgorithm {
        SM3_HASH_ALGORITHM
    }
}

struct Sm3Context(Sm3);

impl hash::Context for Sm3Context {
    fn fork_finish(&self) -> hash::Output {
        hash::Output::new(&self.0.clone().finalize())
    }

    fn fork(&self) -> Box<dyn hash::Context> {
        Box::new(Sm3Context(self.0.clone()))
    }

    fn finish(self: Box<Self>) -> hash::Output {
        hash::Output::new(&self.0.finalize())
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
}

/// HMAC-SM3 for rustls; [`rustls::crypto::tls13::HkdfUsingHmac`] turns it into HKDF-SM3.
#[derive(Debug)]
pub(crate) struct HmacSm3Algorithm;

pub(crate) static HMAC_SM3: HmacSm3Algorithm = HmacSm3Algorithm;

impl hmac::Hmac for HmacSm3Algorithm {
    fn with_key(&self, key: &[u8]) -> Box<dyn hmac::Key> {
        // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
        let keyed = <HmacSm3 as hmac_crate::KeyInit>::new_from_slice(key)
            .expect("HMAC accepts keys of any length");
        Box::new(HmacSm3Key(keyed))
    }

    fn hash_output_len(&self) -> usize {
        SM3_OUTPUT_LEN
    }
}

/// A keyed HMAC-SM3 state; each tag starts from a clone of it.
struct HmacSm3Key(HmacSm3);

impl hmac::Key for HmacSm3Key {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> hmac::Tag {
        use hmac_crate::Mac;
        let mut mac = self.0.clone();
        mac.update(first);
        for part in middle {
            mac.update(part);
        }
        mac.update(last);
        hmac::Tag::new(&mac.finalize().into_bytes())
    }

    fn tag_len(&self) -> usize {
        SM3_OUTPUT_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hex;
    use rustls::crypto::hash::Hash;
    use rustls::crypto::hmac::Hmac;

    #[test]
    fn sm3_one_shot_and_incremental_agree_with_gbt_32905() {
        let expected = hex("66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0");
        assert_eq!(SM3.hash(b"abc").as_ref(), expected);
        let mut context = SM3.start();
        context.update(b"a");
        let forked = context.fork();
        context.update(b"bc");
        assert_eq!(context.fork_finish().as_ref(), expected);
        assert_eq!(context.finish().as_ref(), expected);
        assert_eq!(forked.finish().as_ref(), SM3.hash(b"a").as_ref());
    }

    #[test]
    fn hmac_sm3_matches_the_kdf_module_and_openssl() {
        let key = HMAC_SM3.with_key(b"Jefe");
        let tag = key.sign_concat(b"what do ya ", &[b"want ", b"for "], b"nothing?");
        assert_eq!(
            tag.as_ref(),
            hex("2e87f1d16862e6d964b50a5200bf2b10b764faa9680a296a2405f24bec39f882")
        );
        assert_eq!(key.tag_len(), 32);
    }
}
