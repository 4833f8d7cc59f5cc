//! A small read-only reader of the SQLite file format, enough to list the rows of one table.
//!
//! rpm ≥ 4.16 keeps its database in `rpmdb.sqlite`. Linking SQLite (a C library) into the
//! agent is not an option, and the format is small and stable
//! (<https://www.sqlite.org/fileformat2.html>): a header, table b-trees of interior and leaf
//! pages, records of varint-typed values, and overflow chains for payloads larger than a page.
//! rpm opens the database in WAL mode, so recent commits may live only in `rpmdb.sqlite-wal`
//! until the next checkpoint; the committed frames are read as SQLite's own recovery does.
//!
//! Everything read from the files is untrusted: each offset is bounds-checked, every page may
//! be visited at most once per traversal (so a cycle is an error, not a hang), the tree depth
//! is bounded, and every failure is a [`SqliteError`], never a panic. The database is read
//! without SQLite's locks: a read racing a writer may fail, and the caller retries next round.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const MAGIC: &[u8; 16] = b"SQLite format 3\0";
const HEADER_LEN: usize = 100;
const WAL_HEADER_LEN: u64 = 32;
const WAL_FRAME_HEADER_LEN: u64 = 24;
const WAL_MAGIC_LE: u32 = 0x377f_0682;
const WAL_MAGIC_BE: u32 = 0x377f_0683;
const WAL_VERSION: u32 = 3_007_000;

const PAGE_INTERIOR_TABLE: u8 = 0x05;
const PAGE_LEAF_TABLE: u8 = 0x0d;

/// SQLite's own cursor depth limit (`BTCURSOR_MAX_DEPTH`).
const MAX_DEPTH: usize = 20;
/// SQLite's default `SQLITE_MAX_LENGTH`: no valid row payload is larger.
const MAX_PAYLOAD: u64 = 1_000_000_000;

/// Why a database could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an SQLite 3 database")]
    NotSqlite,
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("corrupt database: {0}")]
    Corrupt(String),
}

fn corrupt<T>(message: impl Into<String>) -> Result<T, SqliteError> {
    Err(SqliteError::Corrupt(message.into()))
}

/// Receives each row's rowid and full payload during a traversal.
type PayloadFn<'f> = dyn FnMut(i64, &[u8]) -> Result<(), SqliteError> + 'f;

/// One column value of a record, borrowed from the row's payload. Text is kept as the raw
/// bytes in the database's text encoding; use [`Database::text`] to decode it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// Bytes that can be read at an offset: a file on disk or a buffer in memory.
#[derive(Debug)]
enum Source {
    Memory(Vec<u8>),
    File { file: File, len: u64 },
}

impl Source {
    fn open(path: &Path) -> Result<Source, SqliteError> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Source::File { file, len })
    }

    fn len(&self) -> u64 {
        match self {
            Source::Memory(bytes) => bytes.len() as u64,
            Source::File { len, .. } => *len,
        }
    }

    /// Exactly `len` bytes at `offset`, or an error if they are not all there.
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, SqliteError> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|end| end > self.len()) {
            return corrupt(format!("read of {len} bytes at {offset} past end of file"));
        }
        match self {
            Source::Memory(bytes) => {
                // In bounds: checked against len() above, which is bytes.len().
                let start = offset as usize;
                Ok(bytes[start..start + len].to_vec())
            }
            Source::File { file, .. } => {
                let mut file = file;
                file.seek(SeekFrom::Start(offset))?;
                let mut buf = vec![0; len];
                file.read_exact(&mut buf)?;
                Ok(buf)
            }
        }
    }
}

/// The committed content of a WAL: where the newest committed copy of each page is, and the
/// database size in pages after the last commit.
#[derive(Debug)]
struct Wal {
    source: Source,
    /// Page number → offset of the page image in the WAL file.
    frames: HashMap<u32, u64>,
    db_pages: u32,
}

/// Text encoding of the database (header offset 56).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Utf8,
    Utf16Le,
    Utf16Be,
}

/// An open database: the main file, its committed WAL frames and the header facts needed to
/// find pages.
#[derive(Debug)]
pub struct Database {
    main: Source,
    wal: Option<Wal>,
    page_size: u32,
    usable_size: u32,
    page_count: u32,
    encoding: Encoding,
}

