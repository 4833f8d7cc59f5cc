//! The ShangMi (国密) primitives Bagui relies on, checked against the standards' own examples:
//! SM3 (GB/T 32905-2016, Appendix A), SM4 (GB/T 32907-2016, Appendix A), SM4-CCM (RFC 8998,
//! Appendix A.2) and SM2 (GB/T 32918.5-2017 / GM/T 0003.5-2012, Annex A: signature on the
//! recommended curve; Annex C: public-key encryption), plus the envelope built from them.

use bagui_protocol::digest::unhex;
use bagui_protocol::sealed::{self, DataKey, Opener, Recipient, RecordContext, Sm4Ccm};
use ccm::aead::{AeadInOut, KeyInit};
use sm2::dsa::signature::hazmat::PrehashVerifier;
use sm2::dsa::signature::{Signer, Verifier};
use sm2::dsa::{Signature, SigningKey, VerifyingKey};
use sm3::{Digest, Sm3};
use sm4::cipher::BlockCipherEncrypt;

fn hex(text: &str) -> Vec<u8> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    unhex(&text.to_lowercase()).expect("test vector hex")
}

// --- SM3 ---------------------------------------------------------------------------------------

#[test]
fn sm3_gbt_32905_example_1_abc() {
    assert_eq!(
        Sm3::digest(b"abc").to_vec(),
        hex("66c7f0f4 62eeedd9 d1f2d46b dc10e4e2 4167c487 5cf2f7a2 297da02b 8f4ba8e0")
    );
}

#[test]
fn sm3_gbt_32905_example_2_abcd_times_16() {
    assert_eq!(
        Sm3::digest(b"abcd".repeat(16)).to_vec(),
        hex("debe9ff9 2275b8a1 38604889 c18e5a4d 6fdb70e5 387e5765 293dcba3 9c0c5732")
    );
}

// --- SM4 ---------------------------------------------------------------------------------------

const SM4_KEY: &str = "0123456789abcdeffedcba9876543210";

fn sm4() -> sm4::Sm4 {
    <sm4::Sm4 as sm4::cipher::KeyInit>::new_from_slice(&hex(SM4_KEY)).unwrap()
}

#[test]
fn sm4_gbt_32907_example_1_one_block() {
    let mut block: [u8; 16] = hex(SM4_KEY).try_into().unwrap();
    sm4().encrypt_block((&mut block).into());
    assert_eq!(block.to_vec(), hex("681edf34d206965e86b3e94f536e4246"));
}

/// Example 2: the plaintext encrypted 1,000,000 times with the same key. The cipher crates
/// are built optimised even in debug (see the workspace profile), so this takes well under a
/// second.
#[test]
fn sm4_gbt_32907_example_2_a_million_times() {
    let cipher = sm4();
    let mut block: [u8; 16] = hex(SM4_KEY).try_into().unwrap();
    for _ in 0..1_000_000 {
        cipher.encrypt_block((&mut block).into());
    }
    assert_eq!(block.to_vec(), hex("595298c7c6fd271f0402f804c33d3f66"));
}

#[test]
fn sm4_ccm_rfc_8998_appendix_a2() {
    let key = hex(SM4_KEY);
    let nonce: [u8; 12] = hex("00001234567800000000ABCD").try_into().unwrap();
    let aad = hex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2");
    let plaintext = hex(
        "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD
         EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA",
    );
    let expected = hex(
        "48AF93501FA62ADBCD414CCE6034D895DDA1BF8F132F042098661572E7483094
         FD12E518CE062C98ACEE28D95DF4416BED31A2F04476C18BB40C84A74B97DC5B",
    );
    let tag = hex("16842D4FA186F56AB33256971FA110F4");
    let cipher = Sm4Ccm::new_from_slice(&key).unwrap();
    let mut buffer = plaintext.clone();
    let computed = cipher
        .encrypt_inout_detached(&nonce.into(), &aad, buffer.as_mut_slice().into())
        .unwrap();
    assert_eq!(buffer, expected);
    assert_eq!(computed.to_vec(), tag);
    let tag: [u8; 16] = tag.try_into().unwrap();
    cipher
        .decrypt_inout_detached(
            &nonce.into(),
            &aad,
            buffer.as_mut_slice().into(),
            &tag.into(),
        )
        .unwrap();
    assert_eq!(buffer, plaintext);
}

