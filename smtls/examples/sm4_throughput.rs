//! Measures SM4 block-encryption throughput: the constant-time `bagui_smtls::sm4::Sm4` (bulk,
//! which takes the bitsliced path, and one block per call) against the table-based `sm4` crate,
//! and SM4-GCM sealing over the constant-time cipher.
//!
//! Run with `cargo run --release -p bagui-smtls --example sm4_throughput [MiB]`.

use std::hint::black_box;
use std::time::Instant;

use bagui_smtls::gcm::Sm4Gcm;
use bagui_smtls::gcm::aead::AeadInOut;
use cipher::{Block, BlockCipherEncrypt, KeyInit};

fn measure(name: &str, mebibytes: usize, mut run: impl FnMut(&mut [u8])) {
    let mut buffer = vec![0x5au8; mebibytes << 20];
    run(&mut buffer[..4096]); // warm-up
    let start = Instant::now();
    run(&mut buffer);
    let seconds = start.elapsed().as_secs_f64();
    black_box(&buffer);
    println!("{name:<28} {:>8.1} MiB/s", mebibytes as f64 / seconds);
}

fn encrypt_all<C: BlockCipherEncrypt<BlockSize = cipher::consts::U16>>(
    cipher: &C,
    data: &mut [u8],
) {
    let (blocks, _) = Block::<C>::slice_as_chunks_mut(data);
    cipher.encrypt_blocks(blocks);
}

fn main() {
    let mebibytes = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(16);
    let key = [0x42u8; 16];

    let table = <sm4::Sm4 as KeyInit>::new(&key.into());
    measure("sm4 0.6 (table)", mebibytes, |data| {
        encrypt_all(&table, data)
    });

    let constant_time = <bagui_smtls::sm4::Sm4 as KeyInit>::new(&key.into());
    measure("bagui-smtls Sm4 (constant)", mebibytes, |data| {
        encrypt_all(&constant_time, data)
    });

    measure("bagui-smtls Sm4 (1 block)", mebibytes, |data| {
        for chunk in data.chunks_exact_mut(16) {
            let block: &mut Block<bagui_smtls::sm4::Sm4> = chunk.try_into().unwrap();
            constant_time.encrypt_block(block);
        }
    });

    let gcm = <Sm4Gcm as KeyInit>::new(&key.into());
    measure("bagui-smtls Sm4Gcm seal", mebibytes, |data| {
        let tag = gcm
            .encrypt_inout_detached(&[0u8; 12].into(), b"", data.into())
            .unwrap();
        black_box(tag);
    });
    measure("bagui-smtls Sm4Gcm 1200 B", mebibytes, |data| {
        for packet in data.chunks_mut(1200) {
            let tag = gcm
                .encrypt_inout_detached(&[0u8; 12].into(), b"", packet.into())
                .unwrap();
            black_box(tag);
        }
    });
}
