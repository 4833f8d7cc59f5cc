//! Bitsliced SM4: the rounds for [`BLOCKS`] blocks at once (the path behind the cipher's
//! parallel-block interface, which CTR and GCM use for bulk data), and the same S-box circuit
//! for one word ([`substitute_word`]) for everything else.
//!
//! Each of the four state words is held as eight `u64` planes: plane `i` holds bit `i` of all
//! 64 bytes of that word (16 blocks x 4 bytes), at lane `byte * 16 + block`, where `byte` 0 is
//! the word's most significant byte. In this form:
//!
//! - the S-box is `A · (A · x ⊕ 0xD3)^-1 ⊕ 0xD3` with the inversion done in an isomorphic
//!   tower field (see [`substitute`]); a GF(16) multiplication is 16 ANDs and a few XORs over
//!   whole planes, for 64 bytes at once;
//! - rotating a word by a multiple of 8 bits is rotating every plane by 16 lanes, and rotating
//!   by fewer bits renumbers planes, so the linear transform L costs a few dozen operations;
//! - round keys are broadcast into planes with masks.
//!
//! Nothing is indexed by secret data and nothing branches on it. Converting blocks into planes
//! and back uses carry-free multiplications by constants (constant time on the CPUs Bagui
//! targets) in fixed loops.

/// Blocks processed together (64 bytes of each state word fill a `u64` plane).
pub(super) const BLOCKS: usize = 16;

/// Eight bit planes of one state word across all blocks.
type Planes = [u64; 8];

/// Lanes of one byte position: 16 blocks.
const BYTE_LANES: u32 = BLOCKS as u32;

/// Rotates every word left by `8 · bytes` bits.
#[inline(always)]
fn rotate_words_by_bytes(x: Planes, bytes: u32) -> Planes {
    x.map(|plane| plane.rotate_right(bytes * BYTE_LANES))
}

/// Rotates every word left by `bits` (0 < bits < 8).
#[inline(always)]
fn rotate_words_by_bits(x: Planes, bits: usize) -> Planes {
    core::array::from_fn(|i| {
        if i >= bits {
            x[i - bits]
        } else {
            // These bits come from the top of the next, less significant, byte.
            x[i + 8 - bits].rotate_right(BYTE_LANES)
        }
    })
}

#[inline(always)]
fn xor(a: Planes, b: Planes) -> Planes {
    core::array::from_fn(|i| a[i] ^ b[i])
}

/// The linear transform L: `b ⊕ (b <<< 2) ⊕ (b <<< 10) ⊕ (b <<< 18) ⊕ (b <<< 24)`.
#[inline(always)]
fn linear(b: Planes) -> Planes {
    let by_2 = rotate_words_by_bits(b, 2);
    let sum = xor(b, rotate_words_by_bytes(b, 3));
    let sum = xor(sum, by_2);
    let sum = xor(sum, rotate_words_by_bytes(by_2, 1));
    xor(sum, rotate_words_by_bytes(by_2, 2))
}

/// Applies a GF(2)-linear map given by its rows: output bit `i` is the XOR of the input bits
/// set in `rows[i]`. The rows are constants, so after unrolling this is a fixed XOR network.
#[inline(always)]
fn linear_map<const IN: usize, const OUT: usize>(rows: [u8; OUT], x: [u64; IN]) -> [u64; OUT] {
    core::array::from_fn(|i| {
        let mut sum = 0;
        for (j, plane) in x.iter().enumerate() {
            if (rows[i] >> j) & 1 == 1 {
                sum ^= plane;
            }
        }
        sum
    })
}

/// Input side of the S-box: `x ↦ φ(A · x)`, where φ maps SM4's field onto the tower field below.
const INPUT_ROWS: [u8; 8] = [0x4b, 0x25, 0x7a, 0x9c, 0x93, 0x40, 0xc4, 0x7f];
/// φ(0xD3): the S-box's input constant, carried into the tower field.
const INPUT_CONSTANT: u8 = 0xa6;
/// Output side of the S-box: `v ↦ A · φ^-1(v)`.
const OUTPUT_ROWS: [u8; 8] = [0xa3, 0x15, 0xa4, 0xc5, 0xba, 0x1a, 0x27, 0x89];
/// The S-box's output constant.
const OUTPUT_CONSTANT: u8 = 0xd3;
/// Squaring in GF(16), and `λ · h^2` with λ = z^3 (rows of 4x4 maps).
const NIBBLE_SQUARE_ROWS: [u8; 4] = [0x5, 0x4, 0xa, 0x8];
const LAMBDA_SQUARE_ROWS: [u8; 4] = [0x4, 0xe, 0x2, 0xd];