// --- SM2 ---------------------------------------------------------------------------------------

/// The recommended curve's parameters (GB/T 32918.5): a, b, Gx, Gy.
const CURVE: [&str; 4] = [
    "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC",
    "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93",
    "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7",
    "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0",
];
/// The example key pair of GB/T 32918.5 Annex A and C.
const D_A: &str = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8";
const X_A: &str = "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020";
const Y_A: &str = "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13";
const ID_A: &str = "1234567812345678";
const MESSAGE: &[u8] = b"message digest";
/// The random k of both examples.
const K: &str = "59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21";

fn example_secret() -> sm2::SecretKey {
    sm2::SecretKey::from_slice(&hex(D_A)).unwrap()
}

fn example_public_sec1() -> Vec<u8> {
    [vec![0x04], hex(X_A), hex(Y_A)].concat()
}

fn published_signature() -> Signature {
    let rs = hex(
        "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
         B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA",
    );
    let rs: [u8; 64] = rs.try_into().unwrap();
    Signature::from_bytes(&rs.into()).unwrap()
}

#[test]
fn sm2_gbt_32918_example_key_pair() {
    assert_eq!(
        example_secret().public_key().to_sec1_bytes().to_vec(),
        example_public_sec1()
    );
}

#[test]
fn sm2_gbt_32918_annex_a_z_a_and_e() {
    // Z_A = SM3(ENTL_A || ID_A || a || b || xG || yG || xA || yA), e = SM3(Z_A || M).
    let mut hasher = Sm3::new();
    hasher.update(((ID_A.len() * 8) as u16).to_be_bytes());
    hasher.update(ID_A.as_bytes());
    for parameter in CURVE {
        hasher.update(hex(parameter));
    }
    hasher.update(hex(X_A));
    hasher.update(hex(Y_A));
    let z_a = hasher.finalize();
    assert_eq!(
        z_a.to_vec(),
        hex("B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3")
    );
    let e = Sm3::new()
        .chain_update(z_a)
        .chain_update(MESSAGE)
        .finalize();
    assert_eq!(
        e.to_vec(),
        hex("F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640")
    );
    // The published signature verifies over that e...
    let key = VerifyingKey::from_sec1_bytes(ID_A, &example_public_sec1()).unwrap();
    key.verify_prehash(&e, &published_signature()).unwrap();
}

#[test]
fn sm2_gbt_32918_annex_a_published_signature_verifies() {
    let key = VerifyingKey::from_sec1_bytes(ID_A, &example_public_sec1()).unwrap();
    let signature = published_signature();
    key.verify(MESSAGE, &signature).unwrap();
    // ...and nothing else does: another message, another ID, a changed signature.
    assert!(key.verify(b"message digesT", &signature).is_err());
    let other_id = VerifyingKey::from_sec1_bytes("1234567812345679", &example_public_sec1());
    assert!(other_id.unwrap().verify(MESSAGE, &signature).is_err());
    let mut bytes = signature.to_bytes();
    bytes[63] ^= 1;
    if let Ok(changed) = Signature::from_bytes(&bytes) {
        assert!(key.verify(MESSAGE, &changed).is_err());
    }
}

/// The crate draws k itself (RFC 6979), so the standard's k cannot be imposed on a signature:
/// a signature made with the example key verifies, under the example ID only.
#[test]
fn sm2_signature_with_the_example_key_round_trips() {
    let key = SigningKey::new(ID_A, &example_secret()).unwrap();
    let signature: Signature = key.sign(MESSAGE);
    key.verifying_key().verify(MESSAGE, &signature).unwrap();
    let stranger = VerifyingKey::from_sec1_bytes("ALICE123@YAHOO.COM", &example_public_sec1());
    assert!(stranger.unwrap().verify(MESSAGE, &signature).is_err());
}

