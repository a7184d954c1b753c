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
            let mut table = Table::new();
            table
                .load_preset(UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header(R::HEADERS.iter().copied());
            for row in rows {
                table.add_row(row.cells());
            }
            writeln!(out, "{table}")?;
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