/// Four bit planes of GF(16) = GF(2)[z] / (z^4 + z + 1) elements.
type Nibbles = [u64; 4];

/// Flips the planes where `constant` has a bit set (XOR with a constant byte in every lane).
#[inline(always)]
fn add_constant(mut x: Planes, constant: u8) -> Planes {
    for (i, plane) in x.iter_mut().enumerate() {
        if (constant >> i) & 1 == 1 {
            *plane = !*plane;
        }
    }
    x
}

#[inline(always)]
fn nibble_multiply(a: Nibbles, b: Nibbles) -> Nibbles {
    let mut product = [0u64; 7];
    for i in 0..4 {
        for j in 0..4 {
            product[i + j] ^= a[i] & b[j];
        }
    }
    // z^4 = z + 1.
    for high in (4..7).rev() {
        product[high - 4] ^= product[high];
        product[high - 3] ^= product[high];
    }
    [product[0], product[1], product[2], product[3]]
}

/// `d^14`, the inverse in GF(16) (0 stays 0).
#[inline(always)]
fn nibble_invert(d: Nibbles) -> Nibbles {
    let d2 = linear_map(NIBBLE_SQUARE_ROWS, d);
    let d4 = linear_map(NIBBLE_SQUARE_ROWS, d2);
    let d8 = linear_map(NIBBLE_SQUARE_ROWS, d4);
    nibble_multiply(nibble_multiply(d2, d4), d8)
}

#[inline(always)]
fn nibble_xor(a: Nibbles, b: Nibbles) -> Nibbles {
    core::array::from_fn(|i| a[i] ^ b[i])
}

/// The SM4 S-box on every byte lane. SM4's inversion in GF(2^8) is done in the isomorphic tower
/// field GF(16)[y] / (y^2 + y + λ), where an element is `h·y + l` (planes 4–7 and 0–3) and
/// `(h·y + l)^-1 = h·Δ^-1·y + (h + l)·Δ^-1` with `Δ = λ·h^2 + h·l + l^2`: five GF(16)
/// multiplications instead of the four GF(2^8) ones and seven squarings of the direct route.
/// The basis changes are folded into the affine maps, so the whole S-box is
/// `OUTPUT_ROWS · inverse(INPUT_ROWS · x ⊕ 0xA6) ⊕ 0xD3`.
#[inline(always)]
fn substitute(x: Planes) -> Planes {
    let u = add_constant(linear_map(INPUT_ROWS, x), INPUT_CONSTANT);
    let low: Nibbles = [u[0], u[1], u[2], u[3]];
    let high: Nibbles = [u[4], u[5], u[6], u[7]];
    let delta = nibble_xor(
        nibble_xor(
            linear_map(LAMBDA_SQUARE_ROWS, high),
            nibble_multiply(high, low),
        ),
        linear_map(NIBBLE_SQUARE_ROWS, low),
    );
    let delta_inverse = nibble_invert(delta);
    let new_high = nibble_multiply(high, delta_inverse);
    let new_low = nibble_multiply(nibble_xor(high, low), delta_inverse);
    let v = [
        new_low[0],
        new_low[1],
        new_low[2],
        new_low[3],
        new_high[0],
        new_high[1],
        new_high[2],
        new_high[3],
    ];
    add_constant(linear_map(OUTPUT_ROWS, v), OUTPUT_CONSTANT)
}

/// A round key in every block's lanes: each plane gets all-ones in a byte's 16 lanes where that
/// byte of the key has the plane's bit set.
#[inline(always)]
fn broadcast(key: u32) -> Planes {
    core::array::from_fn(|bit| {
        let mut plane = 0u64;
        for byte in 0..4 {
            let set = u64::from((key >> (24 - 8 * byte + bit)) & 1);
            plane |= (set.wrapping_neg() & 0xffff) << (BYTE_LANES * byte as u32);
        }
        plane
    })
}

