//! The tag a request carries itself, read the same way by both sidecar directions and
//! by `graylane explain` (sidecar.md): its one `Gray-Publish` value, else the
//! `gray-publish` entry of its `baggage`.

use super::Tag;
use super::baggage::baggage_tag;

/// Where a carried tag was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarriedFrom {
    Header,
    Baggage,
    None,
}

/// What a request carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carried {
    pub tag: Option<Tag>,
    pub from: CarriedFrom,
    /// `Gray-Publish` was there and is no tag (two lines, a list, a value outside the
    /// grammar, not text): never forwarded; the sidecar counts it. The baggage is read
    /// next, as for no header.
    pub invalid_header: bool,
    /// The baggage was read and its `gray-publish` entry is no tag (a value outside the
    /// grammar, entries that disagree, a line that is not text): counted as well.
    pub invalid_baggage: bool,
}

/// The tag of a request whose `Gray-Publish` lines are `header` and whose `baggage`
/// lines are `baggage`, each line as text (`None`: not text). Several baggage lines
/// are one list (RFC 9110 §5.3), read as their comma-joined value, so entries that
/// disagree across lines are no tag, as within one line; a line that is not text
/// makes the list unreadable.
pub fn carried<'a>(
    mut header: impl Iterator<Item = Option<&'a str>>,
    baggage: impl Iterator<Item = Option<&'a str>>,
) -> Carried {
    let invalid_header = match (header.next(), header.next()) {
        (None, _) => false,
        (Some(Some(value)), None) => match Tag::parse(value) {
            Some(tag) => {
                return Carried {
                    tag: Some(tag),
                    from: CarriedFrom::Header,
                    invalid_header: false,
                    invalid_baggage: false,
                };
            }
            None => true,
        },
        _ => true,
    };
    let (tag, invalid_baggage) = match from_baggage(baggage) {
        Ok(tag) => (tag, false),
        Err(()) => (None, true),
    };
    Carried {
        from: if tag.is_some() {
            CarriedFrom::Baggage
        } else {
            CarriedFrom::None
        },
        tag,
        invalid_header,
        invalid_baggage,
    }
}

fn from_baggage<'a>(mut lines: impl Iterator<Item = Option<&'a str>>) -> Result<Option<Tag>, ()> {
    let Some(first) = lines.next() else {
        return Ok(None);
    };
    let first = first.ok_or(())?;
    let Some(second) = lines.next() else {
        // The usual case: one line, read in place.
        return baggage_tag(first);
    };
    let mut joined = first.to_owned();
    for line in std::iter::once(second).chain(lines) {
        joined.push(',');
        joined.push_str(line.ok_or(())?);
    }
    baggage_tag(&joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(
        header: &[Option<&str>],
        baggage: &[Option<&str>],
    ) -> (Option<String>, CarriedFrom, bool) {
        let c = carried(header.iter().copied(), baggage.iter().copied());
        (
            c.tag.map(|t| t.as_str().to_owned()),
            c.from,
            c.invalid_header,
        )
    }

    #[test]
    fn one_valid_header_wins_else_the_baggage_is_read() {
        let gray = Some("gray".to_owned());
        assert_eq!(
            of(&[Some("gray")], &[Some("gray-publish=blue")]),
            (gray.clone(), CarriedFrom::Header, false)
        );
        assert_eq!(
            of(&[], &[Some("gray-publish=gray")]),
            (gray.clone(), CarriedFrom::Baggage, false)
        );
        assert_eq!(of(&[], &[]), (None, CarriedFrom::None, false));
        // Two headers, a list, a bad value, not text: no tag from the header.
        for bad in [
            &[Some("gray"), Some("blue")][..],
            &[Some("gray,blue")],
            &[Some("gr@y")],
            &[None],
        ] {
            assert_eq!(of(bad, &[]), (None, CarriedFrom::None, true), "{bad:?}");
            assert_eq!(
                of(bad, &[Some("gray-publish=gray")]),
                (gray.clone(), CarriedFrom::Baggage, true),
                "{bad:?}"
            );
        }
    }

    /// sidecar.md: an invalid tag is removed and counted, in the baggage as in the
    /// header; no entry at all is nothing to count.
    #[test]
    fn a_baggage_entry_that_is_no_tag_is_flagged() {
        let flagged = |baggage: &[Option<&str>]| {
            let c = carried(std::iter::empty(), baggage.iter().copied());
            (c.tag.is_some(), c.invalid_baggage)
        };
        assert_eq!(flagged(&[Some("gray-publish=gr@y")]), (false, true));
        assert_eq!(
            flagged(&[Some("gray-publish=gray,gray-publish=blue")]),
            (false, true)
        );
        assert_eq!(
            flagged(&[Some("k=v"), Some("gray-publish=%zz")]),
            (false, true)
        );
        assert_eq!(flagged(&[None]), (false, true), "unreadable");
        assert_eq!(flagged(&[Some("k=v")]), (false, false));
        assert_eq!(flagged(&[]), (false, false));
        assert_eq!(flagged(&[Some("gray-publish=gray")]), (true, false));
    }

    #[test]
    fn baggage_lines_are_one_list() {
        let gray = Some("gray".to_owned());
        assert_eq!(of(&[], &[Some("a=1"), Some("gray-publish=gray")]).0, gray);
        assert_eq!(
            of(&[], &[Some("gray-publish=gray"), Some("gray-publish=blue")]).0,
            None
        );
        assert_eq!(of(&[], &[Some("gray-publish=gray"), None]).0, None);
        assert_eq!(of(&[], &[None]).0, None);
    }
}
