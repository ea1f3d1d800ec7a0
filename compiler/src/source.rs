//! Source texts (specs and lockfiles) and byte spans into them, so diagnostics can point anywhere.

use std::ops::Range;

/// Index of a file in [`Sources`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(pub usize);

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub file: FileId,
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(file: FileId, range: Range<usize>) -> Span {
        Span {
            file,
            start: range.start,
            end: range.end.max(range.start),
        }
    }

    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }
}

/// One named text. The name is what the user typed (a path), used only for display.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
    /// Byte offset of every line's first byte, so a position's line is a binary search
    /// rather than a scan from the top (diagnostics at scale would otherwise be quadratic).
    line_starts: Vec<usize>,
    /// Where the bytes handed to [`Sources::add_bytes`] were not UTF-8, if anywhere.
    pub invalid_utf8: Option<InvalidUtf8>,
}

/// The first byte sequence that is not UTF-8, and how many such sequences there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8 {
    /// Byte offset of the first bad sequence, both in the original bytes and in `text` (the
    /// text before it is unchanged; the sequence itself becomes U+FFFD).
    pub offset: usize,
    /// Its length in the original bytes.
    pub len: usize,
    /// How many bad sequences the file holds.
    pub count: usize,
}

/// A position for people: 1-based line, and 1-based column counted in characters (Unicode
/// scalar values), as SARIF's `unicodeCodePoints` column kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

/// Every text a compilation reads; the caller loads them, the compiler never touches files.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    pub fn new() -> Sources {
        Sources::default()
    }

    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        let text = text.into();
        self.files.push(SourceFile {
            name: name.into(),
            line_starts: line_starts(&text),
            text,
            invalid_utf8: None,
        });
        FileId(self.files.len() - 1)
    }

    /// Adds a file as read from disk. Bytes that are not UTF-8 become U+FFFD in the text and
    /// are recorded, so that compiling the file reports where they are instead of parsing it.
    pub fn add_bytes(&mut self, name: impl Into<String>, bytes: Vec<u8>) -> FileId {
        let (text, invalid) = match String::from_utf8(bytes) {
            Ok(text) => (text, None),
            Err(e) => {
                let bytes = e.into_bytes();
                let invalid = invalid_utf8(&bytes);
                (String::from_utf8_lossy(&bytes).into_owned(), invalid)
            }
        };
        let id = self.add(name, text);
        self.files[id.0].invalid_utf8 = invalid;
        id
    }

    pub fn text(&self, id: FileId) -> &str {
        &self.files[id.0].text
    }

    pub fn name(&self, id: FileId) -> &str {
        &self.files[id.0].name
    }

    pub fn invalid_utf8(&self, id: FileId) -> Option<InvalidUtf8> {
        self.files[id.0].invalid_utf8
    }

    /// The 0-based line holding byte `offset` (offsets past the end fall on the last line).
    pub fn line_index(&self, id: FileId, offset: usize) -> usize {
        let starts = &self.files[id.0].line_starts;
        starts.partition_point(|&s| s <= offset).saturating_sub(1)
    }

    /// Byte offset where 0-based `line` starts; the text's length past the last line.
    pub fn line_start(&self, id: FileId, line: usize) -> usize {
        let file = &self.files[id.0];
        file.line_starts
            .get(line)
            .copied()
            .unwrap_or(file.text.len())
    }

    /// How many lines the text has (a final line without a newline counts).
    pub fn line_count(&self, id: FileId) -> usize {
        self.files[id.0].line_starts.len()
    }

    /// Line and column of byte `offset`; an offset inside a character counts as that character.
    pub fn line_col(&self, id: FileId, offset: usize) -> LineCol {
        let text = self.text(id);
        let offset = offset.min(text.len());
        let line = self.line_index(id, offset);
        let start = self.line_start(id, line);
        let column = text.as_bytes()[start..offset]
            .iter()
            .filter(|&&b| (b as i8) >= -0x40)
            .count();
        LineCol {
            line: line + 1,
            column: column + 1,
        }
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend(
        text.bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'\n')
            .map(|(i, _)| i + 1),
    );
    starts
}

fn invalid_utf8(mut bytes: &[u8]) -> Option<InvalidUtf8> {
    let mut first: Option<(usize, usize)> = None;
    let mut count = 0;
    let mut base = 0;
    while let Err(e) = std::str::from_utf8(bytes) {
        let at = e.valid_up_to();
        let len = e.error_len().unwrap_or(bytes.len() - at);
        first.get_or_insert((base + at, len));
        count += 1;
        base += at + len;
        bytes = &bytes[at + len..];
    }
    first.map(|(offset, len)| InvalidUtf8 { offset, len, count })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let mut sources = Sources::new();
        let f = sources.add("a", "ab\nçd\n\nx");
        assert_eq!(sources.line_col(f, 0), LineCol { line: 1, column: 1 });
        assert_eq!(sources.line_col(f, 3), LineCol { line: 2, column: 1 });
        // `ç` is two bytes: `d` is the second character.
        assert_eq!(sources.line_col(f, 5), LineCol { line: 2, column: 2 });
        assert_eq!(sources.line_col(f, 7), LineCol { line: 3, column: 1 });
        assert_eq!(sources.line_col(f, 8), LineCol { line: 4, column: 1 });
        assert_eq!(sources.line_col(f, 99), LineCol { line: 4, column: 2 });
        assert_eq!(sources.line_count(f), 4);
    }

    #[test]
    fn invalid_utf8_is_located_and_counted() {
        let mut sources = Sources::new();
        let f = sources.add_bytes("a", b"ok: 1\nb\xffd: \xc3\n".to_vec());
        let bad = sources.invalid_utf8(f).unwrap();
        assert_eq!((bad.offset, bad.len, bad.count), (7, 1, 2));
        assert_eq!(
            sources.line_col(f, bad.offset),
            LineCol { line: 2, column: 2 }
        );
        assert!(sources.text(f).contains('\u{fffd}'));
        let good = sources.add_bytes("b", b"x: 1\n".to_vec());
        assert_eq!(sources.invalid_utf8(good), None);
    }
}
