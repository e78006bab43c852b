//! The workbook of an export: one sheet per table (more when a table passes Excel's row limit)
//! after an index sheet, written with rust_xlsxwriter's constant-memory mode so that memory does
//! not grow with the rows. Every XLSX rule of the customer export lives here:
//!
//! - the index sheet "Indice" names every sheet's table, columns and row count;
//! - sheet names follow Excel's rules ([`SheetNames`]);
//! - the header row is bold and frozen, with an autofilter, and columns get sensible widths;
//! - cells are typed: integers and reals are numbers, boolean columns are booleans, ISO dates
//!   and timestamps are Excel dates with a date format; NaN and infinities are text, invalid
//!   dates stay text, integers Excel cannot hold exactly (more than 15 digits) are text;
//! - text is always a string cell, never a formula, whatever it starts with;
//! - characters XML forbids are replaced by visible symbols (U+2400 "control pictures");
//! - a table continues on "name (2)", "name (3)", ... after `sheet_rows` data rows;
//! - text longer than a cell can hold must be cut by the caller ([`cut_with_pointer`]), which
//!   also writes the whole value to a side file.

use std::borrow::Cow;
use std::path::Path;

use rust_xlsxwriter::{Format, Workbook, XlsxError};

use super::names::{SheetNames, INDEX_SHEET};

/// Data rows per sheet: Excel's 1,048,576 rows less the header.
pub const SHEET_ROWS_MAX: u32 = 1_048_575;
/// Excel's limit on the text of one cell, in UTF-16 code units.
pub const CELL_MAX: usize = 32_767;
/// Excel keeps 15 significant digits; larger integers would silently lose their last digits, so
/// they are written as text (the CSV holds them as numbers).
const EXACT_INT_MAX: i64 = 999_999_999_999_999;
/// Excel's column limit.
const COLUMNS_MAX: usize = 16_384;
const WIDTH_MIN: f64 = 6.0;
const WIDTH_MAX: f64 = 60.0;

/// One value as the workbook writes it.
#[derive(Debug, Clone)]
pub enum XValue<'a> {
    Null,
    Integer(i64),
    Real(f64),
    /// A value of a column declared BOOLEAN (or similar) that holds 0 or 1.
    Bool(bool),
    /// Text from the database: may become a date.
    Text(Cow<'a, str>),
    /// Text the export made (a side-file path, a cut value): written as it is.
    Literal(Cow<'a, str>),
}

/// How a date-looking text was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateKind {
    Date,
    DateTime,
    DateTimeFraction,
}

pub fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Whether `s` fits in one cell. UTF-8 never has fewer bytes than UTF-16 has units, so most
/// strings are decided by their length alone.
pub fn fits_cell(s: &str) -> bool {
    s.len() <= CELL_MAX || utf16_len(s) <= CELL_MAX
}

/// The start of `s` followed by a note naming `pointer` (where the whole value is), cut so that
/// the whole cell fits Excel's limit.
pub fn cut_with_pointer(s: &str, pointer: &str) -> String {
    let note = format!(" … [testo completo in {pointer}]");
    let room = CELL_MAX.saturating_sub(utf16_len(&note));
    let mut used = 0;
    let mut end = s.len();
    for (i, c) in s.char_indices() {
        used += c.len_utf16();
        if used > room {
            end = i;
            break;
        }
    }
    format!("{}{note}", &s[..end])
}

/// Replace the characters XML 1.0 cannot hold (C0 controls other than tab, newline and carriage
/// return; U+FFFE and U+FFFF) by visible stand-ins: U+2400 + code ("␀", "␁", ...) and U+FFFD.
/// Left alone, a writer would have to encode them as `_xHHHH_` escapes that Excel turns back
/// into invisible characters.
pub fn clean_text(s: &str) -> Cow<'_, str> {
    let suspicious = s.bytes().any(|b| (b < 0x20 && b != b'\t' && b != b'\n' && b != b'\r') || b == 0xEF);
    if !suspicious || !s.chars().any(is_xml_forbidden) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| match c {
                '\u{FFFE}' | '\u{FFFF}' => '\u{FFFD}',
                c if is_xml_forbidden(c) => char::from_u32(0x2400 + c as u32).expect("control pictures are chars"),
                c => c,
            })
            .collect(),
    )
}

fn is_xml_forbidden(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}')
}

