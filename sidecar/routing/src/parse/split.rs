//! Splitting a multi-document YAML file at its `---` lines, keeping each document's
//! 1-based index and first line.

/// One document of a file.
#[derive(Debug, PartialEq)]
pub(crate) struct Chunk<'a> {
    /// 1-based document index.
    pub(crate) index: usize,
    /// 1-based line in the file of the chunk's first line (its `---`, if any).
    pub(crate) first_line: usize,
    /// The text, including its `---` line.
    pub(crate) text: &'a str,
}

/// Splits at lines that are a YAML document marker: `---` alone or followed by a
/// space, tab or `#`-comment (`--- {a: 1}` starts a document with content).
///
/// Numbering: every marker starts a new document, empty or not, so the index is what a
/// reader counts by `---`. The text before the first marker counts as document 1 only
/// when it holds something other than blank lines, comments and `%` directives — so a
/// file that opens with `---` starts with document 1 after that line.
pub(crate) fn split(text: &str) -> Vec<Chunk<'_>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut starts = vec![(0usize, 1usize)];
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        // A marker on the first line opens document 1 itself, so it needs no new chunk.
        if offset > 0 && is_marker(line) {
            starts.push((offset, n + 1));
        }
        offset += line.len();
    }
    let mut chunks = Vec::with_capacity(starts.len());
    let mut index = 0;
    for (i, &(start, first_line)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(text.len(), |&(s, _)| s);
        let chunk = &text[start..end];
        let is_prelude = i == 0 && !starts_with_marker(chunk);
        if is_prelude && !has_content(chunk) {
            continue;
        }
        index += 1;
        chunks.push(Chunk {
            index,
            first_line,
            text: chunk,
        });
    }
    chunks
}

fn is_marker(line: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']);
    match line.strip_prefix("---") {
        Some(rest) => rest.is_empty() || rest.starts_with([' ', '\t']),
        None => false,
    }
}

fn starts_with_marker(chunk: &str) -> bool {
    chunk.split_inclusive('\n').next().is_some_and(is_marker)
}

fn has_content(chunk: &str) -> bool {
    chunk.lines().any(|l| {
        let t = l.trim();
        !(t.is_empty() || t.starts_with('#') || t.starts_with('%'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indices(text: &str) -> Vec<(usize, usize)> {
        split(text)
            .iter()
            .map(|c| (c.index, c.first_line))
            .collect()
    }

    #[test]
    fn a_leading_marker_does_not_make_an_empty_first_document() {
        assert_eq!(indices("---\na: 1\n---\nb: 2\n"), vec![(1, 1), (2, 3)]);
        assert_eq!(indices("# comment\n%YAML 1.2\n---\na: 1\n"), vec![(1, 3)]);
    }

    #[test]
    fn text_before_the_first_marker_is_document_one() {
        assert_eq!(indices("a: 1\n---\nb: 2\n"), vec![(1, 1), (2, 2)]);
    }

    #[test]
    fn empty_documents_are_counted() {
        let chunks = split("a: 1\n---\n---\n# only a comment\n---\nb: 2");
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[3].index, 4);
        assert_eq!(chunks[3].text, "---\nb: 2");
        assert_eq!(chunks[3].first_line, 5);
    }

    #[test]
    fn markers_need_a_separator_after_the_dashes() {
        assert_eq!(split("a: ---x\n----\nb: 1\n").len(), 1);
        assert_eq!(split("a: 1\n--- {b: 1}\n").len(), 2);
        assert_eq!(split("a: 1\r\n---\r\nb: 1\r\n").len(), 2);
        assert_eq!(split("a: 1\n--- # next\nb: 1\n").len(), 2);
    }

    #[test]
    fn empty_text_has_no_document() {
        assert!(split("").is_empty());
        assert!(split("\n\n# nothing\n").is_empty());
    }
}
