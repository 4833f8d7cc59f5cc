//! A read-only reader for Berkeley DB **hash** database files.
//!
//! rpm before 4.16 (CentOS 7, Kylin V10, …) keeps its package database in
//! `/var/lib/rpm/Packages`, a Berkeley DB hash file whose keys are 4-byte header instance numbers
//! and whose values are rpm header blobs. We must read it without linking libdb (no C, no
//! unsafe) and without trusting it: the file may be half-written, from another architecture,
//! or simply not what its name says. So this module parses the on-disk format directly, checks
//! every offset before using it, refuses layouts it does not understand instead of guessing, and
//! never visits a page twice (which bounds both the running time and the output size by the
//! input size).
//!
//! Format summary (Berkeley DB 4.x/5.x, `dbinc/db_page.h`, `dbinc/hash.h`):
//! - page 0 is the hash metadata page; its magic (offset 12) tells the byte order the creating
//!   host used, and every integer in the file is in that order;
//! - bucket `b` starts on page `b + spares[ceil_log2(b + 1)]`, and continues along `next_pgno`
//!   through further `P_HASH` pages;
//! - a hash page is a 26-byte header, an index `inp[]` of `u16` item offsets, and the items
//!   packed at the end of the page; item `i` ends where item `i - 1` starts (item 0 ends at the
//!   end of the page). Items alternate key, value;
//! - values too big for a page are `H_OFFPAGE` items pointing to a chain of `P_OVERFLOW` pages.

/// Magic number of a hash database's metadata page.
const HASH_MAGIC: u32 = 0x0006_1561;
/// Magic numbers of the access methods we recognise but do not read.
const BTREE_MAGIC: u32 = 0x0005_3162;
const QUEUE_MAGIC: u32 = 0x0004_2253;
const HEAP_MAGIC: u32 = 0x0007_4582;

/// Hash format versions with the page layout this reader implements: 7 (DB 3.3–4.1),
/// 8 (DB 4.2–4.5), 9 (DB 4.6–5.3, sorted pages) and 10 (DB 6.x).
const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 7..=10;

const MIN_PAGE_SIZE: usize = 512;
const MAX_PAGE_SIZE: usize = 65536;

/// Size of the generic page header (lsn, pgno, prev, next, entries, hf_offset, level, type).
const PAGE_HEADER_LEN: usize = 26;
/// Extra header bytes (alignment + 4-byte checksum) on every page of a checksummed database.
const CHECKSUM_HEADER_LEN: usize = 6;

/// Page types (`P_*` in `db_page.h`).
const P_INVALID: u8 = 0;
const P_HASH_UNSORTED: u8 = 2;
const P_OVERFLOW: u8 = 7;
const P_HASHMETA: u8 = 8;
const P_HASH: u8 = 13;

/// Hash item types (`H_*` in `db_page.h`): the first byte of every item on a hash page.
const H_KEYDATA: u8 = 1;
const H_DUPLICATE: u8 = 2;
const H_OFFPAGE: u8 = 3;
const H_OFFDUP: u8 = 4;
const H_BLOB: u8 = 5;

/// `H_OFFPAGE` item: type, 3 unused bytes, first overflow page, total length.
const HOFFPAGE_LEN: usize = 12;

/// Metadata page offsets (`DBMETA33`/`HMETA33`).
const META_PGNO: usize = 8;
const META_MAGIC: usize = 12;
const META_VERSION: usize = 16;
const META_PAGESIZE: usize = 20;
const META_ENCRYPT_ALG: usize = 24;
const META_TYPE: usize = 25;
const META_METAFLAGS: usize = 26;
const META_LAST_PGNO: usize = 32;
const META_NPARTS: usize = 36;
const META_FLAGS: usize = 48;
const META_MAX_BUCKET: usize = 72;
const META_HIGH_MASK: usize = 76;
const META_LOW_MASK: usize = 80;
const META_SPARES: usize = 96;
/// Number of entries in the `spares` array (`NCACHED`).
const NCACHED: usize = 32;

/// `metaflags` bits.
const DBMETA_CHKSUM: u8 = 0x01;
const DBMETA_PART_RANGE: u8 = 0x02;
const DBMETA_PART_CALLBACK: u8 = 0x04;
/// Hash `flags` bit: the file holds a table of sub-databases, not key/value data.
const DB_HASH_SUBDB: u32 = 0x02;

