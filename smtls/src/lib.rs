//! ShangMi transport primitives for Bagui's `shangmi` crypto profile (RFC 8998 over QUIC).
//!
//! The profile: TLS 1.3 with the single cipher suite TLS_SM4_GCM_SM3 (0x00C6), key exchange on
//! curveSM2 (group 41), signatures sm2sig_sm3 (0x0708) over SM2 certificates. QUIC packet
//! protection uses that suite's AEAD and hash the way RFC 9001 uses any TLS 1.3 suite: SM4-GCM
//! packet keys and IVs from HKDF-SM3, and header protection as RFC 9001 §5.4.3 does it for AES,
//! with SM4 in its place ([`header`]). QUIC Initial packets stay AES-128-GCM as RFC 9001 requires.
//!
//! [`provider`] assembles them into a rustls `CryptoProvider` and client/server configurations
//! (usable by quinn with an AES-128-GCM Initial suite, see [`provider::quic_initial_suite`]).
//!
//! | module | what | built on |
//! |---|---|---|
//! | [`sm4`] | SM4 block cipher, constant time | this crate (bitsliced, tower-field S-box) |
//! | [`gcm`] | SM4-GCM AEAD: TLS records, QUIC packets | `aes-gcm`'s generic GCM over [`sm4::Sm4`] |
//! | [`header`] | QUIC header-protection mask | [`sm4::Sm4`] |
//! | [`kdf`] | HMAC-SM3, HKDF-SM3, HKDF-Expand-Label | `hmac`, `hkdf`, `sm3` |
//! | [`sign`] | SM2 sign/verify with an explicit signer ID | `sm2` |
//! | [`suite`] | code points and signer IDs | — |
//! | [`provider`] | rustls `CryptoProvider`, client/server configs | `rustls` |
//!
//! Why constant time: the RustCrypto `sm4` crate looks up its S-box at indices derived from the
//! key and data, so cache timing leaks key bits to anyone sharing the CPU. That is acceptable for
//! records sealed at rest (`bagui-protocol` uses it under SM4-CCM, on the host that holds the
//! key), but a transport key is used on every packet of a long-lived connection on shared
//! machines, so every use of SM4 here goes through [`sm4::Sm4`], which never indexes memory or
//! branches on secret data. Its outputs equal the table version's (tested on random keys), and
//! in bulk it runs at about the table version's speed.

#![forbid(unsafe_code)]

pub mod cert;
pub mod gcm;
pub mod header;
pub mod kdf;
pub mod provider;
pub mod sign;
pub mod sm4;
pub mod suite;

#[cfg(test)]
mod test_util {
    /// Decodes a hex string (either case; whitespace-free) for test vectors.
    pub fn hex(text: &str) -> Vec<u8> {
        text.as_bytes()
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }
}
