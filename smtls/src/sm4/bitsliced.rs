//! Bitsliced SM4 rounds for [`BLOCKS`] blocks at once: the fast path behind the cipher's
//! parallel-block interface, which CTR and GCM use for all but a message's last few blocks.
//!
//! Each of the four state words is held as eight `u64` planes: plane `i` holds bit `i` of all
//! 64 bytes of that word (16 blocks x 4 bytes), at lane `byte * 16 + block`, where `byte` 0 is
//! the word's most significant byte. In this form:
//!
//! - the S-box is the same algebra as the scalar path — `A · (A · x ⊕ 0xD3)^-1 ⊕ 0xD3` — but a
//!   field multiplication is 64 ANDs and some XORs over whole planes, for 64 bytes at once;
//! - rotating a word by a multiple of 8 bits is rotating every plane by 16 lanes, and rotating
//!   by fewer bits renumbers planes, so the linear transform L costs a few dozen operations;
//! - round keys are broadcast into planes with masks.
//!
//! Nothing is indexed by secret data and nothing branches on it. Converting blocks into planes
//! and back is a fixed loop over bit positions.

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

/// The circulant matrix `A` of the S-box: output bit `i` is the XOR of input bits `i`, `i-1`,
/// `i-3`, `i-6` and `i-7` (mod 8).
#[inline(always)]
fn affine_matrix(x: Planes) -> Planes {
    core::array::from_fn(|i| {
        x[i] ^ x[(i + 7) % 8] ^ x[(i + 5) % 8] ^ x[(i + 2) % 8] ^ x[(i + 1) % 8]
    })
}

/// XORs the S-box constant 0xD3 into every byte.
#[inline(always)]
fn add_affine_constant(mut x: Planes) -> Planes {
    for (i, plane) in x.iter_mut().enumerate() {
        if (0xd3 >> i) & 1 == 1 {
            *plane = !*plane;
        }
    }
    x
}

/// Reduces a product of degree ≤ 14 modulo `t^8 + t^7 + t^6 + t^5 + t^4 + t^2 + 1`.
#[inline(always)]
fn reduce(mut product: [u64; 15]) -> Planes {
    for high in (8..15).rev() {
        let carry = product[high];
        let base = high - 8;
        for offset in [7, 6, 5, 4, 2, 0] {
            product[base + offset] ^= carry;
        }
    }
    core::array::from_fn(|i| product[i])
}

#[inline(always)]
fn field_multiply(a: Planes, b: Planes) -> Planes {
    let mut product = [0u64; 15];
    for i in 0..8 {
        for j in 0..8 {
            product[i + j] ^= a[i] & b[j];
        }
    }
    reduce(product)
}

#[inline(always)]
fn field_square(x: Planes) -> Planes {
    let mut product = [0u64; 15];
    for i in 0..8 {
        product[2 * i] = x[i];
    }
    reduce(product)
}

/// `x^254`, the inverse of every byte (0 stays 0); the same chain as the scalar path.
#[inline(always)]
fn field_invert(x: Planes) -> Planes {
    let x2 = field_square(x);
    let x3 = field_multiply(x2, x);
    let x12 = field_square(field_square(x3));
    let x15 = field_multiply(x12, x3);
    let mut x240 = x15;
    for _ in 0..4 {
        x240 = field_square(x240);
    }
    let x252 = field_multiply(x240, x12);
    field_multiply(x252, x2)
}

#[inline(always)]
fn substitute(x: Planes) -> Planes {
    add_affine_constant(affine_matrix(field_invert(add_affine_constant(
        affine_matrix(x),
    ))))
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

/// Converts word `word` of every block into planes.
fn to_planes(blocks: &[[u8; 16]; BLOCKS], word: usize) -> Planes {
    core::array::from_fn(|bit| {
        let mut plane = 0u64;
        for (block_index, block) in blocks.iter().enumerate() {
            for byte in 0..4 {
                let value = u64::from((block[4 * word + byte] >> bit) & 1);
                plane |= value << (byte * BLOCKS + block_index);
            }
        }
        plane
    })
}

/// Writes planes back as word position `position` of every block.
fn from_planes(planes: &Planes, blocks: &mut [[u8; 16]; BLOCKS], position: usize) {
    for (block_index, block) in blocks.iter_mut().enumerate() {
        for byte in 0..4 {
            let mut value = 0u8;
            for (bit, plane) in planes.iter().enumerate() {
                value |= (((plane >> (byte * BLOCKS + block_index)) & 1) as u8) << bit;
            }
            block[4 * position + byte] = value;
        }
    }
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