impl Database {
    /// Opens `path`, and `path-wal` beside it if there is one.
    pub fn open(path: &Path) -> Result<Database, SqliteError> {
        let main = Source::open(path)?;
        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        let wal = match Source::open(Path::new(&wal_path)) {
            Ok(wal) => Some(wal),
            Err(SqliteError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Database::from_sources(main, wal)
    }

    /// A database held in memory, with the bytes of its WAL if any.
    pub fn from_bytes(main: Vec<u8>, wal: Option<Vec<u8>>) -> Result<Database, SqliteError> {
        Database::from_sources(Source::Memory(main), wal.map(Source::Memory))
    }

    fn from_sources(main: Source, wal: Option<Source>) -> Result<Database, SqliteError> {
        // The page size comes from the main file's header; a database that has never been
        // checkpointed has an empty main file and only the WAL knows it.
        let page_size = if main.len() >= HEADER_LEN as u64 {
            let header = main.read_at(0, HEADER_LEN)?;
            check_magic(&header)?;
            header_page_size(&header)?
        } else if let Some(size) = wal.as_ref().and_then(wal_page_size) {
            size
        } else {
            return Err(SqliteError::NotSqlite);
        };
        let wal = match wal {
            Some(source) => read_wal(source, page_size)?,
            None => None,
        };
        let mut db = Database {
            main,
            wal,
            page_size,
            usable_size: page_size,
            page_count: 1,
            encoding: Encoding::Utf8,
        };
        db.load_header()?;
        Ok(db)
    }

    /// Reads the (possibly WAL-updated) header on page 1.
    fn load_header(&mut self) -> Result<(), SqliteError> {
        let page1 = self.raw_page(1)?;
        check_magic(&page1)?;
        if header_page_size(&page1)? != self.page_size {
            return corrupt("page size differs between the database file and its WAL");
        }
        let read_version = page1[19];
        if read_version > 2 {
            return Err(SqliteError::Unsupported(format!(
                "file format read version {read_version}"
            )));
        }
        let reserved = u32::from(page1[20]);
        self.usable_size = self.page_size - reserved;
        if self.usable_size < 480 {
            return corrupt(format!("usable page size {} below 480", self.usable_size));
        }
        self.encoding = match be_u32(&page1, 56) {
            Some(0 | 1) => Encoding::Utf8,
            Some(2) => Encoding::Utf16Le,
            Some(3) => Encoding::Utf16Be,
            other => return corrupt(format!("text encoding {other:?}")),
        };
        self.page_count = match &self.wal {
            Some(wal) => wal.db_pages,
            None => self.main_page_count(&page1),
        };
        Ok(())
    }

    /// Database size in pages: the header's count when it is valid (its "version valid for"
    /// matches the change counter), the file size otherwise, as SQLite decides.
    fn main_page_count(&self, page1: &[u8]) -> u32 {
        let in_header = be_u32(page1, 28).unwrap_or(0);
        let valid = be_u32(page1, 24) == be_u32(page1, 92);
        if in_header != 0 && valid {
            in_header
        } else {
            u32::try_from(self.main.len() / u64::from(self.page_size)).unwrap_or(u32::MAX)
        }
    }

    /// Page `number` (1-based) as currently committed, without range checks against the
    /// database size (used while that size is not yet known).
    fn raw_page(&self, number: u32) -> Result<Vec<u8>, SqliteError> {
        if let Some(wal) = &self.wal
            && let Some(&offset) = wal.frames.get(&number)
        {
            return wal.source.read_at(offset, self.page_size as usize);
        }
        let Some(index) = number.checked_sub(1) else {
            return corrupt("page 0 does not exist");
        };
        let offset = u64::from(index) * u64::from(self.page_size);
        self.main.read_at(offset, self.page_size as usize)
    }

    /// Page `number`, which must exist in the database.
    fn page(&self, number: u32) -> Result<Vec<u8>, SqliteError> {
        if number == 0 || number > self.page_count {
            return corrupt(format!(
                "page {number} outside the database's {} pages",
                self.page_count
            ));
        }
        self.raw_page(number)
    }

    /// Decodes a text value in the database's encoding (invalid sequences are replaced).
    pub fn text(&self, bytes: &[u8]) -> String {
        match self.encoding {
            Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            Encoding::Utf16Le | Encoding::Utf16Be => {
                let units: Vec<u16> = bytes
                    .chunks_exact(2)
                    .map(|c| match self.encoding {
                        Encoding::Utf16Le => u16::from_le_bytes([c[0], c[1]]),
                        _ => u16::from_be_bytes([c[0], c[1]]),
                    })
                    .collect();
                String::from_utf16_lossy(&units)
            }
        }
    }

    /// The root page of table `name` (matched case-insensitively, as SQL names are), from the
    /// schema table on page 1; `None` if there is no such table.
    pub fn table_root(&self, name: &str) -> Result<Option<u32>, SqliteError> {
        let mut root = None;
        self.for_each_row(1, |_, values| {
            let (Some(Value::Text(kind)), Some(Value::Text(table))) =
                (values.first(), values.get(1))
            else {
                return Ok(());
            };
            if root.is_none()
                && self.text(kind) == "table"
                && self.text(table).eq_ignore_ascii_case(name)
            {
                root = match values.get(3) {
                    Some(Value::Integer(page)) => match u32::try_from(*page) {
                        Ok(page) if page > 0 => Some(page),
                        _ => return corrupt(format!("table {name}: root page {page}")),
                    },
                    other => return corrupt(format!("table {name}: root page {other:?}")),
                };
            }
            Ok(())
        })?;
        Ok(root)
    }

    /// Calls `f(rowid, columns)` for every row of the table b-tree rooted at `root`, in rowid
    /// order. An `INTEGER PRIMARY KEY` column is stored as NULL; its value is the rowid.
    pub fn for_each_row(
        &self,
        root: u32,
        mut f: impl FnMut(i64, &[Value<'_>]) -> Result<(), SqliteError>,
    ) -> Result<(), SqliteError> {
        let mut visited = HashSet::new();
        let mut on_payload = |rowid: i64, payload: &[u8]| {
            let values = decode_record(payload)?;
            f(rowid, &values)
        };
        self.visit(root, 0, &mut visited, &mut on_payload)
    }

    /// Walks one table b-tree page and its subtrees.
    fn visit(
        &self,
        number: u32,
        depth: usize,
        visited: &mut HashSet<u32>,
        f: &mut PayloadFn<'_>,
    ) -> Result<(), SqliteError> {
        if depth > MAX_DEPTH {
            return corrupt(format!("b-tree deeper than {MAX_DEPTH} at page {number}"));
        }
        if !visited.insert(number) {
            return corrupt(format!("page {number} reached twice"));
        }
        let page = self.page(number)?;
        let usable = &page[..self.usable_size as usize];
        let start = if number == 1 { HEADER_LEN } else { 0 };
        let kind = usable[start];
        let header_len = match kind {
            PAGE_LEAF_TABLE => 8,
            PAGE_INTERIOR_TABLE => 12,
            other => {
                return corrupt(format!(
                    "page {number}: type {other:#04x}, not a table page"
                ));
            }
        };
        let cells = cell_offsets(usable, start, header_len, number)?;
        if kind == PAGE_LEAF_TABLE {
            for offset in cells {
                let (rowid, payload) = self.leaf_cell(usable, offset, number, visited)?;
                f(rowid, &payload)?;
            }
            return Ok(());
        }
        for offset in cells {
            let child = be_u32(usable, offset)
                .ok_or_else(|| SqliteError::Corrupt(format!("page {number}: cell past end")))?;
            self.visit(child, depth + 1, visited, f)?;
        }
        let right = be_u32(usable, start + 8).unwrap_or(0);
        self.visit(right, depth + 1, visited, f)
    }

    /// A table leaf cell: payload size, rowid, local payload, then the overflow chain.
    fn leaf_cell(
        &self,
        page: &[u8],
        offset: usize,
        number: u32,
        visited: &mut HashSet<u32>,
    ) -> Result<(i64, Vec<u8>), SqliteError> {
        let bad = || SqliteError::Corrupt(format!("page {number}: malformed cell at {offset}"));
        let (size, n1) = read_varint(page.get(offset..).ok_or_else(bad)?).ok_or_else(bad)?;
        let (rowid, n2) = read_varint(page.get(offset + n1..).ok_or_else(bad)?).ok_or_else(bad)?;
        let rest = &page[offset + n1 + n2..];
        if size > MAX_PAYLOAD || size > u64::from(self.page_count) * u64::from(self.usable_size) {
            return corrupt(format!("page {number}: payload of {size} bytes"));
        }
        let size = size as usize;
        let local = self.local_payload(size);
        let mut payload = rest.get(..local).ok_or_else(bad)?.to_vec();
        if local < size {
            let first = be_u32(rest, local).ok_or_else(bad)?;
            payload.reserve_exact(size - local);
            self.read_overflow(first, size - local, visited, &mut payload)?;
        }
        Ok((rowid as i64, payload))
    }

    /// How much of a table-leaf payload of `size` bytes is stored on the page itself.
    fn local_payload(&self, size: usize) -> usize {
        let usable = self.usable_size as usize;
        let max_local = usable - 35;
        if size <= max_local {
            return size;
        }
        let min_local = (usable - 12) * 32 / 255 - 23;
        let k = min_local + (size - min_local) % (usable - 4);
        if k <= max_local { k } else { min_local }
    }

    /// Appends `remaining` bytes from the overflow chain starting at page `first`.
    fn read_overflow(
        &self,
        mut next: u32,
        mut remaining: usize,
        visited: &mut HashSet<u32>,
        out: &mut Vec<u8>,
    ) -> Result<(), SqliteError> {
        while remaining > 0 {
            if next == 0 {
                return corrupt(format!("overflow chain ends {remaining} bytes early"));
            }
            if !visited.insert(next) {
                return corrupt(format!("overflow page {next} reached twice"));
            }
            let page = self.page(next)?;
            let content = &page[4..self.usable_size as usize];
            let take = remaining.min(content.len());
            out.extend_from_slice(&content[..take]);
            remaining -= take;
            next = be_u32(&page, 0).unwrap_or(0);
        }
        Ok(())
    }
}

fn check_magic(header: &[u8]) -> Result<(), SqliteError> {
    if header.get(..MAGIC.len()) == Some(MAGIC.as_slice()) {
        Ok(())
    } else {
        Err(SqliteError::NotSqlite)
    }
}

/// Page size from the header: a power of two from 512 to 32768, or 1 meaning 65536.
fn header_page_size(header: &[u8]) -> Result<u32, SqliteError> {
    let raw = u32::from(u16::from_be_bytes([header[16], header[17]]));
    let size = if raw == 1 { 65536 } else { raw };
    if size.is_power_of_two() && (512..=65536).contains(&size) {
        Ok(size)
    } else {
        corrupt(format!("page size {raw}"))
    }
}

/// The cell pointer array of a b-tree page, each offset checked to lie inside the page.
fn cell_offsets(
    page: &[u8],
    start: usize,
    header_len: usize,
    number: u32,
) -> Result<Vec<usize>, SqliteError> {
    let count = usize::from(u16::from_be_bytes([page[start + 3], page[start + 4]]));
    let array = start + header_len;
    let Some(pointers) = page.get(array..array + 2 * count) else {
        return corrupt(format!("page {number}: {count} cells do not fit"));
    };
    pointers
        .chunks_exact(2)
        .map(|p| {
            let offset = usize::from(u16::from_be_bytes([p[0], p[1]]));
            if offset < array + 2 * count || offset >= page.len() {
                corrupt(format!("page {number}: cell offset {offset} out of range"))
            } else {
                Ok(offset)
            }
        })
        .collect()
}

/// Decodes a record: a header of varint serial types, then the values.
pub fn decode_record(payload: &[u8]) -> Result<Vec<Value<'_>>, SqliteError> {
    let bad = |what: &str| SqliteError::Corrupt(format!("record: {what}"));
    let (header_len, mut at) = read_varint(payload).ok_or_else(|| bad("header size"))?;
    let header_len = usize::try_from(header_len)
        .ok()
        .filter(|&len| len >= at && len <= payload.len())
        .ok_or_else(|| bad("header size out of range"))?;
    let mut body = header_len;
    let mut values = Vec::new();
    while at < header_len {
        let (serial, n) =
            read_varint(&payload[at..header_len]).ok_or_else(|| bad("serial type"))?;
        at += n;
        let len = serial_len(serial).ok_or_else(|| bad("reserved serial type"))?;
        let end = body
            .checked_add(len)
            .filter(|&end| end <= payload.len())
            .ok_or_else(|| bad("value past end of payload"))?;
        values.push(decode_value(serial, &payload[body..end]));
        body = end;
    }
    Ok(values)
}

/// Byte length of a value of serial type `serial`; `None` for the reserved types 10 and 11.
fn serial_len(serial: u64) -> Option<usize> {
    Some(match serial {
        0 | 8 | 9 => 0,
        1..=4 => serial as usize,
        5 => 6,
        6 | 7 => 8,
        10 | 11 => return None,
        n => usize::try_from((n - 12) / 2).ok()?,
    })
}

/// Decodes one value whose bytes have already been sliced to [`serial_len`].
fn decode_value(serial: u64, bytes: &[u8]) -> Value<'_> {
    match serial {
        0 => Value::Null,
        1..=6 => Value::Integer(be_signed(bytes)),
        7 => Value::Real(f64::from_bits(be_signed(bytes) as u64)),
        8 => Value::Integer(0),
        9 => Value::Integer(1),
        n if n % 2 == 0 => Value::Blob(bytes),
        _ => Value::Text(bytes),
    }
}

/// A big-endian two's-complement integer of 1 to 8 bytes.
fn be_signed(bytes: &[u8]) -> i64 {
    let mut value: i64 = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        -1
    } else {
        0
    };
    for &b in bytes {
        value = (value << 8) | i64::from(b);
    }
    value
}

/// SQLite's varint: 1–9 bytes, big-endian groups of 7 bits, the 9th byte contributing 8.
/// Returns the value and its length, `None` if the input ends inside it.
pub fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for i in 0..9 {
        let b = *bytes.get(i)?;
        if i == 8 {
            return Some(((value << 8) | u64::from(b), 9));
        }
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
}

/// Page size declared by a WAL header, if the header looks like one.
fn wal_page_size(source: &Source) -> Option<u32> {
    let header = source.read_at(0, WAL_HEADER_LEN as usize).ok()?;
    let size = be_u32(&header, 8)?;
    (size.is_power_of_two() && (512..=65536).contains(&size)).then_some(size)
}

/// SQLite's WAL checksum: pairs of 32-bit words (in the byte order the magic selects)
/// folded into two running sums.
fn wal_checksum(data: &[u8], big_endian: bool, mut s0: u32, mut s1: u32) -> (u32, u32) {
    for pair in data.chunks_exact(8) {
        let word = |b: &[u8]| {
            let raw = [b[0], b[1], b[2], b[3]];
            if big_endian {
                u32::from_be_bytes(raw)
            } else {
                u32::from_le_bytes(raw)
            }
        };
        s0 = s0.wrapping_add(word(&pair[..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(word(&pair[4..])).wrapping_add(s0);
    }
    (s0, s1)
}

/// Reads the committed frames of a WAL, as SQLite's recovery does.
///
/// A WAL whose header is invalid (bad magic, version, checksum or a different page size) is
/// ignored: SQLite treats it as empty. Frames are read until the first one whose salts or
/// cumulative checksum do not match — a torn write or a leftover from before the WAL was
/// restarted — and only frames up to the last commit frame count; the newest committed image
/// of each page wins. Returns `None` when nothing is committed.
fn read_wal(source: Source, page_size: u32) -> Result<Option<Wal>, SqliteError> {
    if source.len() < WAL_HEADER_LEN {
        return Ok(None);
    }
    let header = source.read_at(0, WAL_HEADER_LEN as usize)?;
    let field = |at: usize| be_u32(&header, at).unwrap_or(0);
    let magic = field(0);
    if (magic != WAL_MAGIC_LE && magic != WAL_MAGIC_BE)
        || field(4) != WAL_VERSION
        || field(8) != page_size
    {
        return Ok(None);
    }
    let big_endian = magic == WAL_MAGIC_BE;
    let (salt1, salt2) = (field(16), field(20));
    let mut sums = wal_checksum(&header[..24], big_endian, 0, 0);
    if sums != (field(24), field(28)) {
        return Ok(None);
    }
    let frame_len = WAL_FRAME_HEADER_LEN + u64::from(page_size);
    let mut pending = HashMap::new();
    let mut frames = HashMap::new();
    let mut db_pages = None;
    let mut offset = WAL_HEADER_LEN;
    while offset + frame_len <= source.len() {
        let frame = source.read_at(offset, frame_len as usize)?;
        let field = |at: usize| be_u32(&frame, at).unwrap_or(0);
        let (page, commit) = (field(0), field(4));
        if page == 0 || (field(8), field(12)) != (salt1, salt2) {
            break;
        }
        let next = wal_checksum(&frame[..8], big_endian, sums.0, sums.1);
        let next = wal_checksum(
            &frame[WAL_FRAME_HEADER_LEN as usize..],
            big_endian,
            next.0,
            next.1,
        );
        if next != (field(16), field(20)) {
            break;
        }
        sums = next;
        pending.insert(page, offset + WAL_FRAME_HEADER_LEN);
        if commit != 0 {
            frames.extend(pending.drain());
            db_pages = Some(commit);
        }
        offset += frame_len;
    }
    Ok(db_pages.map(|db_pages| Wal {
        source,
        frames,
        db_pages,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    #[test]
    fn varints() {
        assert_eq!(read_varint(&[0x00]), Some((0, 1)));
        assert_eq!(read_varint(&[0x7f]), Some((127, 1)));
        assert_eq!(read_varint(&[0x81, 0x00]), Some((128, 2)));
        assert_eq!(read_varint(&[0xff; 9]), Some((u64::MAX, 9)));
        assert_eq!(read_varint(&[0x81]), None);
        assert_eq!(read_varint(&[]), None);
    }

    #[test]
    fn record_values() {
        // header: size 6, types: NULL, int8, int 6-byte, text(2), blob(1)
        let payload = [6, 0, 1, 5, 17, 14, 0xff, 0, 0, 0, 0, 1, 0, b'h', b'i', 0xaa];
        let values = decode_record(&payload).unwrap();
        assert_eq!(
            values,
            [
                Value::Null,
                Value::Integer(-1),
                Value::Integer(256),
                Value::Text(b"hi"),
                Value::Blob(&[0xaa]),
            ]
        );
        assert!(decode_record(&payload[..payload.len() - 1]).is_err());
        assert!(decode_record(&[2, 10]).is_err());
        assert!(decode_record(&[0x81]).is_err());
        assert!(decode_record(&[9, 0]).is_err());
    }

    /// The databases are made by the real SQLite through python3; without it the test fails
    /// (never skips): `./test.sh` runs on machines that have it.
    fn python() -> bool {
        let ok = Command::new("python3")
            .args(["-c", "import sqlite3"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "python3 with its sqlite3 module is needed to make the test databases"
        );
        ok
    }

    fn run_python(script: &str, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates `t` with `rows` deterministic rows (see [`expected_row`]); every 25th row's
    /// blob is larger than the page so it overflows.
    const MAKE_DB: &str = r#"
import sqlite3, sys
path, page_size, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
con = sqlite3.connect(path)
con.execute(f"pragma page_size={page_size}")
con.execute("create table t (id integer primary key, name text, data blob, n integer, r real)")
con.execute("create table other (x)")
con.execute("create index t_name on t(name)")
def size(i):
    return page_size * 2 + i if i % 25 == 0 else (i * 37) % 700
for i in range(1, rows + 1):
    n = size(i)
    data = (bytes((i * 7 + k) % 256 for k in range(256)) * (n // 256 + 1))[:n]
    n = None if i % 11 == 0 else (i * i - 500) * (10 ** (i % 13))
    con.execute("insert into t values (?, ?, ?, ?, ?)", (i, f"row{i}", data, n, i / 4))
con.commit()
con.close()
"#;

    fn expected_data(i: i64, page_size: i64) -> Vec<u8> {
        let size = if i % 25 == 0 {
            page_size * 2 + i
        } else {
            (i * 37) % 700
        };
        (0..size).map(|k| ((i * 7 + k) % 256) as u8).collect()
    }

    fn expected_n(i: i64) -> Value<'static> {
        if i % 11 == 0 {
            Value::Null
        } else {
            Value::Integer((i * i - 500) * 10i64.pow((i % 13) as u32))
        }
    }

    fn make_db(dir: &Path, page_size: u32, rows: u32) -> PathBuf {
        let path = dir.join(format!("t{page_size}-{rows}.db"));
        run_python(
            MAKE_DB,
            &[
                path.to_str().unwrap(),
                &page_size.to_string(),
                &rows.to_string(),
            ],
        );
        path
    }

    /// Reads table `t` and checks every row against the generator.
    fn check_rows(db: &Database, page_size: u32, rows: u32) {
        let root = db.table_root("t").unwrap().unwrap();
        let mut next = 1i64;
        db.for_each_row(root, |rowid, values| {
            assert_eq!(rowid, next);
            assert_eq!(values.len(), 5);
            assert_eq!(values[0], Value::Null);
            assert_eq!(values[1], Value::Text(format!("row{rowid}").as_bytes()));
            assert_eq!(
                values[2],
                Value::Blob(&expected_data(rowid, i64::from(page_size)))
            );
            assert_eq!(values[3], expected_n(rowid));
            // SQLite stores an integral REAL as an integer (the column affinity restores it).
            let real = if rowid % 4 == 0 {
                Value::Integer(rowid / 4)
            } else {
                Value::Real(rowid as f64 / 4.0)
            };
            assert_eq!(values[4], real);
            next += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(next - 1, i64::from(rows));
        assert_eq!(db.table_root("T").unwrap(), Some(root));
        assert_eq!(db.table_root("missing").unwrap(), None);
        assert_eq!(
            db.table_root("t_name").unwrap(),
            None,
            "an index is not a table"
        );
    }

    #[test]
    fn reads_python_databases_of_each_page_size() {
        if !python() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for (page_size, rows) in [(1024, 1500), (4096, 600), (65536, 2500)] {
            let path = make_db(dir.path(), page_size, rows);
            let db = Database::open(&path).unwrap();
            assert_eq!(db.page_size, page_size);
            check_rows(&db, page_size, rows);
            let bytes = std::fs::read(&path).unwrap();
            check_rows(&Database::from_bytes(bytes, None).unwrap(), page_size, rows);
        }
    }

    /// Leaves a WAL with two committed transactions that were never checkpointed and an
    /// uncommitted spilled transaction after them, then copies the files twice (one copy
    /// for us, one for SQLite to answer from) before exiting without closing.
    const MAKE_WAL: &str = r#"
import sqlite3, sys, shutil, os
d = sys.argv[1]
con = sqlite3.connect(f"{d}/work.db", isolation_level=None)
con.execute("pragma page_size=1024")
con.execute("pragma journal_mode=wal")
con.execute("create table t (id integer primary key, v blob)")
con.execute("begin")
for i in range(1, 201):
    con.execute("insert into t values (?, ?)", (i, bytes([i % 256]) * (i * 13 % 3000)))
con.execute("commit")
con.execute("pragma wal_checkpoint(truncate)")
con.execute("pragma wal_autocheckpoint=0")
con.execute("begin")
for i in range(201, 401):
    con.execute("insert into t values (?, ?)", (i, bytes([i % 256]) * (i * 13 % 3000)))
con.execute("delete from t where id between 50 and 120")
con.execute("update t set v = ? where id = 7", (b"updated" * 500,))
con.execute("commit")
con.execute("begin")
con.execute("insert into t values (1000, ?)", (b"second commit",))
con.execute("commit")
con.execute("pragma cache_size=1")
con.execute("begin")
for i in range(2000, 2100):
    con.execute("insert into t values (?, ?)", (i, b"uncommitted" * 300))
for name in ("ours", "sqlite"):
    os.mkdir(f"{d}/{name}")
    shutil.copy(f"{d}/work.db", f"{d}/{name}/db")
    shutil.copy(f"{d}/work.db-wal", f"{d}/{name}/db-wal")
print(os.path.getsize(f"{d}/work.db-wal"))
os._exit(0)
"#;

    const DUMP: &str = r#"
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
for i, v in con.execute("select id, v from t order by id"):
    print(i, len(v), sum(v))
"#;

    fn dump(db: &Database) -> String {
        let root = db.table_root("t").unwrap().unwrap();
        let mut out = String::new();
        db.for_each_row(root, |rowid, values| {
            let Value::Blob(v) = values[1] else {
                panic!("row {rowid}: {:?}", values[1]);
            };
            let sum: u64 = v.iter().map(|&b| u64::from(b)).sum();
            out.push_str(&format!("{rowid} {} {sum}\n", v.len()));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn reads_committed_wal_frames() {
        if !python() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let wal_size: u64 = run_python(MAKE_WAL, &[d]).trim().parse().unwrap();
        assert!(wal_size > 0, "python left no WAL");
        let ours = Database::open(&dir.path().join("ours/db")).unwrap();
        let got = dump(&ours);
        let want = run_python(DUMP, &[&format!("{d}/sqlite/db")]);
        assert_eq!(got, want);
        assert!(got.contains("\n1000 13 "), "second commit missing");
        assert!(!got.contains("\n2000 "), "uncommitted row visible");
        assert!(!got.starts_with("50 ") && !got.contains("\n50 "));

        // Without the WAL only the checkpointed first transaction is visible.
        let main = std::fs::read(dir.path().join("ours/db")).unwrap();
        let old = dump(&Database::from_bytes(main.clone(), None).unwrap());
        assert_eq!(old.lines().count(), 200);

        // A WAL whose header checksum is wrong is ignored, as SQLite does.
        let mut wal = std::fs::read(dir.path().join("ours/db-wal")).unwrap();
        wal[24] ^= 1;
        assert_eq!(
            dump(&Database::from_bytes(main.clone(), Some(wal)).unwrap()),
            old
        );

        // Damaging the last commit frame leaves only the commit before it visible.
        let mut wal = std::fs::read(dir.path().join("ours/db-wal")).unwrap();
        let frame_len = 24 + 1024;
        let last_commit = (32..wal.len())
            .step_by(frame_len)
            .rfind(|&at| at + frame_len <= wal.len() && be_u32(&wal, at + 4) != Some(0))
            .unwrap();
        wal[last_commit + 100] ^= 0xff;
        let partial = dump(&Database::from_bytes(main, Some(wal)).unwrap());
        assert!(!partial.contains("\n1000 13 "));
        assert!(
            partial.contains("\n400 "),
            "first uncheckpointed commit lost"
        );
    }

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        if !python() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = make_db(dir.path(), 1024, 60);
        let bytes = std::fs::read(&path).unwrap();
        let read_all = |bytes: Vec<u8>| -> Result<usize, SqliteError> {
            let db = Database::from_bytes(bytes, None)?;
            let mut rows = 0;
            if let Some(root) = db.table_root("t")? {
                db.for_each_row(root, |_, _| {
                    rows += 1;
                    Ok(())
                })?;
            }
            Ok(rows)
        };
        assert_eq!(read_all(bytes.clone()).unwrap(), 60);
        assert!(matches!(read_all(Vec::new()), Err(SqliteError::NotSqlite)));
        assert!(matches!(
            read_all(b"not a database at all".repeat(10)),
            Err(SqliteError::NotSqlite)
        ));
        // Truncation: an error once table pages are lost (the tail may hold only index
        // pages, which are never read), never a panic.
        for len in (0..bytes.len()).step_by(97) {
            let result = read_all(bytes[..len].to_vec());
            assert!(
                len > bytes.len() / 2 || result.is_err(),
                "truncated to {len}"
            );
        }
        // Single-byte damage anywhere: any outcome but a panic.
        for at in (0..bytes.len()).step_by(7) {
            for value in [0x00, 0x01, 0x7f, 0xff] {
                let mut bad = bytes.clone();
                bad[at] = value;
                let _ = read_all(bad);
            }
        }
    }

    #[test]
    fn cycles_are_errors() {
        if !python() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = make_db(dir.path(), 1024, 300);
        let bytes = std::fs::read(&path).unwrap();
        let db = Database::from_bytes(bytes.clone(), None).unwrap();
        let root = db.table_root("t").unwrap().unwrap();
        let at = (root as usize - 1) * 1024;
        assert_eq!(
            bytes[at], PAGE_INTERIOR_TABLE,
            "300 rows need an interior root"
        );

        // The root's right-most child pointing back at the root.
        let mut bad = bytes.clone();
        bad[at + 8..at + 12].copy_from_slice(&root.to_be_bytes());
        let db = Database::from_bytes(bad, None).unwrap();
        let err = db.for_each_row(root, |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("reached twice"), "{err}");

        // The first overflow page's next pointer pointing at itself.
        let db = Database::from_bytes(bytes.clone(), None).unwrap();
        let first_overflow = first_overflow_page(&db, root);
        let mut bad = bytes;
        let at = (first_overflow as usize - 1) * 1024;
        bad[at..at + 4].copy_from_slice(&first_overflow.to_be_bytes());
        let db = Database::from_bytes(bad, None).unwrap();
        let err = db.for_each_row(root, |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("reached twice"), "{err}");
    }

    /// The first overflow page of row 25 (the first overflowing row), found by descending
    /// the tree by key: an interior cell's left child holds the rowids up to its key.
    fn first_overflow_page(db: &Database, root: u32) -> u32 {
        let mut number = root;
        loop {
            let page = db.page(number).unwrap();
            let leaf = page[0] == PAGE_LEAF_TABLE;
            let cells = cell_offsets(&page, 0, if leaf { 8 } else { 12 }, number).unwrap();
            if !leaf {
                number = cells
                    .iter()
                    .find(|&&offset| read_varint(&page[offset + 4..]).unwrap().0 >= 25)
                    .map_or_else(
                        || be_u32(&page, 8).unwrap(),
                        |&offset| be_u32(&page, offset).unwrap(),
                    );
                continue;
            }
            for offset in cells {
                let (size, n1) = read_varint(&page[offset..]).unwrap();
                let (rowid, n2) = read_varint(&page[offset + n1..]).unwrap();
                if rowid == 25 {
                    let local = db.local_payload(size as usize);
                    return be_u32(&page, offset + n1 + n2 + local).unwrap();
                }
            }
            panic!("row 25 is not on its leaf");
        }
    }
}
