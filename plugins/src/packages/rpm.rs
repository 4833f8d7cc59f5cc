//! rpm header blobs, as the rpm database stores one per installed package.
//!
//! Layout (rpm's `hdrblob`, the on-disk header without the lead and the 8-byte magic that a
//! `.rpm` file has): big-endian `u32` index entry count `il`, `u32` data length `dl`, `il`
//! 16-byte entries `{tag: i32, type: u32, offset: i32, count: u32}`, then `dl` bytes of data.
//! Every offset and length comes from the file, so each one is checked before use; a damaged
//! blob is an error for that one package, never a panic.

use bagui_protocol::assets::Package;

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_ARCH: u32 = 1022;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

/// rpm's own sanity limits (`hdrblobInit`): at most 0xffff tags and 256 MiB of data.
const MAX_ENTRIES: u32 = 0xffff;
const MAX_DATA: u32 = 256 * 1024 * 1024;

const ENTRY_LEN: usize = 16;

/// Why a header blob could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("header blob too short ({0} bytes)")]
    TooShort(usize),
    #[error("header claims {entries} entries and {data} data bytes, beyond rpm's limits")]
    TooLarge { entries: u32, data: u32 },
    #[error("header is {actual} bytes but its index says {expected}")]
    LengthMismatch { expected: usize, actual: usize },
    #[error("tag {tag}: type {kind} is not the expected {expected}")]
    WrongType { tag: u32, kind: u32, expected: u32 },
    #[error("tag {tag}: data offset {offset} outside the {len}-byte data store")]
    OutOfBounds { tag: u32, offset: i64, len: usize },
    #[error("tag {tag}: string is not NUL-terminated")]
    Unterminated { tag: u32 },
    #[error("tag {tag}: string is not UTF-8")]
    NotUtf8 { tag: u32 },
    #[error("tag {tag} is missing")]
    Missing { tag: u32 },
}

/// One index entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    tag: u32,
    kind: u32,
    offset: i32,
    count: u32,
}

/// A parsed header: its index and data store, borrowed from the blob.
#[derive(Debug)]
pub struct Header<'a> {
    entries: Vec<Entry>,
    data: &'a [u8],
}

impl<'a> Header<'a> {
    /// Checks the blob's framing and reads its index.
    pub fn parse(blob: &'a [u8]) -> Result<Header<'a>, HeaderError> {
        let (il, dl) = match (be_u32(blob, 0), be_u32(blob, 4)) {
            (Some(il), Some(dl)) => (il, dl),
            _ => return Err(HeaderError::TooShort(blob.len())),
        };
        if il == 0 || il > MAX_ENTRIES || dl > MAX_DATA {
            return Err(HeaderError::TooLarge {
                entries: il,
                data: dl,
            });
        }
        // Both are bounded above, so this cannot overflow even on 32-bit targets.
        let index_len = il as usize * ENTRY_LEN;
        let expected = 8 + index_len + dl as usize;
        if blob.len() != expected {
            return Err(HeaderError::LengthMismatch {
                expected,
                actual: blob.len(),
            });
        }
        let entries = blob[8..8 + index_len]
            .chunks_exact(ENTRY_LEN)
            .map(|raw| Entry {
                tag: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
                kind: u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]),
                offset: i32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]),
                count: u32::from_be_bytes([raw[12], raw[13], raw[14], raw[15]]),
            })
            .collect();
        Ok(Header {
            entries,
            data: &blob[8 + index_len..],
        })
    }

    fn entry(&self, tag: u32) -> Option<Entry> {
        self.entries.iter().copied().find(|e| e.tag == tag)
    }

    /// The data store from the entry's offset on, bounds-checked.
    fn data_at(&self, entry: Entry) -> Result<&'a [u8], HeaderError> {
        usize::try_from(entry.offset)
            .ok()
            .and_then(|offset| self.data.get(offset..))
            .ok_or(HeaderError::OutOfBounds {
                tag: entry.tag,
                offset: i64::from(entry.offset),
                len: self.data.len(),
            })
    }

    /// A STRING tag (I18NSTRING is accepted too: its first entry is the untranslated text).
    pub fn string(&self, tag: u32) -> Result<Option<&'a str>, HeaderError> {
        let Some(entry) = self.entry(tag) else {
            return Ok(None);
        };
        if entry.kind != TYPE_STRING && entry.kind != TYPE_I18NSTRING {
            return Err(HeaderError::WrongType {
                tag,
                kind: entry.kind,
                expected: TYPE_STRING,
            });
        }
        let bytes = self.data_at(entry)?;
        let end = bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or(HeaderError::Unterminated { tag })?;
        std::str::from_utf8(&bytes[..end])
            .map(Some)
            .map_err(|_| HeaderError::NotUtf8 { tag })
    }

    /// The first value of an INT32 tag.
    pub fn int32(&self, tag: u32) -> Result<Option<u32>, HeaderError> {
        let Some(entry) = self.entry(tag) else {
            return Ok(None);
        };
        if entry.kind != TYPE_INT32 || entry.count == 0 {
            return Err(HeaderError::WrongType {
                tag,
                kind: entry.kind,
                expected: TYPE_INT32,
            });
        }
        let bytes = self.data_at(entry)?;
        be_u32(bytes, 0).map(Some).ok_or(HeaderError::OutOfBounds {
            tag,
            offset: i64::from(entry.offset),
            len: self.data.len(),
        })
    }

    fn required_string(&self, tag: u32) -> Result<&'a str, HeaderError> {
        self.string(tag)?.ok_or(HeaderError::Missing { tag })
    }
}