/// GB/T 32918.5 Annex C: "encryption standard" encrypted to the example key with k.
const PUBLISHED_CIPHERTEXT_C1: [&str; 2] = [
    "04EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73",
    "E858F9D81E5430A57B36DAAB8F950A3C64E6EE6A63094D99283AFF767E124DF0",
];
const PUBLISHED_CIPHERTEXT_C3: &str =
    "59983C18F809E262923C53AEC295D30383B54E39D609D160AFCB1908D0BD8766";
const PUBLISHED_CIPHERTEXT_C2: &str = "21886CA989CA9C7D58087307CA93092D651EFA";

fn published_c1c3c2() -> Vec<u8> {
    [
        vec![0x04],
        hex(PUBLISHED_CIPHERTEXT_C1[0]),
        hex(PUBLISHED_CIPHERTEXT_C1[1]),
        hex(PUBLISHED_CIPHERTEXT_C3),
        hex(PUBLISHED_CIPHERTEXT_C2),
    ]
    .concat()
}

#[test]
fn sm2_gbt_32918_annex_c_published_ciphertext_decrypts() {
    let opener = Opener::new(&example_secret());
    assert_eq!(
        opener.unwrap_bytes(&published_c1c3c2()).unwrap(),
        b"encryption standard"
    );
    let mut damaged = published_c1c3c2();
    damaged[70] ^= 1;
    assert!(opener.unwrap_bytes(&damaged).is_err());
}

/// A generator that yields the standard's k (big-endian, as the scalar is read).
struct FixedK(Vec<u8>);

impl sm2::elliptic_curve::rand_core::TryRng for FixedK {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut bytes = [0; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut bytes = [0; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        let take = dst.len().min(self.0.len());
        dst[..take].copy_from_slice(&self.0[..take]);
        self.0.drain(..take);
        Ok(())
    }
}

impl sm2::elliptic_curve::rand_core::TryCryptoRng for FixedK {}

#[test]
fn sm2_gbt_32918_annex_c_encryption_with_the_standards_k() {
    let key = sm2::pke::EncryptingKey::new_with_mode(
        example_secret().public_key(),
        sm2::pke::Mode::C1C3C2,
    );
    let ciphertext = key
        .encrypt(&mut FixedK(hex(K)), b"encryption standard")
        .unwrap();
    assert_eq!(ciphertext, published_c1c3c2());
}

#[test]
fn sm2_encryption_round_trips_a_data_key() {
    let secret = example_secret();
    let recipient = Recipient::new(secret.public_key());
    let wrapped = recipient.wrap(&[0x5A; 16]).unwrap();
    assert_eq!(wrapped.len(), sealed::WRAPPED_KEY_LEN);
    assert_eq!(
        Opener::new(&secret).unwrap_bytes(&wrapped).unwrap(),
        [0x5A; 16]
    );
}

// --- The envelope --------------------------------------------------------------------------------

#[test]
fn the_envelope_opens_with_the_example_key_and_not_with_another() {
    let secret = example_secret();
    let mut data_key = DataKey::generate(&Recipient::new(secret.public_key())).unwrap();
    let context = RecordContext {
        lane: bagui_protocol::Lane::Inventory,
        seq: 1000,
        created_ms: 1_795_000_123_456,
        kind: "host_facts",
    };
    let body = data_key.seal(&context, b"host facts").unwrap();
    assert_eq!(
        Opener::new(&secret)
            .open(sealed::SM4_CCM_SM2, &body, &context)
            .unwrap(),
        b"host facts"
    );
    let other = sm2::SecretKey::from_slice(&hex(K)).unwrap();
    assert_eq!(
        Opener::new(&other).open(sealed::SM4_CCM_SM2, &body, &context),
        Err(sealed::SealError::Unwrap)
    );
}
