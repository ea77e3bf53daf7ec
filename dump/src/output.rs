//! Where dump rows go: JSON lines (one object per line, keys in a fixed order) or an
//! aligned table for people.

use std::io::{self, Write};

use serde_json::Value;

/// One printed row: column names and values, in display order.
pub type Row = Vec<(&'static str, Value)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Table,
}

/// Collects rows and writes them in a format.
pub struct Output<W: Write> {
    format: Format,
    out: W,
    /// Table rows wait until the column widths are known.
    table: Vec<Row>,
}

impl<W: Write> Output<W> {
    pub fn new(out: W, format: Format) -> Output<W> {
        Output { format, out, table: Vec::new() }
    }

    pub fn row(&mut self, row: Row) -> io::Result<()> {
        match self.format {
            Format::JsonLines => {
                let mut line = String::from("{");
                for (i, (key, value)) in row.iter().enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    line.push_str(&Value::from(*key).to_string());
                    line.push(':');
                    line.push_str(&value.to_string());
                }
                line.push_str("}\n");
                self.out.write_all(line.as_bytes())
            }
            Format::Table => {
                self.table.push(row);
                Ok(())
            }
        }
    }

    /// Writes what is buffered and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.format == Format::Table && !self.table.is_empty() {
            let mut columns: Vec<&'static str> = Vec::new();
            for row in &self.table {
                for (key, _) in row {
                    if !columns.contains(key) {
                        columns.push(key);
                    }
                }
            }
            let cells: Vec<Vec<String>> = self
                .table
                .iter()
                .map(|row| {
                    columns
                        .iter()
                        .map(|c| row.iter().find(|(k, _)| k == c).map_or("-".to_string(), |(_, v)| cell(v)))
                        .collect()
                })
                .collect();
            let widths: Vec<usize> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| cells.iter().map(|r| r[i].chars().count()).max().unwrap_or(0).max(c.len()))
                .collect();
            let line = |values: Vec<String>| {
                let padded: Vec<String> = values.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
                format!("{}\n", padded.join("  ").trim_end())
            };
            self.out.write_all(line(columns.iter().map(|c| c.to_uppercase()).collect()).as_bytes())?;
            for row in cells {
                self.out.write_all(line(row).as_bytes())?;
            }
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A value as a table cell: strings without quotes, long values shortened.
fn cell(value: &Value) -> String {
    const MAX: usize = 60;
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    if text.chars().count() > MAX {
        format!("{}...", text.chars().take(MAX - 3).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_keep_column_order_and_tables_align() {
        let rows = || vec![vec![("b", Value::from(1)), ("a", Value::from("x"))], vec![("b", Value::from(22))]];
        let mut json = Output::new(Vec::new(), Format::JsonLines);
        for r in rows() {
            json.row(r).expect("row");
        }
        let text = String::from_utf8(json.finish().expect("finish")).expect("utf-8");
        assert_eq!(text, "{\"b\":1,\"a\":\"x\"}\n{\"b\":22}\n");
        let mut table = Output::new(Vec::new(), Format::Table);
        for r in rows() {
            table.row(r).expect("row");
        }
        let text = String::from_utf8(table.finish().expect("finish")).expect("utf-8");
        assert_eq!(text, "B   A\n1   x\n22  -\n");
    }
}
