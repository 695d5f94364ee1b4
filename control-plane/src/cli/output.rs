//! Everything the CLI prints to standard output goes through here: tables for people,
//! JSON and YAML for scripts. Progress and errors go to standard error.

#![allow(clippy::print_stdout)]

use serde_json::Value;

use super::Format;

/// Column-aligned text, kubectl style.
pub(crate) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: Vec<&'static str>) -> Self {
        Self {
            headers,
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            padded.join("   ").trim_end().to_string()
        };
        let mut out = vec![line(self.headers.clone())];
        out.extend(
            self.rows
                .iter()
                .map(|r| line(r.iter().map(String::as_str).collect())),
        );
        out.join("\n")
    }
}

/// Prints `value` as JSON or YAML, or `table` for the table format.
pub(crate) fn emit(format: Format, table: impl FnOnce() -> Table, value: impl FnOnce() -> Value) {
    match format {
        Format::Table => text(&table().render()),
        Format::Json | Format::Yaml => raw(format, &value()),
    }
}

/// Prints `value` as JSON (pretty) or YAML; `Table` falls back to YAML.
pub(crate) fn raw(format: Format, value: &Value) {
    match format {
        Format::Json => text(&serde_json::to_string_pretty(value).unwrap_or_default()),
        Format::Table | Format::Yaml => text(&serde_saphyr::to_string(value).unwrap_or_default()),
    }
}

/// Prints text as it is (YAML documents, diffs, messages), ending it with a newline.
///
/// The one writer of the CLI's standard output. A reader that went away
/// (`graylane rules get | head -1`) ends the CLI quietly with 0, as a filter ends: it
/// got what it wanted. `println!` would panic there (exit 101), and restoring SIGPIPE
/// would kill the CLI on a server closing its socket too.
pub(crate) fn text(s: &str) {
    use std::io::Write as _;
    let newline = if s.ends_with('\n') || s.is_empty() {
        ""
    } else {
        "\n"
    };
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(s.as_bytes())
        .and_then(|()| out.write_all(newline.as_bytes()))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: writing the output: {e}");
            }
            std::process::exit(1);
        }
    }
}

/// "2026-11-23 15:04:05Z" from Unix milliseconds (UTC, no time-zone database needed).
/// A history entry as JSON, the same for `rules history -o json` and
/// `GET /api/v1/history`: `appliedAt` in RFC 3339 (JavaScript's Date, jq's
/// `fromdate`), `appliedAtMs` as milliseconds.
pub(crate) fn history_entry(
    revision: u64,
    applied_at_ms: i64,
    applied_by: &str,
    resources: u32,
    summary: &str,
) -> serde_json::Value {
    serde_json::json!({
        "revision": revision,
        "appliedAt": timestamp(applied_at_ms).replacen(' ', "T", 1),
        "appliedAtMs": applied_at_ms,
        "appliedBy": applied_by,
        "resources": resources,
        "summary": summary,
    })
}

pub(crate) fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm), valid for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00Z");
        assert_eq!(timestamp(1_795_446_245_000), "2026-11-23 15:04:05Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29 00:00:00Z");
    }

    #[test]
    fn table_columns_align() {
        let mut t = Table::new(vec!["A", "LONGER"]);
        t.row(vec!["wide cell".into(), "x".into()]);
        assert_eq!(t.render(), "A           LONGER\nwide cell   x");
    }
}