/// Why a file could not be read as a Berkeley DB hash database.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BdbError {
    #[error("not a Berkeley DB file: {0}")]
    NotBerkeleyDb(&'static str),
    #[error("unsupported Berkeley DB access method {0} (only hash databases can be read)")]
    UnsupportedType(&'static str),
    #[error("unsupported Berkeley DB hash version {0}")]
    UnsupportedVersion(u32),
    #[error("unsupported Berkeley DB feature: {0}")]
    UnsupportedFeature(&'static str),
    #[error("Berkeley DB file is encrypted")]
    Encrypted,
    #[error("invalid Berkeley DB page size {0}")]
    BadPageSize(u32),
    #[error("bad Berkeley DB page {pgno}: {reason}")]
    BadPage { pgno: u32, reason: &'static str },
    #[error("Berkeley DB page {0} is reached twice (page cycle or shared page)")]
    Cycle(u32),
    #[error("Berkeley DB file truncated: needs {needed} bytes, has {actual}")]
    Truncated { needed: u64, actual: usize },
}

/// Every value stored in a hash database, in bucket order (the order `db_dump` lists them).
///
/// For rpm's `Packages` this includes the record under key 0, a 4-byte "next instance number"
/// that is not a header; use [`read_hash_pairs`] to tell it apart by key.
pub fn read_hash_values(bytes: &[u8]) -> Result<Vec<Vec<u8>>, BdbError> {
    Ok(read_hash_pairs(bytes)?
        .into_iter()
        .map(|(_, value)| value)
        .collect())
}

/// One stored record: (key, value).
pub type Record = (Vec<u8>, Vec<u8>);

/// Every (key, value) record of a hash database, in bucket order. A key with on-page
/// duplicates appears once per duplicate value.
pub fn read_hash_pairs(bytes: &[u8]) -> Result<Vec<Record>, BdbError> {
    let meta = Meta::parse(bytes)?;
    let mut reader = Reader::new(bytes, meta);
    let mut out = Vec::new();
    for bucket in 0..=reader.meta.max_bucket {
        let pgno = reader.meta.bucket_page(bucket)?;
        reader.read_bucket(pgno, &mut out)?;
    }
    Ok(out)
}

/// Byte order of the file, fixed by the host that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Little,
    Big,
}

impl Order {
    /// Reads a `u16` at `off`, or `None` past the end: callers turn that into their own error.
    fn u16(self, bytes: &[u8], off: usize) -> Option<u16> {
        let raw: [u8; 2] = bytes.get(off..off.checked_add(2)?)?.try_into().ok()?;
        Some(match self {
            Order::Little => u16::from_le_bytes(raw),
            Order::Big => u16::from_be_bytes(raw),
        })
    }

    fn u32(self, bytes: &[u8], off: usize) -> Option<u32> {
        let raw: [u8; 4] = bytes.get(off..off.checked_add(4)?)?.try_into().ok()?;
        Some(match self {
            Order::Little => u32::from_le_bytes(raw),
            Order::Big => u32::from_be_bytes(raw),
        })
    }
}

/// What the reader needs from the hash metadata page.
#[derive(Debug)]
struct Meta {
    order: Order,
    page_size: usize,
    /// Bytes before `inp[]` / overflow data on every page (larger when pages carry checksums).
    page_overhead: usize,
    last_pgno: u32,
    /// Pages that may be read: those up to `last_pgno`, or more if the file is longer (the
    /// metadata page can lag behind pages a still-running writer has already added).
    page_count: usize,
    max_bucket: u32,
    spares: [u32; NCACHED],
}

impl Meta {
    /// Parses and validates page 0, so that later page arithmetic cannot overflow.
    fn parse(bytes: &[u8]) -> Result<Self, BdbError> {
        if bytes.len() < MIN_PAGE_SIZE {
            return Err(BdbError::NotBerkeleyDb("shorter than one page"));
        }
        let order = detect_order(bytes)?;
        let field = |off| {
            order
                .u32(bytes, off)
                .ok_or(BdbError::NotBerkeleyDb("short metadata"))
        };
        let version = field(META_VERSION)?;
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(BdbError::UnsupportedVersion(version));
        }
        let page_size = checked_page_size(field(META_PAGESIZE)?)?;
        if byte(bytes, META_ENCRYPT_ALG) != 0 {
            return Err(BdbError::Encrypted);
        }
        if byte(bytes, META_TYPE) != P_HASHMETA || field(META_PGNO)? != 0 {
            return Err(bad(0, "not a hash metadata page"));
        }
        let page_overhead = check_flags(bytes, order)?;
        let last_pgno = field(META_LAST_PGNO)?;
        let meta = Meta {
            order,
            page_size,
            page_overhead,
            last_pgno,
            page_count: (last_pgno as usize)
                .saturating_add(1)
                .max(bytes.len() / page_size),
            max_bucket: field(META_MAX_BUCKET)?,
            spares: read_spares(bytes, order)?,
        };
        let (high_mask, low_mask) = (field(META_HIGH_MASK)?, field(META_LOW_MASK)?);
        meta.check_geometry(bytes.len(), high_mask, low_mask)?;
        Ok(meta)
    }

    /// The file must hold every page up to `last_pgno`, and each bucket needs a page of its own.
    fn check_geometry(&self, len: usize, high_mask: u32, low_mask: u32) -> Result<(), BdbError> {
        let needed = (u64::from(self.last_pgno) + 1) * self.page_size as u64;
        if needed > len as u64 {
            return Err(BdbError::Truncated {
                needed,
                actual: len,
            });
        }
        if self.max_bucket > high_mask || low_mask > high_mask {
            return Err(bad(0, "max_bucket/high_mask/low_mask inconsistent"));
        }
        if self.max_bucket >= self.last_pgno {
            return Err(bad(0, "more buckets than pages"));
        }
        Ok(())
    }

    /// Page holding the first page of `bucket` (`BUCKET_TO_PAGE` in `hash.h`).
    fn bucket_page(&self, bucket: u32) -> Result<u32, BdbError> {
        let spare = self
            .spares
            .get(ceil_log2(u64::from(bucket) + 1))
            .ok_or(bad(0, "bucket beyond the spares table"))?;
        let pgno = u64::from(bucket) + u64::from(*spare);
        match u32::try_from(pgno) {
            Ok(pgno) if pgno != 0 && (pgno as usize) < self.page_count => Ok(pgno),
            _ => Err(bad(0, "bucket maps outside the file")),
        }
    }
}

/// Finds the byte order from the magic number, and names the access method when it is not hash.
fn detect_order(bytes: &[u8]) -> Result<Order, BdbError> {
    for order in [Order::Little, Order::Big] {
        match order.u32(bytes, META_MAGIC) {
            Some(HASH_MAGIC) => return Ok(order),
            Some(BTREE_MAGIC) => return Err(BdbError::UnsupportedType("btree")),
            Some(QUEUE_MAGIC) => return Err(BdbError::UnsupportedType("queue")),
            Some(HEAP_MAGIC) => return Err(BdbError::UnsupportedType("heap")),
            _ => {}
        }
    }
    Err(BdbError::NotBerkeleyDb("unknown magic number"))
}

/// Page sizes are powers of two in 512..=65536; anything else means corruption.
fn checked_page_size(raw: u32) -> Result<usize, BdbError> {
    let size = raw as usize;
    if (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&size) && size.is_power_of_two() {
        Ok(size)
    } else {
        Err(BdbError::BadPageSize(raw))
    }
}

/// Rejects partitioned databases and sub-database tables; returns the per-page header length,
/// which checksummed databases extend (their checksums are not verified).
fn check_flags(bytes: &[u8], order: Order) -> Result<usize, BdbError> {
    let metaflags = byte(bytes, META_METAFLAGS);
    let nparts = order.u32(bytes, META_NPARTS).unwrap_or(0);
    if metaflags & (DBMETA_PART_RANGE | DBMETA_PART_CALLBACK) != 0 || nparts != 0 {
        return Err(BdbError::UnsupportedFeature("partitioned database"));
    }
    if order.u32(bytes, META_FLAGS).unwrap_or(0) & DB_HASH_SUBDB != 0 {
        return Err(BdbError::UnsupportedFeature("sub-databases"));
    }
    Ok(if metaflags & DBMETA_CHKSUM != 0 {
        PAGE_HEADER_LEN + CHECKSUM_HEADER_LEN
    } else {
        PAGE_HEADER_LEN
    })
}

fn read_spares(bytes: &[u8], order: Order) -> Result<[u32; NCACHED], BdbError> {
    let mut spares = [0u32; NCACHED];
    for (i, spare) in spares.iter_mut().enumerate() {
        *spare = order
            .u32(bytes, META_SPARES + 4 * i)
            .ok_or(BdbError::NotBerkeleyDb("short metadata"))?;
    }
    Ok(spares)
}

/// Smallest `i` with `2^i >= n` (`__db_log2`): which doubling of the table a bucket belongs to.
fn ceil_log2(n: u64) -> usize {
    if n <= 1 {
        0
    } else {
        (u64::BITS - (n - 1).leading_zeros()) as usize
    }
}

fn byte(bytes: &[u8], off: usize) -> u8 {
    bytes.get(off).copied().unwrap_or(0)
}

fn bad(pgno: u32, reason: &'static str) -> BdbError {
    BdbError::BadPage { pgno, reason }
}

/// The generic page header fields the reader uses.
#[derive(Debug)]
struct PageHeader {
    pgno: u32,
    next_pgno: u32,
    entries: u16,
    /// Hash pages: lowest item offset. Overflow pages: bytes of data on this page.
    hf_offset: u16,
    page_type: u8,
}

/// Walks pages, remembering which it has seen so that no page is read twice.
struct Reader<'a> {
    bytes: &'a [u8],
    meta: Meta,
    visited: Vec<bool>,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], meta: Meta) -> Self {
        // page_count pages are known to be present in `bytes`, so this is bounded by its size.
        let visited = vec![false; meta.page_count];
        Reader {
            bytes,
            meta,
            visited,
        }
    }

    /// The bytes of page `pgno`, marking it visited; a second visit is a cycle.
    fn visit(&mut self, pgno: u32) -> Result<&'a [u8], BdbError> {
        let seen = self
            .visited
            .get_mut(pgno as usize)
            .ok_or(bad(pgno, "page number beyond the end of the file"))?;
        if *seen {
            return Err(BdbError::Cycle(pgno));
        }
        *seen = true;
        let start = pgno as usize * self.meta.page_size;
        let bytes = self.bytes;
        bytes
            .get(start..start + self.meta.page_size)
            .ok_or(BdbError::Truncated {
                needed: (start + self.meta.page_size) as u64,
                actual: bytes.len(),
            })
    }

    fn header(&self, page: &[u8], pgno: u32, expected: &[u8]) -> Result<PageHeader, BdbError> {
        let o = self.meta.order;
        let short = || bad(pgno, "page header out of bounds");
        let header = PageHeader {
            pgno: o.u32(page, 8).ok_or_else(short)?,
            next_pgno: o.u32(page, 16).ok_or_else(short)?,
            entries: o.u16(page, 20).ok_or_else(short)?,
            hf_offset: o.u16(page, 22).ok_or_else(short)?,
            page_type: byte(page, 25),
        };
        if !expected.contains(&header.page_type) {
            return Err(bad(pgno, "unexpected page type"));
        }
        if header.pgno != pgno {
            return Err(bad(
                pgno,
                "page number in header does not match its position",
            ));
        }
        Ok(header)
    }

    /// Appends the records of the bucket whose chain starts at `first`.
    fn read_bucket(&mut self, first: u32, out: &mut Vec<Record>) -> Result<(), BdbError> {
        let mut pgno = first;
        loop {
            let page = self.visit(pgno)?;
            // A bucket page that was allocated but never written reads back as zeros: empty.
            if pgno == first && page.iter().all(|&b| b == P_INVALID) {
                return Ok(());
            }
            let header = self.header(page, pgno, &[P_HASH, P_HASH_UNSORTED])?;
            let items = self.page_items(page, &header)?;
            for pair in items.chunks_exact(2) {
                self.read_pair(pair[0], pair[1], pgno, out)?;
            }
            if header.next_pgno == 0 {
                return Ok(());
            }
            pgno = header.next_pgno;
        }
    }

    /// Slices the items of a hash page out of it using `inp[]`, checking every offset.
    fn page_items(&self, page: &'a [u8], header: &PageHeader) -> Result<Vec<&'a [u8]>, BdbError> {
        let pgno = header.pgno;
        let entries = usize::from(header.entries);
        if entries % 2 != 0 {
            return Err(bad(pgno, "odd number of items on a hash page"));
        }
        let index_end = self.meta.page_overhead + 2 * entries;
        if index_end > page.len() {
            return Err(bad(pgno, "item index overruns the page"));
        }
        let mut items = Vec::with_capacity(entries);
        let mut end = page.len();
        for i in 0..entries {
            let offset = self.meta.order.u16(page, self.meta.page_overhead + 2 * i);
            let start = usize::from(offset.ok_or(bad(pgno, "item index overruns the page"))?);
            if start < index_end || start >= end {
                return Err(bad(pgno, "item offset out of order or out of bounds"));
            }
            items.push(&page[start..end]);
            end = start;
        }
        Ok(items)
    }

    /// Decodes one key/value pair; on-page duplicates yield one record per value.
    fn read_pair(
        &mut self,
        key: &[u8],
        value: &[u8],
        pgno: u32,
        out: &mut Vec<Record>,
    ) -> Result<(), BdbError> {
        let key = match key.first() {
            Some(&H_KEYDATA) | Some(&H_OFFPAGE) => self.read_item(key, pgno)?,
            _ => return Err(bad(pgno, "key item of an unexpected type")),
        };
        if value.first() == Some(&H_DUPLICATE) {
            for dup in split_duplicates(&value[1..], self.meta.order, pgno)? {
                out.push((key.clone(), dup.to_vec()));
            }
        } else {
            let value = self.read_item(value, pgno)?;
            out.push((key, value));
        }
        Ok(())
    }

    /// Returns the bytes of a single (non-duplicate) item, following overflow chains.
    fn read_item(&mut self, item: &[u8], pgno: u32) -> Result<Vec<u8>, BdbError> {
        match item.first().copied() {
            Some(H_KEYDATA) => Ok(item[1..].to_vec()),
            Some(H_OFFPAGE) => {
                if item.len() < HOFFPAGE_LEN {
                    return Err(bad(pgno, "short off-page item"));
                }
                let o = self.meta.order;
                let first = o.u32(item, 4).ok_or(bad(pgno, "short off-page item"))?;
                let total = o.u32(item, 8).ok_or(bad(pgno, "short off-page item"))?;
                self.read_overflow(first, total as usize, pgno)
            }
            Some(H_OFFDUP) => Err(BdbError::UnsupportedFeature("off-page duplicates")),
            Some(H_BLOB) => Err(BdbError::UnsupportedFeature("external blob items")),
            _ => Err(bad(pgno, "unknown item type")),
        }
    }

    /// Concatenates an overflow chain. `total` cannot exceed the file (each page is read once),
    /// so a lying length can neither over-allocate nor loop.
    fn read_overflow(&mut self, first: u32, total: usize, from: u32) -> Result<Vec<u8>, BdbError> {
        if total > self.bytes.len() {
            return Err(bad(from, "off-page item longer than the file"));
        }
        let mut data = Vec::with_capacity(total);
        let mut pgno = first;
        while data.len() < total {
            if pgno == 0 {
                return Err(bad(from, "overflow chain shorter than its declared length"));
            }
            let page = self.visit(pgno)?;
            let header = self.header(page, pgno, &[P_OVERFLOW])?;
            let start = self.meta.page_overhead;
            let chunk = page
                .get(start..start + usize::from(header.hf_offset))
                .ok_or(bad(pgno, "overflow data overruns the page"))?;
            if chunk.len() > total - data.len() {
                return Err(bad(pgno, "overflow chain longer than its declared length"));
            }
            data.extend_from_slice(chunk);
            pgno = header.next_pgno;
        }
        Ok(data)
    }
}