fn two(b: &[u8]) -> Option<u32> {
    match b {
        [a @ b'0'..=b'9', c @ b'0'..=b'9'] => Some(((a - b'0') * 10 + (c - b'0')) as u32),
        _ => None,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Excel's serial date for an ISO 8601 date or timestamp, or `None` when `s` is not one or is
/// not a real date. Accepted: `YYYY-MM-DD`, then optionally `T` or a space, `HH:MM`, `:SS`,
/// `.fraction`, and `Z` or a zero offset (`+00:00`). Another offset keeps the value as text: the
/// workbook has no time zones and converting would change what the customer reads. Dates before
/// 1900-03-01 stay text too, because Excel and LibreOffice count those days differently.
pub fn parse_iso(s: &str) -> Option<(f64, DateKind)> {
    let b = s.as_bytes();
    if b.len() < 10 || b.len() > 40 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    if !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let year = b[..4].iter().fold(0i64, |y, d| y * 10 + (d - b'0') as i64);
    let month = two(&b[5..7])?;
    let day = two(&b[8..10])?;
    jiff::civil::Date::new(year as i16, month as i8, day as i8).ok()?;
    if (year, month) < (1900, 3) {
        return None;
    }
    let days = (days_from_civil(year, month, day) + 25_569) as f64;
    let mut rest = &b[10..];
    if rest.is_empty() {
        return Some((days, DateKind::Date));
    }
    if rest[0] != b'T' && rest[0] != b' ' {
        return None;
    }
    rest = &rest[1..];
    if rest.len() < 5 || rest[2] != b':' {
        return None;
    }
    let hour = two(&rest[..2])?;
    let minute = two(&rest[3..5])?;
    rest = &rest[5..];
    let mut second = 0.0;
    let mut kind = DateKind::DateTime;
    if rest.first() == Some(&b':') {
        second = two(rest.get(1..3)?)? as f64;
        rest = &rest[3..];
        if rest.first() == Some(&b'.') {
            let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 || digits > 9 {
                return None;
            }
            let frac: f64 = std::str::from_utf8(&rest[..1 + digits]).ok()?.parse().ok()?;
            second += frac;
            rest = &rest[1 + digits..];
            kind = DateKind::DateTimeFraction;
        }
    }
    match rest {
        b"" | b"Z" | b"+00:00" | b"-00:00" | b"+0000" => {}
        _ => return None,
    }
    if hour > 23 || minute > 59 || second >= 60.0 {
        return None;
    }
    let secs = hour as f64 * 3600.0 + minute as f64 * 60.0 + second;
    Some((days + secs / 86_400.0, kind))
}

/// One row of the index sheet.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub sheet: String,
    pub table: String,
    pub columns: String,
    pub rows: u32,
    pub part: u32,
}

struct Sheet {
    ws: usize,
    table: String,
    first: String,
    part: u32,
    columns: Vec<String>,
    bools: Vec<bool>,
    rows: u32,
    widths: Vec<f64>,
    /// Bytes of cell text on this sheet, to know whether the workbook needs ZIP64.
    bytes: u64,
    names: Vec<String>,
}

struct Formats {
    header: Format,
    date: Format,
    datetime: Format,
    datetime_fraction: Format,
}

/// A workbook being written. You MUST call [`XlsxBook::end_table`] after each table's rows and
/// [`XlsxBook::save`] at the end; rows go in order, one table at a time.
pub struct XlsxBook {
    wb: Workbook,
    formats: Formats,
    names: SheetNames,
    index: Vec<IndexEntry>,
    sheet_rows: u32,
    current: Option<Sheet>,
    max_sheet_bytes: u64,
}

impl XlsxBook {
    /// A new workbook whose sheet data is spooled to temporary files in `tempdir`, with at most
    /// `sheet_rows` data rows per sheet ([`SHEET_ROWS_MAX`] outside tests).
    pub fn new(tempdir: &Path, sheet_rows: u32) -> Result<XlsxBook, XlsxError> {
        let mut wb = Workbook::new();
        wb.set_tempdir(tempdir)?;
        // The index is small, so it lives in memory and is filled in at the end, when every
        // table's row count is known; being added first makes it the first tab.
        wb.add_worksheet().set_name(INDEX_SHEET)?;
        Ok(XlsxBook {
            wb,
            formats: Formats {
                header: Format::new().set_bold(),
                date: Format::new().set_num_format("yyyy-mm-dd"),
                datetime: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss"),
                datetime_fraction: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss.000"),
            },
            names: SheetNames::new(),
            index: Vec::new(),
            sheet_rows: sheet_rows.clamp(1, SHEET_ROWS_MAX),
            current: None,
            max_sheet_bytes: 0,
        })
    }

    /// Start a table: its first sheet, with the header row. `bools` marks the columns whose 0 and
    /// 1 are written as FALSE and TRUE.
    pub fn begin_table(&mut self, table: &str, columns: &[String], bools: Vec<bool>) -> Result<(), XlsxError> {
        if columns.len() > COLUMNS_MAX {
            return Err(XlsxError::ParameterError(format!(
                "table {table} has {} columns; a worksheet holds at most {COLUMNS_MAX} (the CSV \
                 file has every column: export with --format csv)",
                columns.len()
            )));
        }
        let first = self.names.first(table);
        let sheet = Sheet {
            ws: 0,
            table: table.to_string(),
            first: first.clone(),
            part: 1,
            columns: columns.to_vec(),
            bools,
            rows: 0,
            widths: Vec::new(),
            bytes: 0,
            names: Vec::new(),
        };
        self.current = Some(sheet);
        self.open_sheet(first)
    }

    fn open_sheet(&mut self, name: String) -> Result<(), XlsxError> {
        let sheet = self.current.as_mut().expect("a table is open");
        let ws = self.wb.add_worksheet_with_constant_memory()?;
        ws.set_name(&name)?;
        sheet.widths.clear();
        for (col, title) in sheet.columns.iter().enumerate() {
            let title = clean_text(title);
            ws.write_string_with_format(0, col as u16, title.as_ref(), &self.formats.header)?;
            // Room for the autofilter button.
            sheet.widths.push(utf16_len(&title) as f64 + 4.0);
        }
        sheet.ws = self.wb.worksheets().len() - 1;
        sheet.rows = 0;
        sheet.bytes = 0;
        sheet.names.push(name);
        Ok(())
    }

    fn close_sheet(&mut self) -> Result<(), XlsxError> {
        let sheet = self.current.as_mut().expect("a table is open");
        let ws = self.wb.worksheet_from_index(sheet.ws)?;
        let last_col = sheet.columns.len().saturating_sub(1) as u16;
        ws.set_freeze_panes(1, 0)?;
        ws.autofilter(0, 0, sheet.rows, last_col)?;
        for (col, w) in sheet.widths.iter().enumerate() {
            ws.set_column_width(col as u16, w.clamp(WIDTH_MIN, WIDTH_MAX))?;
        }
        self.max_sheet_bytes = self.max_sheet_bytes.max(sheet.bytes);
        self.index.push(IndexEntry {
            sheet: sheet.names.last().cloned().unwrap_or_default(),
            table: sheet.table.clone(),
            columns: sheet.columns.join(", "),
            rows: sheet.rows,
            part: sheet.part,
        });
        Ok(())
    }

    /// Write one row of the open table; a full sheet continues on the next one.
    pub fn write_row(&mut self, values: &[XValue<'_>]) -> Result<(), XlsxError> {
        let full = {
            let sheet = self.current.as_ref().expect("a table is open");
            sheet.rows >= self.sheet_rows
        };
        if full {
            self.close_sheet()?;
            let sheet = self.current.as_mut().expect("a table is open");
            sheet.part += 1;
            let (first, part) = (sheet.first.clone(), sheet.part);
            let name = self.names.continuation(&first, part);
            self.open_sheet(name)?;
        }
        let sheet = self.current.as_mut().expect("a table is open");
        let ws = self.wb.worksheet_from_index(sheet.ws)?;
        let row = sheet.rows + 1;
        for (col, v) in values.iter().enumerate() {
            let c = col as u16;
            let width = match v {
                XValue::Null => 0.0,
                XValue::Integer(i) => {
                    let bool_col = sheet.bools.get(col).copied().unwrap_or(false);
                    if bool_col && (*i == 0 || *i == 1) {
                        ws.write_boolean(row, c, *i == 1)?;
                        5.0
                    } else if i.unsigned_abs() <= EXACT_INT_MAX as u64 {
                        ws.write_number(row, c, *i as f64)?;
                        (i.unsigned_abs().checked_ilog10().unwrap_or(0) + 2) as f64
                    } else {
                        let text = i.to_string();
                        let w = text.len() as f64;
                        ws.write_string(row, c, text)?;
                        w
                    }
                }
                XValue::Real(f) if f.is_finite() => {
                    ws.write_number(row, c, *f)?;
                    12.0
                }
                XValue::Real(f) => {
                    let text = if f.is_nan() {
                        "NaN"
                    } else if *f > 0.0 {
                        "inf"
                    } else {
                        "-inf"
                    };
                    ws.write_string(row, c, text)?;
                    4.0
                }
                XValue::Bool(b) => {
                    ws.write_boolean(row, c, *b)?;
                    5.0
                }
                XValue::Text(t) => {
                    sheet.bytes += t.len() as u64;
                    match parse_iso(t) {
                        Some((serial, kind)) => {
                            let (format, w) = match kind {
                                DateKind::Date => (&self.formats.date, 11.0),
                                DateKind::DateTime => (&self.formats.datetime, 19.0),
                                DateKind::DateTimeFraction => (&self.formats.datetime_fraction, 23.0),
                            };
                            ws.write_number_with_format(row, c, serial, format)?;
                            w
                        }
                        None => write_text(ws, row, c, t)?,
                    }
                }
                XValue::Literal(t) => {
                    sheet.bytes += t.len() as u64;
                    write_text(ws, row, c, t)?
                }
            };
            if let Some(w) = sheet.widths.get_mut(col) {
                if width + 1.0 > *w {
                    *w = width + 1.0;
                }
            }
        }
        sheet.rows = row;
        Ok(())
    }

    /// Finish the open table; returns the names of its sheets.
    pub fn end_table(&mut self) -> Result<Vec<String>, XlsxError> {
        self.close_sheet()?;
        let sheet = self.current.take().expect("a table is open");
        Ok(sheet.names)
    }

    /// Fill in the index sheet and write the workbook to `path`.
    pub fn save(mut self, path: &Path) -> Result<(), XlsxError> {
        if self.current.is_some() {
            self.end_table()?;
        }
        let parts: std::collections::HashMap<&str, u32> =
            self.index.iter().fold(std::collections::HashMap::new(), |mut m, e| {
                let n = m.entry(e.table.as_str()).or_insert(0);
                *n = (*n).max(e.part);
                m
            });
        let header = &self.formats.header;
        let ws = self.wb.worksheet_from_index(0)?;
        let titles = ["Foglio", "Tabella", "Colonne", "Righe", "Parte"];
        let mut widths: Vec<f64> = titles.iter().map(|t| t.len() as f64 + 4.0).collect();
        for (col, t) in titles.iter().enumerate() {
            ws.write_string_with_format(0, col as u16, *t, header)?;
        }
        for (i, e) in self.index.iter().enumerate() {
            let row = i as u32 + 1;
            let total = parts.get(e.table.as_str()).copied().unwrap_or(1);
            let cells = [clean_text(&e.sheet), clean_text(&e.table), clean_text(&e.columns)];
            for (col, text) in cells.iter().enumerate() {
                let text = if fits_cell(text) {
                    Cow::Borrowed(text.as_ref())
                } else {
                    Cow::Owned(cut_with_pointer(text, "manifest.json"))
                };
                widths[col] = widths[col].max(utf16_len(&text).min(60) as f64 + 1.0);
                ws.write_string(row, col as u16, text.as_ref())?;
            }
            ws.write_number(row, 3, e.rows as f64)?;
            ws.write_string(row, 4, format!("{} di {total}", e.part))?;
        }
        ws.set_freeze_panes(1, 0)?;
        ws.autofilter(0, 0, self.index.len() as u32, (titles.len() - 1) as u16)?;
        for (col, w) in widths.iter().enumerate() {
            ws.set_column_width(col as u16, w.clamp(WIDTH_MIN, WIDTH_MAX))?;
        }
        // A sheet's XML is several times its cell text; past a few GiB its ZIP entry needs ZIP64,
        // which every current spreadsheet program reads but which costs a little otherwise.
        if self.max_sheet_bytes > 512 << 20 {
            self.wb.use_zip_large_file(true);
        }
        self.wb.save(path)
    }

    /// The index rows so far (one per sheet), for tests and the manifest.
    pub fn index(&self) -> &[IndexEntry] {
        &self.index
    }
}

/// A text cell: cleaned of XML-forbidden characters, always a string (never a formula). The
/// caller has already cut text that does not fit; anything still too long is cut here rather
/// than failing the export. Returns the width the text wants.
fn write_text(ws: &mut rust_xlsxwriter::Worksheet, row: u32, col: u16, t: &str) -> Result<f64, XlsxError> {
    let clean = clean_text(t);
    let text: Cow<'_, str> =
        if fits_cell(&clean) { clean } else { Cow::Owned(cut_with_pointer(&clean, "il file CSV")) };
    // Widths only need an estimate: bytes, capped, are close enough and cheap.
    let w = text.len().min(WIDTH_MAX as usize) as f64;
    ws.write_string(row, col, text)?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_and_timestamps() {
        let d = parse_iso;
        assert_eq!(d("1900-03-01"), Some((61.0, DateKind::Date)));
        assert_eq!(d("2024-01-01"), Some((45292.0, DateKind::Date)));
        assert_eq!(d("2024-02-29"), Some((45351.0, DateKind::Date)));
        let (v, k) = d("2024-01-01T12:00:00").unwrap();
        assert_eq!((v, k), (45292.5, DateKind::DateTime));
        assert_eq!(d("2024-01-01 12:00").unwrap().0, 45292.5);
        assert_eq!(d("2026-01-05T10:00:30Z").unwrap().1, DateKind::DateTime);
        assert_eq!(d("2024-01-01T00:00:00+00:00").unwrap().0, 45292.0);
        let (v, k) = d("2024-01-01T00:00:00.500").unwrap();
        assert_eq!(k, DateKind::DateTimeFraction);
        assert!((v - (45292.0 + 0.5 / 86400.0)).abs() < 1e-12);
        for bad in [
            "2024-02-30",
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-01-32",
            "2024-01-01T24:00:00",
            "2024-01-01T10:60",
            "2024-01-01T10:00:60",
            "2024-01-01T10:00:00+02:00",
            "2024-01-01x",
            "1899-12-31",
            "1900-02-28",
            "+024-01-01",
            "2024-1-01",
            "2024-01-01T10",
            "2024-01-01T10:00:00.",
            "certificato 2024-01-01",
            "20240101",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
    }

    #[test]
    fn days_match_jiff() {
        for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (1900, 3, 1), (2400, 2, 29)] {
            let want =
                jiff::civil::date(y, m, d).to_zoned(jiff::tz::TimeZone::UTC).unwrap().timestamp().as_second() / 86_400;
            assert_eq!(days_from_civil(y as i64, m as u32, d as u32), want);
        }
    }

    #[test]
    fn forbidden_characters_become_visible() {
        assert_eq!(clean_text("a\u{1}b\u{1F}c"), "a␁b␟c");
        assert_eq!(clean_text("nul\u{0}"), "nul␀");
        assert_eq!(clean_text("tab\tnl\ncr\r"), "tab\tnl\ncr\r");
        assert_eq!(clean_text("x\u{FFFE}y\u{FFFF}"), "x\u{FFFD}y\u{FFFD}");
        assert!(matches!(clean_text("città è già così"), Cow::Borrowed(_)));
        assert!(matches!(clean_text("\u{F8FF}"), Cow::Borrowed(_)));
    }

    #[test]
    fn long_text_is_cut_to_fit_with_its_pointer() {
        let long = "é".repeat(40_000);
        assert!(!fits_cell(&long));
        let cut = cut_with_pointer(&long, "dati/celle-lunghe/t/1-c.txt");
        assert!(utf16_len(&cut) <= CELL_MAX);
        assert!(cut.ends_with("[testo completo in dati/celle-lunghe/t/1-c.txt]"));
        assert!(fits_cell(&"x".repeat(CELL_MAX)));
        assert!(!fits_cell(&"x".repeat(CELL_MAX + 1)));
        // 16,384 emoji are 32,768 UTF-16 units: one too many.
        assert!(!fits_cell(&"🏛".repeat(16_384)));
        let cut = cut_with_pointer(&"🏛".repeat(16_384), "p");
        assert!(utf16_len(&cut) <= CELL_MAX);
    }
}
