//! CSV exports: the journal and the debits answer `Accept: text/csv` with everything that
//! matches their filters, streamed page by page, so that an export of millions of rows holds one
//! page in memory at a time.

use std::future::Future;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, StreamExt};

use crate::ledger::model::{DebitRecord, Entry};
use crate::service::ServiceError;

/// Rows read from the database per page of an export.
pub const EXPORT_PAGE: i64 = 1000;

/// Whether the caller asked for CSV (`Accept: text/csv`, not with `q=0`).
pub fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            let mut parts = media.split(';');
            let csv = parts
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv"));
            // `text/csv;q=0` says "not CSV".
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            csv && !refused
        })
}

/// A row of an export.
pub trait CsvRow {
    const HEADER: &'static [&'static str];
    fn fields(&self) -> Vec<String>;
}

/// A text cell a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, tab, return) gets a
/// leading `'`, so an exported value never runs as one. Numbers are written as they are.
fn text(value: Option<&str>) -> String {
    match value {
        Some(v) if v.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{v}"),
        Some(v) => v.to_owned(),
        None => String::new(),
    }
}

fn number(value: Option<i64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

fn id(value: Option<uuid::Uuid>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

fn json(value: &impl serde::Serialize) -> String {
    text(Some(&serde_json::to_string(value).unwrap_or_default()))
}

impl CsvRow for Entry {
    const HEADER: &'static [&'static str] = &[
        "id",
        "key_id",
        "pool",
        "kind",
        "amount",
        "balance_after",
        "grant_id",
        "operation",
        "debit_id",
        "reservation_id",
        "adjustment_id",
        "source_key_id",
        "created_at",
        "metadata",
    ];

    fn fields(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            text(Some(&self.key_id)),
            text(Some(&self.pool)),
            self.kind.to_string(),
            self.amount.to_string(),
            number(self.balance_after),
            id(self.grant_id),
            text(self.operation.as_deref()),
            id(self.debit_id),
            id(self.reservation_id),
            id(self.adjustment_id),
            text(self.source_key_id.as_deref()),
            self.created_at.to_rfc3339(),
            json(&self.metadata),
        ]
    }
}

impl CsvRow for DebitRecord {
    const HEADER: &'static [&'static str] = &[
        "id",
        "key_id",
        "pool",
        "operation",
        "quantity",
        "cost",
        "overage",
        "refunded",
        "remaining",
        "reservation_id",
        "source_key_id",
        "plan_id",
        "plan_version",
        "created_at",
        "drawn",
        "metadata",
    ];

    fn fields(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            text(Some(&self.key_id)),
            text(Some(&self.pool)),
            text(self.operation.as_deref()),
            self.quantity.to_string(),
            self.cost.to_string(),
            self.overage.to_string(),
            self.refunded.to_string(),
            number(self.remaining),
            id(self.reservation_id),
            text(self.source_key_id.as_deref()),
            text(Some(&self.plan_id)),
            self.plan_version.to_string(),
            self.created_at.to_rfc3339(),
            json(&self.drawn),
            json(&self.metadata),
        ]
    }
}

fn encode<'a>(
    rows: impl IntoIterator<Item = Vec<String>>,
    header: Option<&'a [&'a str]>,
) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    if let Some(header) = header {
        // Writing to a Vec cannot fail.
        let _ = writer.write_record(header);
    }
    for row in rows {
        let _ = writer.write_record(&row);
    }
    writer.into_inner().unwrap_or_default()
}

/// A streamed CSV response. `page(cursor)` reads the page after `cursor` (the first page for
/// `None`) and says where the next one starts (`None` after the last).
pub fn csv_response<R, F, Fut>(filename: &str, page: F) -> Response
where
    R: CsvRow + Send + 'static,
    F: Fn(Option<String>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(Vec<R>, Option<String>), ServiceError>> + Send + 'static,
{
    enum Next {
        Page(Option<String>),
        Done,
    }
    let header = encode(std::iter::empty(), Some(R::HEADER));
    let rows = stream::unfold(Next::Page(None), move |next| {
        let read = match next {
            Next::Done => None,
            Next::Page(cursor) => Some(page(cursor)),
        };
        async move {
            match read?.await {
                Ok((rows, cursor)) => {
                    let chunk = encode(rows.iter().map(CsvRow::fields), None);
                    let next = cursor.map_or(Next::Done, |c| Next::Page(Some(c)));
                    Some((Ok::<_, std::io::Error>(chunk), next))
                }
                Err(err) => {
                    // The status has gone out already: end the body with an error, so that the
                    // client sees a broken transfer rather than a short file.
                    tracing::error!(error = %err, "a CSV export failed part way");
                    Some((Err(std::io::Error::other(err.to_string())), Next::Done))
                }
            }
        }
    });
    let body = stream::once(async move { Ok(header) }).chain(rows);
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn csv_is_chosen_only_when_asked_for() {
        assert!(wants_csv(&accept("text/csv")));
        assert!(wants_csv(&accept(
            "application/json;q=0.5, Text/CSV; charset=utf-8"
        )));
        assert!(!wants_csv(&accept("application/json")));
        assert!(!wants_csv(&accept("text/csv;q=0, application/json")));
        assert!(!wants_csv(&HeaderMap::new()));
    }

    #[test]
    fn a_text_cell_never_runs_as_a_formula() {
        assert_eq!(text(Some("=1+1")), "'=1+1");
        assert_eq!(text(Some("@SUM(A1)")), "'@SUM(A1)");
        assert_eq!(text(Some("search")), "search");
        assert_eq!(text(None), "");
    }
}