/// Splits an `H_DUPLICATE` item: a run of `len, bytes, len` records (lengths are `u16`).
fn split_duplicates(mut data: &[u8], order: Order, pgno: u32) -> Result<Vec<&[u8]>, BdbError> {
    let malformed = || bad(pgno, "malformed duplicate set");
    let mut dups = Vec::new();
    while !data.is_empty() {
        let len = usize::from(order.u16(data, 0).ok_or_else(malformed)?);
        let value = data.get(2..2 + len).ok_or_else(malformed)?;
        if order.u16(data, 2 + len) != Some(len as u16) {
            return Err(malformed());
        }
        dups.push(value);
        data = &data[4 + len..];
    }
    Ok(dups)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One fixture made by `make_fixtures.py`; mirrors its `FIXTURES` table.
    struct Fixture {
        name: &'static str,
        page_size: usize,
        big_endian: bool,
        small: u32,
        modulus: u32,
        bigs: &'static [usize],
    }

    const FIXTURES: &[Fixture] = &[
        Fixture {
            name: "hash_le_4096",
            page_size: 4096,
            big_endian: false,
            small: 150,
            modulus: 97,
            bigs: &[4097, 9000, 15000],
        },
        Fixture {
            name: "hash_le_512",
            page_size: 512,
            big_endian: false,
            small: 300,
            modulus: 61,
            bigs: &[513, 1400, 3000],
        },
        Fixture {
            name: "hash_be_1024",
            page_size: 1024,
            big_endian: true,
            small: 120,
            modulus: 80,
            bigs: &[1500, 2500],
        },
        Fixture {
            name: "hash_chksum_1024",
            page_size: 1024,
            big_endian: false,
            small: 60,
            modulus: 80,
            bigs: &[2000],
        },
    ];

    fn fixture_path(file: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/packages/bdb")
            .join(file)
    }

    fn load(file: &str) -> Vec<u8> {
        std::fs::read(fixture_path(file)).unwrap()
    }

    /// Same formula as `value()` in `make_fixtures.py`.
    fn pattern_value(i: u32, len: usize) -> Vec<u8> {
        let mut v = format!("BAGUI-BDB-{i:05}:").into_bytes();
        let tag = v.len();
        v.extend((0..len - tag).map(|j| ((i as usize * 31 + j * 7) % 251) as u8));
        v
    }

    fn u32_bytes(n: u32, big_endian: bool) -> Vec<u8> {
        if big_endian {
            n.to_be_bytes()
        } else {
            n.to_le_bytes()
        }
        .to_vec()
    }

    /// Records by index: 0 is rpm's "next instance" record, then the small and big values.
    fn expected_records(f: &Fixture) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut lens: Vec<usize> = (1..=f.small)
            .map(|i| 16 + (i * 37 % f.modulus) as usize)
            .collect();
        lens.extend_from_slice(f.bigs);
        let count = lens.len() as u32;
        let mut records = vec![(
            u32_bytes(0, f.big_endian),
            u32_bytes(count + 1, f.big_endian),
        )];
        for (i, len) in (1..).zip(lens) {
            records.push((u32_bytes(i, f.big_endian), pattern_value(i, len)));
        }
        records
    }

    /// Records in the order `db5.3_dump` listed them when the fixture was made.
    fn expected_in_dump_order(f: &Fixture) -> Vec<(Vec<u8>, Vec<u8>)> {
        let records = expected_records(f);
        let order = std::fs::read_to_string(fixture_path(&format!("{}.order", f.name))).unwrap();
        let order: Vec<usize> = order.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(order.len(), records.len(), "{}", f.name);
        order.into_iter().map(|i| records[i].clone()).collect()
    }

    #[test]
    fn fixtures_read_back_exactly_in_dump_order() {
        for f in FIXTURES {
            let bytes = load(&format!("{}.db", f.name));
            let meta = Meta::parse(&bytes).unwrap();
            assert_eq!(meta.page_size, f.page_size, "{}", f.name);
            let want_order = if f.big_endian {
                Order::Big
            } else {
                Order::Little
            };
            assert_eq!(meta.order, want_order, "{}", f.name);

            let expected = expected_in_dump_order(f);
            let pairs = read_hash_pairs(&bytes).unwrap();
            assert_eq!(pairs.len(), expected.len(), "{}", f.name);
            assert!(
                pairs == expected,
                "{}: records differ from db5.3_dump",
                f.name
            );

            let values = read_hash_values(&bytes).unwrap();
            let expected_values: Vec<Vec<u8>> = expected.into_iter().map(|(_, v)| v).collect();
            assert!(values == expected_values, "{}", f.name);
        }
    }

    /// rpm's own layout, with real header blobs from `../headers/*.bin` (key n = n-th file).
    #[test]
    fn rpm_packages_fixture_yields_the_header_blobs() {
        let headers_dir = fixture_path("../headers");
        let mut names: Vec<_> = std::fs::read_dir(&headers_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "bin"))
            .collect();
        names.sort();
        let mut records = vec![(
            0u32.to_le_bytes().to_vec(),
            (names.len() as u32 + 1).to_le_bytes().to_vec(),
        )];
        for (n, path) in (1u32..).zip(&names) {
            records.push((n.to_le_bytes().to_vec(), std::fs::read(path).unwrap()));
        }
        let order = std::fs::read_to_string(fixture_path("rpm_packages_4096.order")).unwrap();
        let expected: Vec<_> = order
            .lines()
            .map(|l| records[l.parse::<usize>().unwrap()].clone())
            .collect();

        let pairs = read_hash_pairs(&load("rpm_packages_4096.db")).unwrap();
        assert!(
            pairs == expected,
            "rpm_packages_4096.db no longer matches ../headers/*.bin: rerun make_fixtures.py"
        );
        assert!(pairs.iter().skip(1).all(|(_, header)| header.len() > 1024));
    }

    #[test]
    fn fixtures_exercise_overflow_pages_and_bucket_splits() {
        for f in FIXTURES {
            let bytes = load(&format!("{}.db", f.name));
            let meta = Meta::parse(&bytes).unwrap();
            // A new table has 2 buckets; more means splits, placed via `spares[2..]`.
            assert!(
                meta.max_bucket >= 3,
                "{}: too few buckets to exercise splits",
                f.name
            );
            let values = read_hash_values(&bytes).unwrap();
            assert!(values.iter().any(|v| v.len() > f.page_size), "{}", f.name);
        }
        let chksum = Meta::parse(&load("hash_chksum_1024.db")).unwrap();
        assert_eq!(chksum.page_overhead, PAGE_HEADER_LEN + CHECKSUM_HEADER_LEN);
    }

    #[test]
    fn btree_is_refused_by_name() {
        let err = read_hash_values(&load("btree_512.db")).unwrap_err();
        assert_eq!(err, BdbError::UnsupportedType("btree"));
        assert!(err.to_string().contains("btree"));
    }

    #[test]
    fn other_access_methods_and_non_bdb_input_are_refused() {
        let mut bytes = load("hash_le_512.db");
        for (magic, name) in [(QUEUE_MAGIC, "queue"), (HEAP_MAGIC, "heap")] {
            bytes[META_MAGIC..META_MAGIC + 4].copy_from_slice(&magic.to_le_bytes());
            assert_eq!(
                read_hash_values(&bytes).unwrap_err(),
                BdbError::UnsupportedType(name)
            );
        }
        assert!(matches!(
            read_hash_values(&[]),
            Err(BdbError::NotBerkeleyDb(_))
        ));
        assert!(matches!(
            read_hash_values(&[0u8; 4096]),
            Err(BdbError::NotBerkeleyDb(_))
        ));
        let text = b"SQLite format 3\0".repeat(64);
        assert!(matches!(
            read_hash_values(&text),
            Err(BdbError::NotBerkeleyDb(_))
        ));
    }

    #[test]
    fn encrypted_and_partitioned_and_subdb_files_are_refused() {
        let original = load("hash_le_512.db");
        let mut bytes = original.clone();
        bytes[META_ENCRYPT_ALG] = 1;
        assert_eq!(read_hash_values(&bytes).unwrap_err(), BdbError::Encrypted);

        let mut bytes = original.clone();
        bytes[META_METAFLAGS] |= DBMETA_PART_RANGE;
        assert!(matches!(
            read_hash_values(&bytes),
            Err(BdbError::UnsupportedFeature(_))
        ));

        let mut bytes = original;
        bytes[META_FLAGS] |= DB_HASH_SUBDB as u8;
        assert!(matches!(
            read_hash_values(&bytes),
            Err(BdbError::UnsupportedFeature(_))
        ));
    }

    #[test]
    fn bad_version_and_page_size_are_refused() {
        let original = load("hash_le_512.db");
        let mut bytes = original.clone();
        bytes[META_VERSION..META_VERSION + 4].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(
            read_hash_values(&bytes).unwrap_err(),
            BdbError::UnsupportedVersion(5)
        );

        for size in [0u32, 256, 1000, 131072] {
            let mut bytes = original.clone();
            bytes[META_PAGESIZE..META_PAGESIZE + 4].copy_from_slice(&size.to_le_bytes());
            assert_eq!(
                read_hash_values(&bytes).unwrap_err(),
                BdbError::BadPageSize(size)
            );
        }
    }

    #[test]
    fn a_page_chain_that_loops_is_a_cycle() {
        let mut bytes = load("hash_le_512.db");
        let meta = Meta::parse(&bytes).unwrap();
        let pgno = meta.bucket_page(0).unwrap();
        let next = pgno as usize * meta.page_size + 16;
        bytes[next..next + 4].copy_from_slice(&pgno.to_le_bytes());
        assert_eq!(read_hash_values(&bytes).unwrap_err(), BdbError::Cycle(pgno));
    }

    #[test]
    fn a_wrong_page_type_or_number_is_a_bad_page() {
        let original = load("hash_le_512.db");
        let meta = Meta::parse(&original).unwrap();
        let pgno = meta.bucket_page(1).unwrap();
        let start = pgno as usize * meta.page_size;

        let mut bytes = original.clone();
        bytes[start + 25] = P_OVERFLOW;
        let err = read_hash_values(&bytes).unwrap_err();
        assert!(
            matches!(err, BdbError::BadPage { pgno: p, .. } if p == pgno),
            "{err}"
        );

        let mut bytes = original;
        bytes[start + 8] ^= 0x40;
        assert!(matches!(
            read_hash_values(&bytes),
            Err(BdbError::BadPage { .. })
        ));
    }

    #[test]
    fn a_truncated_file_is_reported_as_truncated() {
        let bytes = load("hash_le_4096.db");
        for len in [4096, 4096 * 3, bytes.len() - 1] {
            let err = read_hash_values(&bytes[..len]).unwrap_err();
            assert!(matches!(err, BdbError::Truncated { .. }), "{len}: {err}");
        }
    }

    /// Deterministic "fuzzing": single-byte corruptions over the first pages (meta, bucket and
    /// overflow pages), sparse ones over the whole file, truncations at many lengths, and
    /// multi-byte random corruptions. Any result is fine; a panic or hang is not.
    #[test]
    fn corrupted_and_truncated_fixtures_never_panic() {
        for name in [
            "hash_le_512.db",
            "hash_be_1024.db",
            "hash_chksum_1024.db",
            "rpm_packages_4096.db",
        ] {
            let original = load(name);
            let page_size = Meta::parse(&original).unwrap().page_size;
            let dense = (page_size * 6).min(original.len());
            let mut bytes = original.clone();
            for pos in 0..original.len() {
                let flips: &[u8] = match pos {
                    _ if pos < dense => &[0xff, 0x01],
                    _ if pos % 11 == 0 => &[0x80],
                    _ => &[],
                };
                for flip in flips {
                    bytes[pos] ^= flip;
                    let _ = read_hash_pairs(&bytes);
                    bytes[pos] ^= flip;
                }
            }
            for len in (0..original.len()).step_by(13) {
                let _ = read_hash_pairs(&original[..len]);
            }
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            for _ in 0..1000 {
                let mut bytes = original.clone();
                for _ in 0..4 {
                    let pos = next() as usize % bytes.len();
                    bytes[pos] = next() as u8;
                }
                let _ = read_hash_pairs(&bytes);
            }
        }
    }

    /// Builds a minimal two-bucket hash database by hand: for layouts `db5.3_load` cannot be
    /// asked to produce cheaply (64 KiB pages, on-page duplicates with a chosen byte order).
    fn hand_built(page_size: usize, big_endian: bool, items: &[(u8, &[u8])]) -> Vec<u8> {
        let put16 = |buf: &mut [u8], off: usize, v: u16| {
            let b = if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            buf[off..off + 2].copy_from_slice(&b);
        };
        let put32 = |buf: &mut [u8], off: usize, v: u32| {
            let b = if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            buf[off..off + 4].copy_from_slice(&b);
        };
        let mut db = vec![0u8; page_size * 3];
        put32(&mut db, META_MAGIC, HASH_MAGIC);
        put32(&mut db, META_VERSION, 9);
        put32(&mut db, META_PAGESIZE, page_size as u32);
        db[META_TYPE] = P_HASHMETA;
        put32(&mut db, META_LAST_PGNO, 2);
        put32(&mut db, META_MAX_BUCKET, 1);
        put32(&mut db, META_HIGH_MASK, 1);
        put32(&mut db, META_SPARES, 1); // bucket 0 -> page 1
        put32(&mut db, META_SPARES + 4, 1); // bucket 1 -> page 2
        for pgno in 1..=2u32 {
            let base = pgno as usize * page_size;
            let page = &mut db[base..base + page_size];
            put32(page, 8, pgno);
            page[25] = P_HASH;
            if pgno == 1 {
                put16(page, 20, items.len() as u16);
                let mut end = page_size;
                for (i, (kind, data)) in items.iter().enumerate() {
                    let start = end - 1 - data.len();
                    page[start] = *kind;
                    page[start + 1..end].copy_from_slice(data);
                    put16(page, PAGE_HEADER_LEN + 2 * i, start as u16);
                    end = start;
                }
                put16(page, 22, end as u16);
            }
        }
        db
    }

    #[test]
    fn hand_built_64k_pages_and_big_endian_duplicates() {
        let items: &[(u8, &[u8])] = &[(H_KEYDATA, b"k1"), (H_KEYDATA, b"value one")];
        let db = hand_built(MAX_PAGE_SIZE, false, items);
        assert_eq!(read_hash_values(&db).unwrap(), vec![b"value one".to_vec()]);

        // Duplicate set "ab", "cde": each length is written before and after its bytes.
        let dups = [0, 2, b'a', b'b', 0, 2, 0, 3, b'c', b'd', b'e', 0, 3];
        let items: &[(u8, &[u8])] = &[(H_KEYDATA, b"k"), (H_DUPLICATE, &dups)];
        let db = hand_built(512, true, items);
        let pairs = read_hash_pairs(&db).unwrap();
        assert_eq!(
            pairs,
            vec![
                (b"k".to_vec(), b"ab".to_vec()),
                (b"k".to_vec(), b"cde".to_vec())
            ]
        );

        let mut broken = dups;
        broken[12] = 4;
        let items: &[(u8, &[u8])] = &[(H_KEYDATA, b"k"), (H_DUPLICATE, &broken)];
        let db = hand_built(512, true, items);
        assert!(matches!(
            read_hash_values(&db),
            Err(BdbError::BadPage { pgno: 1, .. })
        ));
    }

    #[test]
    fn ceil_log2_matches_db_log2() {
        let cases = [
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (8, 3),
            (9, 4),
            (1 << 32, 32),
        ];
        for (n, want) in cases {
            assert_eq!(ceil_log2(n), want, "{n}");
        }
    }
}