/// Bit 0 of each of the eight bytes of a `u64`.
const BYTE_LOW_BITS: u64 = 0x0101_0101_0101_0101;

/// Packs bit 0 of byte `k` of `x` (other bits zero) into bit `k` of a byte. The product puts
/// each wanted bit into the top byte without any two partial products overlapping, so there
/// are no carries.
#[inline(always)]
fn gather_bits(x: u64) -> u64 {
    x.wrapping_mul(0x0102_0408_1020_4080) >> 56
}

/// The inverse of [`gather_bits`]: bit `k` of `x` (`x < 256`) becomes bit 0 of byte `k`.
#[inline(always)]
fn spread_bits(x: u64) -> u64 {
    // Copy x into every byte, keep bit k of byte k, then turn each nonzero byte into 1.
    let picked = x.wrapping_mul(BYTE_LOW_BITS) & 0x8040_2010_0804_0201;
    let high = (picked & 0x7f7f_7f7f_7f7f_7f7f) + 0x7f7f_7f7f_7f7f_7f7f;
    ((high | picked) >> 7) & BYTE_LOW_BITS
}

/// The eight bytes at lanes `8 · group ..` of word `word`: byte `group / 2` of the word, from
/// blocks `8 · (group % 2) ..`.
#[inline(always)]
fn lane_group(blocks: &[[u8; 16]; BLOCKS], word: usize, group: usize) -> u64 {
    let byte = 4 * word + group / 2;
    let first = 8 * (group % 2);
    u64::from_le_bytes(core::array::from_fn(|m| blocks[first + m][byte]))
}

/// Converts word `word` of every block into planes.
fn to_planes(blocks: &[[u8; 16]; BLOCKS], word: usize) -> Planes {
    let mut planes = [0u64; 8];
    for group in 0..8 {
        let bytes = lane_group(blocks, word, group);
        for (bit, plane) in planes.iter_mut().enumerate() {
            *plane |= gather_bits((bytes >> bit) & BYTE_LOW_BITS) << (8 * group);
        }
    }
    planes
}

/// Writes planes back as word position `position` of every block.
fn from_planes(planes: &Planes, blocks: &mut [[u8; 16]; BLOCKS], position: usize) {
    for group in 0..8 {
        let mut bytes = 0u64;
        for (bit, plane) in planes.iter().enumerate() {
            bytes |= spread_bits((plane >> (8 * group)) & 0xff) << bit;
        }
        let byte = 4 * position + group / 2;
        let first = 8 * (group % 2);
        for (m, value) in bytes.to_le_bytes().into_iter().enumerate() {
            blocks[first + m][byte] = value;
        }
    }
}

/// The S-box on the four bytes of one word, through the same circuit with four lanes in use: the
/// one-block path (single blocks, CTR's last blocks, header protection, the key schedule).
pub(super) fn substitute_word(word: u32) -> u32 {
    let bytes = u64::from(word);
    let planes: Planes = core::array::from_fn(|bit| gather_bits((bytes >> bit) & BYTE_LOW_BITS));
    let substituted = substitute(planes);
    let mut out = 0u64;
    for (bit, plane) in substituted.iter().enumerate() {
        out |= spread_bits(plane & 0x0f) << bit;
    }
    out as u32
}

/// Runs the 32 rounds and the reverse transform R on [`BLOCKS`] blocks, taking round `i`'s key
/// from `key_at(i)`.
pub(super) fn crypt(key_at: impl Fn(usize) -> u32, blocks: &mut [[u8; 16]; BLOCKS]) {
    let mut x: [Planes; 4] = core::array::from_fn(|word| to_planes(blocks, word));
    for group in 0..8 {
        for j in 0..4 {
            let key = broadcast(key_at(4 * group + j));
            let input = xor(
                xor(xor(x[(j + 1) % 4], x[(j + 2) % 4]), x[(j + 3) % 4]),
                key,
            );
            x[j] = xor(x[j], linear(substitute(input)));
        }
    }
    for (position, word) in (0..4).rev().enumerate() {
        from_planes(&x[word], blocks, position);
    }
}
