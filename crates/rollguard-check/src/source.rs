//! Manifest sources: files, directories and stdin, with byte offsets mapped to lines and
//! columns.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One manifest text and where it came from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The name shown in findings: the path as given (or found under a directory), or
    /// `<stdin>`.
    pub name: String,
    /// The file, when the text came from one (`None` for stdin); `--fix` writes here.
    pub path: Option<PathBuf>,
    /// The text.
    pub text: String,
    /// Byte offset of the start of every line.
    line_starts: Vec<usize>,
    /// Whether each line is ASCII, where a column is a byte offset.
    ascii: Vec<bool>,
}

impl Source {
    /// A source from a text in memory. `path` is where `--fix` would write it back.
    pub fn new(name: impl Into<String>, path: Option<PathBuf>, text: String) -> Self {
        // The parser does not count a byte order mark as a column: line 1 starts after it.
        let first = if text.starts_with('\u{feff}') { 3 } else { 0 };
        let line_starts = std::iter::once(first)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect::<Vec<_>>();
        let ascii = line_starts
            .iter()
            .enumerate()
            .map(|(i, &start)| {
                let end = line_starts.get(i + 1).copied().unwrap_or(text.len());
                text.as_bytes()[start..end].is_ascii()
            })
            .collect();
        Self {
            name: name.into(),
            path,
            text,
            line_starts,
            ascii,
        }
    }

    /// The line ending the text uses: `\r\n` when its first line ends so, else `\n`.
    pub fn newline(&self) -> &'static str {
        match self.text.find('\n') {
            Some(i) if i > 0 && self.text.as_bytes()[i - 1] == b'\r' => "\r\n",
            _ => "\n",
        }
    }

    /// Whether the text is JSON (by file extension), which `--fix` leaves alone.
    pub fn is_json(&self) -> bool {
        self.path
            .as_deref()
            .and_then(Path::extension)
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    }

    /// The byte offset of 1-based `line` and 0-based character column `col`, clamped to
    /// the text.
    pub fn offset(&self, line: usize, col: usize) -> usize {
        let index = line.saturating_sub(1);
        let Some(&start) = self.line_starts.get(index) else {
            return self.text.len();
        };
        if self.ascii[index] {
            return (start + col).min(self.text.len());
        }
        let rest = &self.text[start..];
        let within = rest.char_indices().nth(col).map_or(rest.len(), |(i, _)| i);
        start + within
    }

    /// 1-based line and 1-based character column of byte offset `at`.
    pub fn line_col(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= at).max(1);
        let start = self.line_starts[line - 1];
        let col = if self.ascii[line - 1] {
            at - start + 1
        } else {
            self.text[start..at].chars().count() + 1
        };
        (line, col)
    }

    /// The byte range of the whole line holding byte offset `at`, without its newline.
    pub fn line_range(&self, at: usize) -> std::ops::Range<usize> {
        let (line, _) = self.line_col(at);
        let start = self.line_starts[line - 1];
        let end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        start..end
    }

    /// The 0-based character column of byte offset `at`.
    pub fn column(&self, at: usize) -> usize {
        self.line_col(at).1 - 1
    }

    /// Whether only spaces precede byte offset `at` on its line.
    pub fn starts_line(&self, at: usize) -> bool {
        let start = self.line_range(at).start;
        self.text[start.min(at)..at].bytes().all(|b| b == b' ')
    }
}

/// A source that could not be read.
#[derive(Debug)]
pub struct ReadError {
    /// The path, or `<stdin>`.
    pub name: String,
    /// Why.
    pub error: std::io::Error,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: cannot read: {}", self.name, self.error)
    }
}

impl std::error::Error for ReadError {}

/// Reads the inputs in order: `-` is stdin, a directory is searched recursively for
/// `*.yaml`, `*.yml` and `*.json` files (sorted by path; hidden entries are skipped), and
/// anything else is read as a file whatever its name.
pub fn read_inputs(inputs: &[PathBuf]) -> Result<Vec<Source>, ReadError> {
    let mut sources = Vec::new();
    for input in inputs {
        if input.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|error| ReadError {
                    name: "<stdin>".into(),
                    error,
                })?;
            sources.push(Source::new("<stdin>", None, text));
        } else if input.is_dir() {
            let mut files = Vec::new();
            walk(input, &mut files)?;
            files.sort();
            for file in files {
                sources.push(read_file(&file)?);
            }
        } else {
            sources.push(read_file(input)?);
        }
    }
    Ok(sources)
}

fn read_file(path: &Path) -> Result<Source, ReadError> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Source::new(name, Some(path.to_owned()), text)),
        Err(error) => Err(ReadError { name, error }),
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), ReadError> {
    let error = |error| ReadError {
        name: dir.display().to_string(),
        error,
    };
    for entry in std::fs::read_dir(dir).map_err(error)? {
        let entry = entry.map_err(error)?;
        let path = entry.path();
        // Symlinks to directories are not followed (a link to `.` would loop); symlinks to
        // files are read.
        let link_to_dir = entry.file_type().is_ok_and(|t| t.is_symlink()) && path.is_dir();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden || link_to_dir {
            continue;
        }
        if path.is_dir() {
            walk(&path, files)?;
        } else if path.extension().is_some_and(|e| {
            ["yaml", "yml", "json"]
                .iter()
                .any(|x| e.eq_ignore_ascii_case(x))
        }) {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_positions_agree_with_multibyte_text() {
        let s = Source::new("t", None, "a: é1\nb: 2\n".into());
        assert_eq!(s.offset(1, 4), 5);
        assert_eq!(s.line_col(5), (1, 5));
        assert_eq!(s.offset(2, 3), 10);
        assert_eq!(s.line_col(10), (2, 4));
        assert_eq!(&s.text[s.line_range(9)], "b: 2");
        assert_eq!(s.offset(9, 0), s.text.len());
    }
}