/// Reads the package identity out of one header blob.
///
/// The version is `[epoch:]version-release`, the form [`super::version::compare_rpm`] orders
/// and `rpm -q --qf '%{EVR}'` prints. `gpg-pubkey` pseudo-packages (imported signing keys)
/// are kept: `rpm -qa` lists them and which keys a host trusts is worth knowing. They have no
/// ARCH tag — rpm prints `(none)` — which is reported as an empty arch, so their inventory key
/// is the bare name.
pub fn package_from_header(blob: &[u8]) -> Result<Package, HeaderError> {
    let header = Header::parse(blob)?;
    let name = header.required_string(TAG_NAME)?;
    let version = header.required_string(TAG_VERSION)?;
    let release = header.required_string(TAG_RELEASE)?;
    let epoch = header.int32(TAG_EPOCH)?;
    let arch = header.string(TAG_ARCH)?.unwrap_or_default();
    Ok(Package {
        name: name.to_string(),
        version: format_evr(epoch, version, release),
        arch: arch.to_string(),
        source: "rpm".to_string(),
    })
}

/// `[epoch:]version-release`; an epoch of 0 is written, as rpm's `%{EVR}` does, only when
/// the header has one.
fn format_evr(epoch: Option<u32>, version: &str, release: &str) -> String {
    match epoch {
        Some(epoch) => format!("{epoch}:{version}-{release}"),
        None => format!("{version}-{release}"),
    }
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a header blob from `(tag, type, count, data)` entries, data laid out in order
    /// with INT32 values 4-byte aligned as rpm does.
    fn build_header(tags: &[(u32, u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, kind, count, value) in tags {
            if *kind == TYPE_INT32 {
                while data.len() % 4 != 0 {
                    data.push(0);
                }
            }
            index.extend_from_slice(&tag.to_be_bytes());
            index.extend_from_slice(&kind.to_be_bytes());
            index.extend_from_slice(&(data.len() as u32).to_be_bytes());
            index.extend_from_slice(&count.to_be_bytes());
            data.extend_from_slice(value);
        }
        let mut blob = Vec::new();
        blob.extend_from_slice(&(tags.len() as u32).to_be_bytes());
        blob.extend_from_slice(&(data.len() as u32).to_be_bytes());
        blob.extend_from_slice(&index);
        blob.extend_from_slice(&data);
        blob
    }

    fn s(text: &str) -> Vec<u8> {
        let mut v = text.as_bytes().to_vec();
        v.push(0);
        v
    }

    fn simple(name: &str, version: &str, release: &str, epoch: Option<u32>) -> Vec<u8> {
        let mut tags = vec![
            (TAG_NAME, TYPE_STRING, 1, s(name)),
            (TAG_VERSION, TYPE_STRING, 1, s(version)),
            (TAG_RELEASE, TYPE_STRING, 1, s(release)),
        ];
        if let Some(epoch) = epoch {
            tags.push((TAG_EPOCH, TYPE_INT32, 1, epoch.to_be_bytes().to_vec()));
        }
        tags.push((TAG_ARCH, TYPE_STRING, 1, s("x86_64")));
        build_header(&tags)
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/packages/headers/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn real_headers_from_rpm() {
        let cases = [
            ("01-bagui-tilde.bin", "bagui-tilde", "1.0~rc1-0.1"),
            ("02-bagui-hello.bin", "bagui-hello", "1.2.3-1"),
            ("03-bagui-epoch.bin", "bagui-epoch", "3:2.0-5.fc40"),
            ("04-bagui-wal.bin", "bagui-wal", "0.9-1"),
        ];
        for (file, name, version) in cases {
            let package = package_from_header(&fixture(file)).unwrap();
            assert_eq!(package.name, name);
            assert_eq!(package.version, version);
            assert_eq!(package.arch, "noarch");
            assert_eq!(package.source, "rpm");
        }
    }

    #[test]
    fn synthetic_header_with_epoch() {
        let package = package_from_header(&simple("openssl", "3.0.7", "27.el9", Some(1))).unwrap();
        assert_eq!(package.version, "1:3.0.7-27.el9");
        assert_eq!(package.arch, "x86_64");
    }

    #[test]
    fn gpg_pubkey_has_empty_arch() {
        let blob = build_header(&[
            (TAG_NAME, TYPE_STRING, 1, s("gpg-pubkey")),
            (TAG_VERSION, TYPE_STRING, 1, s("fd431d51")),
            (TAG_RELEASE, TYPE_STRING, 1, s("4ae0493b")),
        ]);
        let package = package_from_header(&blob).unwrap();
        assert_eq!(package.name, "gpg-pubkey");
        assert_eq!(package.version, "fd431d51-4ae0493b");
        assert_eq!(package.arch, "");
    }

    #[test]
    fn malformed_headers_are_errors() {
        assert_eq!(package_from_header(&[]), Err(HeaderError::TooShort(0)));
        assert!(matches!(
            package_from_header(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
            Err(HeaderError::TooLarge { .. })
        ));
        let good = simple("a", "1", "1", Some(2));
        // Truncated or padded: length mismatch.
        assert!(matches!(
            package_from_header(&good[..good.len() - 1]),
            Err(HeaderError::LengthMismatch { .. })
        ));
        // Missing NUL terminator on the last string.
        let blob = build_header(&[
            (TAG_NAME, TYPE_STRING, 1, s("a")),
            (TAG_VERSION, TYPE_STRING, 1, s("1")),
            (TAG_RELEASE, TYPE_STRING, 1, b"1".to_vec()),
        ]);
        assert_eq!(
            package_from_header(&blob),
            Err(HeaderError::Unterminated { tag: TAG_RELEASE })
        );
        // Missing NAME.
        let blob = build_header(&[(TAG_VERSION, TYPE_STRING, 1, s("1"))]);
        assert_eq!(
            package_from_header(&blob),
            Err(HeaderError::Missing { tag: TAG_NAME })
        );
        // EPOCH with the wrong type.
        let blob = build_header(&[
            (TAG_NAME, TYPE_STRING, 1, s("a")),
            (TAG_VERSION, TYPE_STRING, 1, s("1")),
            (TAG_RELEASE, TYPE_STRING, 1, s("1")),
            (TAG_EPOCH, TYPE_STRING, 1, s("1")),
        ]);
        assert!(matches!(
            package_from_header(&blob),
            Err(HeaderError::WrongType { .. })
        ));
    }

    #[test]
    fn out_of_range_offsets_are_errors() {
        let mut blob = simple("a", "1", "1", Some(2));
        // Point every entry's offset at 0x7fffffff, then at a negative offset.
        for bad in [i32::MAX, -4] {
            let il = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
            for i in 0..il {
                let at = 8 + i * ENTRY_LEN + 8;
                blob[at..at + 4].copy_from_slice(&bad.to_be_bytes());
            }
            assert!(matches!(
                package_from_header(&blob),
                Err(HeaderError::OutOfBounds { .. })
            ));
        }
    }

    /// Every truncation and every single-byte corruption of a real header returns without
    /// panicking.
    #[test]
    fn fuzzish_corruptions_never_panic() {
        let blob = fixture("03-bagui-epoch.bin");
        for len in 0..blob.len() {
            let _ = package_from_header(&blob[..len]);
        }
        for at in 0..blob.len() {
            for value in [0x00, 0x7f, 0x80, 0xff] {
                let mut bad = blob.clone();
                bad[at] = value;
                let _ = package_from_header(&bad);
            }
        }
    }
}
