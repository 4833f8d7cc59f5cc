//! ECDHE on curveSM2 (RFC 8998 §3.2.1, group 41): 65-byte uncompressed SEC1 key shares, the
//! shared secret is the x coordinate of the product point.

use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::{Error, NamedGroup, PeerMisbehaved, ProtocolVersion};
use sm2::elliptic_curve::Generate;
use sm2::elliptic_curve::point::AffineCoordinates;
use sm2::{PublicKey, SecretKey};

use crate::suite::CURVE_SM2;

/// Length of an uncompressed SEC1 point on the SM2 curve: 0x04 || x || y.
pub const KEY_SHARE_LEN: usize = 65;

/// The curveSM2 key-exchange group.
#[derive(Debug)]
pub(crate) struct CurveSm2;

pub(crate) static CURVE_SM2_KX: CurveSm2 = CurveSm2;

pub(crate) const NAMED_GROUP: NamedGroup = NamedGroup::Unknown(CURVE_SM2);

impl SupportedKxGroup for CurveSm2 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let secret = SecretKey::try_generate().map_err(|_| Error::FailedToGetRandomBytes)?;
        let pub_key = secret.public_key().to_sec1_bytes().into_vec();
        Ok(Box::new(Sm2KeyExchange { secret, pub_key }))
    }

    fn name(&self) -> NamedGroup {
        NAMED_GROUP
    }

    /// RFC 8998 defines curveSM2 for TLS 1.3 only.
    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        version == ProtocolVersion::TLSv1_3
    }
}

struct Sm2KeyExchange {
    secret: SecretKey,
    pub_key: Vec<u8>,
}

impl ActiveKeyExchange for Sm2KeyExchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        let peer = parse_key_share(peer_pub_key)?;
        let shared = (peer.to_projective() * *self.secret.to_nonzero_scalar()).to_affine();
        Ok(SharedSecret::from(&shared.x()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.pub_key
    }

    fn group(&self) -> NamedGroup {
        NAMED_GROUP
    }
}

/// Accepts only an uncompressed point that lies on the SM2 curve and is not the identity
/// (`PublicKey::from_sec1_bytes` checks both); SM2's cofactor is 1, so such a point has full
/// order and the product with a non-zero scalar is never the identity.
fn parse_key_share(bytes: &[u8]) -> Result<PublicKey, Error> {
    if bytes.len() != KEY_SHARE_LEN || bytes[0] != 0x04 {
        return Err(PeerMisbehaved::InvalidKeyShare.into());
    }
    PublicKey::from_sec1_bytes(bytes).map_err(|_| PeerMisbehaved::InvalidKeyShare.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm2::elliptic_curve::group::Group;
    use sm2::elliptic_curve::sec1::ToSec1Point;

    fn exchange() -> Box<dyn ActiveKeyExchange> {
        CURVE_SM2_KX.start().unwrap()
    }

    #[test]
    fn both_sides_derive_the_same_32_byte_secret() {
        let (alice, bob) = (exchange(), exchange());
        assert_eq!(alice.pub_key().len(), KEY_SHARE_LEN);
        assert_eq!(alice.pub_key()[0], 0x04);
        let bob_pub = bob.pub_key().to_vec();
        let alice_pub = alice.pub_key().to_vec();
        let at_alice = alice.complete(&bob_pub).unwrap();
        let at_bob = bob.complete(&alice_pub).unwrap();
        assert_eq!(at_alice.secret_bytes(), at_bob.secret_bytes());
        assert_eq!(at_alice.secret_bytes().len(), 32);
    }

    #[test]
    fn matches_scalar_multiplication_by_hand() {
        // Shared secret = x([a]·B) with B = [b]·G.
        let a = SecretKey::from_slice(&[0x11; 32]).unwrap();
        let b = SecretKey::from_slice(&[0x22; 32]).unwrap();
        let alice = Box::new(Sm2KeyExchange {
            pub_key: a.public_key().to_sec1_bytes().into_vec(),
            secret: a.clone(),
        });
        let b_pub = b.public_key().to_sec1_bytes();
        let secret = alice.complete(&b_pub).unwrap();
        let product = (sm2::ProjectivePoint::generator()
            * (*a.to_nonzero_scalar() * *b.to_nonzero_scalar()))
        .to_affine();
        assert_eq!(secret.secret_bytes(), &product.x()[..]);
    }

    fn assert_rejected(share: &[u8]) {
        let error = exchange()
            .complete(share)
            .err()
            .expect("share must be rejected");
        assert_eq!(
            error,
            Error::PeerMisbehaved(PeerMisbehaved::InvalidKeyShare),
            "{share:02x?}"
        );
    }

    #[test]
    fn invalid_shares_are_rejected() {
        let good = exchange().pub_key().to_vec();
        // Compressed form, wrong lengths, the identity, a point off the curve.
        let compressed = SecretKey::from_slice(&[0x11; 32])
            .unwrap()
            .public_key()
            .to_sec1_point(true);
        assert_rejected(compressed.as_bytes());
        assert_rejected(&[]);
        assert_rejected(&[0x00]);
        assert_rejected(&good[..64]);
        assert_rejected(&[good.as_slice(), &[0]].concat());
        let mut off_curve = good.clone();
        off_curve[64] ^= 0x01;
        assert_rejected(&off_curve);
        let mut zeros = vec![0u8; KEY_SHARE_LEN];
        zeros[0] = 0x04;
        assert_rejected(&zeros);
        let mut bad_prefix = good;
        bad_prefix[0] = 0x06;
        assert_rejected(&bad_prefix);
    }
}
