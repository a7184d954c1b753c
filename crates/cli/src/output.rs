//! How results are printed: a table for people, JSON or CSV for scripts.

use std::io::Write as _;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

/// Output format of list-like commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// A row printable in every format: the JSON form is its serde form, the table and CSV
/// forms are `HEADERS` and `cells`.
pub trait Record: Serialize {
    const HEADERS: &'static [&'static str];
    fn cells(&self) -> Vec<String>;
}

/// Prints `rows` to stdout in `format`.
pub fn print<R: Record>(format: Format, rows: &[R]) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        Format::Table => {
            let terminal = Table::new().width();
            let cells = rows.iter().map(Record::cells).collect();
            writeln!(out, "{}", render(R::HEADERS, cells, terminal))?;
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, rows)?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            writer.write_record(R::HEADERS)?;
            for row in rows {
                writer.write_record(row.cells())?;
            }
            writer.flush()?;
        }
    }
    Ok(())
}

/// Rows for people: a table when it fits the terminal, else each row as a record of
/// `FIELD value` lines (as psql's `\x auto`), so that no id is ever cut across lines on an
/// 80-column terminal. Piped output (no terminal width) is always a table.
fn render(headers: &[&str], rows: Vec<Vec<String>>, width: Option<u16>) -> String {
    let widest = |index: usize| {
        rows.iter()
            .filter_map(|row| row.get(index))
            .map(|cell| cell.chars().count())
            .chain([headers[index].chars().count()])
            .max()
            .unwrap_or(0)
    };
    // Each column: its widest cell, a space each side and a border; and the last border.
    let natural: usize = (0..headers.len())
        .map(|index| widest(index) + 3)
        .sum::<usize>()
        + 1;
    match width {
        Some(width) if natural > usize::from(width) => records(headers, &rows, width),
        _ => {
            let mut table = Table::new();
            table
                .load_preset(UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Disabled)
                .set_header(headers.iter().copied());
            for row in rows {
                table.add_row(row);
            }
            table.to_string()
        }
    }
}

/// Each row as a numbered record, one `FIELD  value` line per column.
fn records(headers: &[&str], rows: &[Vec<String>], width: u16) -> String {
    let label = headers.iter().map(|h| h.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (number, row) in rows.iter().enumerate() {
        let title = format!("─[ {} ]", number + 1);
        let rule = usize::from(width)
            .saturating_sub(title.chars().count())
            .min(40);
        out.push_str(&format!("{title}{}\n", "─".repeat(rule)));
        for (header, cell) in headers.iter().zip(row) {
            out.push_str(&format!("{header:<label$}  {cell}\n"));
        }
    }
    out.trim_end().to_owned()
}

/// Prints a line for people on stderr, so stdout stays machine-readable in JSON/CSV mode.
pub fn note(format: Format, message: impl std::fmt::Display) {
    // A closed pipe (`| head`) is not worth a panic: the reader has gone.
    if format == Format::Table {
        let _ = writeln!(std::io::stdout(), "{message}");
    } else {
        let _ = writeln!(std::io::stderr(), "{message}");
    }
}

pub fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Vec<String>> {
        vec![vec![
            "6daa7c8b-a1b0-4afd-9e73-2732b5eb7b42".to_owned(),
            "Christopher Alexander Smith".to_owned(),
            "christopher.alexander.smith2@contoso.com".to_owned(),
            "yes".to_owned(),
        ]]
    }

    const HEADERS: &[&str] = &["OBJECT ID", "NAME", "USER PRINCIPAL NAME", "ENABLED"];

    #[test]
    fn a_table_too_wide_for_an_80_column_terminal_prints_each_row_as_a_record_with_ids_whole() {
        let shown = render(HEADERS, rows(), Some(80));
        assert!(
            shown.lines().all(|line| line.chars().count() <= 80),
            "{shown}"
        );
        assert!(
            shown.contains("OBJECT ID            6daa7c8b-a1b0-4afd-9e73-2732b5eb7b42"),
            "{shown}"
        );
        assert!(
            shown.contains("USER PRINCIPAL NAME  christopher.alexander.smith2@contoso.com"),
            "{shown}"
        );
        assert!(shown.starts_with("─[ 1 ]"), "{shown}");
    }

    #[test]
    fn a_table_that_fits_or_goes_to_a_pipe_stays_a_table_on_one_line_per_row() {
        for width in [Some(200), None] {
            let shown = render(HEADERS, rows(), width);
            assert_eq!(shown.lines().count(), 5, "{shown}");
            assert!(
                shown
                    .lines()
                    .nth(3)
                    .unwrap()
                    .contains("6daa7c8b-a1b0-4afd-9e73-2732b5eb7b42"),
                "{shown}"
            );
        }
    }
}
