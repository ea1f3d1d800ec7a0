//! The row cache's file format: compact, and quick to read back (a 50k-row NB is about
//! 15 MB; the same rows as JSON are 23 MB and take longer to parse than the server takes to
//! list their versions).
//!
//! ```text
//! file   = magic u32:format str:key u32:count row*
//! row    = u8:table uuid:_uuid uuid:_version u8:count (u8:column value)*
//! value  = u8:0 (set) u32:n atom*n  |  u8:1 (map) u32:n (atom atom)*n
//! atom   = u8:0 i64 | u8:1 f64 | u8:2 u8 | u8:3 str | u8:4 uuid
//! str    = u32:len bytes (UTF-8)        uuid = 16 bytes        integers little-endian
//! ```
//!
//! `table` indexes [`Table::ALL`] and `column` that table's managed columns, so a file is
//! only meaningful to the same wepoq; the key (which names the format of the columns) says
//! whether it is. The file ends with the first 16 bytes of the SHA-256 of all that precedes
//! them: a damaged file decodes to `None` rather than to rows that differ from the server's
//! under a version it confirms. Decoding never trusts a length either.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};
use wepoq_compiler::nb::Table;

use crate::ovsdb::{Atom, Row, Uuid, Value};

const MAGIC: &[u8; 8] = b"wqrows\0\n";
const FORMAT: u32 = 1;
/// Bytes of the trailing checksum.
const SUM: usize = 16;

/// One cached row: its table, its `_version`, and the row as read (with `_uuid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRow {
    pub table: Table,
    pub version: Uuid,
    pub row: Row,
}

/// Encodes `rows`; `None` if one holds something a server row never does (a named uuid) or
/// lacks its `_uuid` or `_version`.
pub fn encode<'a>(
    key: &str,
    rows: impl ExactSizeIterator<Item = (Table, &'a Row)>,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(64 + rows.len() * 320);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    put_str(&mut out, key);
    out.extend_from_slice(&u32::try_from(rows.len()).ok()?.to_le_bytes());
    for (table, row) in rows {
        out.push(Table::ALL.iter().position(|t| *t == table)? as u8);
        put_uuid(&mut out, row.uuid()?);
        put_uuid(&mut out, row.get("_version")?.as_uuid()?);
        let columns: Vec<(usize, &Value)> = table
            .managed_columns()
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, row.get(*c)?)))
            .collect();
        out.push(columns.len() as u8);
        for (i, value) in columns {
            out.push(i as u8);
            put_value(&mut out, value)?;
        }
    }
    Some(with_checksum(out))
}

/// `body` followed by its checksum, as [`encode`] ends a file.
pub fn with_checksum(mut body: Vec<u8>) -> Vec<u8> {
    let sum = Sha256::digest(&body);
    body.extend_from_slice(&sum[..SUM]);
    body
}

/// Decodes a file written by [`encode`] under the same `key`; `None` if it was not, or is
/// damaged.
pub fn decode(key: &str, bytes: &[u8]) -> Option<Vec<CachedRow>> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(SUM)?)?;
    if Sha256::digest(body)[..SUM] != *sum {
        return None;
    }
    let mut r = Reader { bytes: body };
    if r.take(MAGIC.len())? != MAGIC || r.u32()? != FORMAT || r.str()? != key {
        return None;
    }
    let count = r.u32()? as usize;
    // Every row takes at least 34 bytes: a count beyond that is damage, not a reason to
    // reserve gigabytes.
    if count > r.bytes.len() / 34 {
        return None;
    }
    let mut rows = Vec::with_capacity(count);
    for _ in 0..count {
        let table = *Table::ALL.get(r.u8()? as usize)?;
        let uuid = r.uuid()?;
        let version = r.uuid()?;
        let managed = table.managed_columns();
        let mut row: BTreeMap<String, Value> = BTreeMap::new();
        for _ in 0..r.u8()? {
            let column = managed.get(r.u8()? as usize)?;
            row.insert((*column).to_owned(), r.value()?);
        }
        row.insert("_uuid".to_owned(), Value::uuid(uuid));
        row.insert("_version".to_owned(), Value::uuid(version.clone()));
        rows.push(CachedRow {
            table,
            version,
            row: row.into_iter().collect(),
        });
    }
    r.bytes.is_empty().then_some(rows)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_uuid(out: &mut Vec<u8>, uuid: &Uuid) {
    let mut digits = uuid.as_str().bytes().filter(|b| *b != b'-');
    while let (Some(high), Some(low)) = (digits.next(), digits.next()) {
        out.push((nibble(high) << 4) | nibble(low));
    }
}

/// A hex digit's value (a `Uuid` holds only lowercase hex digits and dashes).
fn nibble(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        _ => digit - b'a' + 10,
    }
}

fn put_value(out: &mut Vec<u8>, value: &Value) -> Option<()> {
    match value {
        Value::Set(set) => {
            out.push(0);
            out.extend_from_slice(&(set.len() as u32).to_le_bytes());
            set.iter().try_for_each(|a| put_atom(out, a))
        }
        Value::Map(map) => {
            out.push(1);
            out.extend_from_slice(&(map.len() as u32).to_le_bytes());
            map.iter()
                .try_for_each(|(k, v)| put_atom(out, k).and_then(|()| put_atom(out, v)))
        }
    }
}

fn put_atom(out: &mut Vec<u8>, atom: &Atom) -> Option<()> {
    match atom {
        Atom::Integer(i) => {
            out.push(0);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Atom::Real(f) => {
            out.push(1);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Atom::Boolean(b) => out.extend_from_slice(&[2, u8::from(*b)]),
        Atom::String(s) => {
            out.push(3);
            put_str(out, s);
        }
        Atom::Uuid(u) => {
            out.push(4);
            put_uuid(out, u);
        }
        Atom::NamedUuid(_) => return None,
    }
    Some(())
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }

    fn uuid(&mut self) -> Option<Uuid> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bytes = self.take(16)?;
        let mut text = String::with_capacity(36);
        for (i, b) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                text.push('-');
            }
            text.push(HEX[usize::from(b >> 4)] as char);
            text.push(HEX[usize::from(b & 15)] as char);
        }
        Uuid::parse(&text)
    }

    fn atom(&mut self) -> Option<Atom> {
        Some(match self.u8()? {
            0 => Atom::Integer(self.u64()? as i64),
            1 => Atom::Real(f64::from_bits(self.u64()?)),
            2 => Atom::Boolean(match self.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            }),
            3 => Atom::String(self.str()?.to_owned()),
            4 => Atom::Uuid(self.uuid()?),
            _ => return None,
        })
    }

    fn value(&mut self) -> Option<Value> {
        let kind = self.u8()?;
        let n = self.u32()? as usize;
        // Each atom takes at least two bytes.
        if n > self.bytes.len() / 2 {
            return None;
        }
        match kind {
            0 => (0..n)
                .map(|_| self.atom())
                .collect::<Option<BTreeSet<_>>>()
                .map(Value::Set),
            1 => (0..n)
                .map(|_| Some((self.atom()?, self.atom()?)))
                .collect::<Option<BTreeMap<_, _>>>()
                .map(Value::Map),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid(n: u8) -> Uuid {
        Uuid::parse(&format!("{n:02x}0000ab-cdef-4012-8345-6789abcdef{n:02x}")).unwrap()
    }

    fn rows() -> Vec<(Table, Row)> {
        let port = Row::new()
            .with("_uuid", Value::uuid(uuid(1)))
            .with("_version", Value::uuid(uuid(2)))
            .with("name", "c0.cli.web.shop")
            .with("addresses", Value::set(["0a:58:0a:46:00:05 10.70.0.5"]))
            .with("options", Value::map::<&str, &str>([]))
            .with(
                "external_ids",
                Value::map([
                    ("wepoq.net/owner", "shop.wepoq.net"),
                    ("k\u{e9}y", "v\"al\\ue"),
                ]),
            );
        let switch = Row::new()
            .with("_uuid", Value::uuid(uuid(3)))
            .with("_version", Value::uuid(uuid(4)))
            .with("name", "svr.web.shop")
            .with(
                "ports",
                Value::set([Atom::Uuid(uuid(1)), Atom::Uuid(uuid(9))]),
            );
        let acl = Row::new()
            .with("_uuid", Value::uuid(uuid(5)))
            .with("_version", Value::uuid(uuid(6)))
            .with("priority", Value::atom(-1100i64))
            .with("action", "drop")
            .with(
                "external_ids",
                Value::map([("ratio", Atom::Real(0.25)), ("on", Atom::Boolean(true))]),
            );
        vec![
            (Table::LogicalSwitchPort, port),
            (Table::LogicalSwitch, switch),
            (Table::Acl, acl),
        ]
    }

    fn encoded(key: &str) -> Vec<u8> {
        let rows = rows();
        encode(key, rows.iter().map(|(t, r)| (*t, r))).unwrap()
    }

    #[test]
    fn rows_come_back_as_they_were() {
        let back = decode("k", &encoded("k")).unwrap();
        let want = rows();
        assert_eq!(back.len(), want.len());
        for (got, (table, row)) in back.iter().zip(&want) {
            assert_eq!(got.table, *table);
            assert_eq!(
                &got.version,
                row.get("_version").unwrap().as_uuid().unwrap()
            );
            assert_eq!(&got.row, row);
        }
    }

    #[test]
    fn another_key_or_format_is_not_read() {
        assert!(decode("other", &encoded("k")).is_none());
        let mut body = encoded("k");
        body.truncate(body.len() - SUM);
        body[MAGIC.len()] = 2; // the format number, with the checksum redone
        assert!(decode("k", &with_checksum(body)).is_none());
    }

    #[test]
    fn columns_wepoq_does_not_manage_are_left_out() {
        let row = Row::new()
            .with("_uuid", Value::uuid(uuid(1)))
            .with("_version", Value::uuid(uuid(2)))
            .with("up", Value::atom(true))
            .with("name", "p");
        let back = decode(
            "k",
            &encode("k", [(Table::LogicalSwitchPort, &row)].into_iter()).unwrap(),
        )
        .unwrap();
        assert_eq!(back[0].row.get("up"), None);
        assert_eq!(back[0].row.str("name"), Some("p"));
    }

    #[test]
    fn rows_a_server_never_sends_are_not_encoded() {
        let named = Row::new()
            .with("_uuid", Value::uuid(uuid(1)))
            .with("_version", Value::uuid(uuid(2)))
            .with("ports", Value::named_uuid("x"));
        assert!(encode("k", [(Table::LogicalSwitch, &named)].into_iter()).is_none());
        let unversioned = Row::new().with("_uuid", Value::uuid(uuid(1)));
        assert!(encode("k", [(Table::LogicalSwitch, &unversioned)].into_iter()).is_none());
    }

    /// A damaged file is not read, and never panics or reserves memory it does not hold:
    /// every truncation, and every byte changed to a few values that upset lengths and tags.
    #[test]
    fn damage_is_refused_without_panicking() {
        let bytes = encoded("k");
        for len in 0..bytes.len() {
            assert!(decode("k", &bytes[..len]).is_none(), "truncated to {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode("k", &longer).is_none());
        for i in 0..bytes.len() {
            for v in [0u8, 1, 4, 5, 0x7f, 0xff] {
                let mut damaged = bytes.clone();
                damaged[i] = v;
                assert!(
                    damaged == bytes || decode("k", &damaged).is_none(),
                    "byte {i} set to {v} went unnoticed"
                );
            }
        }
        // Past the checksum, the decoder itself must still hold: damage with the sum redone.
        for i in 0..bytes.len() - SUM {
            for v in [0u8, 1, 4, 5, 0x7f, 0xff] {
                let mut damaged = bytes[..bytes.len() - SUM].to_vec();
                damaged[i] = v;
                let _ = decode("k", &with_checksum(damaged));
            }
        }
    }
}
