//! History: a debit read back with its refunds, the debit list with filters, and CSV exports of
//! the journal and the debits, streamed.

use serde_json::json;

use crate::helpers::{spawn_app, TestApp, SERVICE};

async fn history(app: &TestApp) -> Vec<String> {
    app.create_plan("pro", Some(1000)).await;
    app.create_account("key_1", "pro").await;
    let mut ids = Vec::new();
    for (i, (operation, quantity)) in [("search", 1), ("image.generate", 2), ("search", 3)]
        .into_iter()
        .enumerate()
    {
        app.clock.advance(chrono::Duration::minutes(10));
        let debit = app
            .debit(
                "key_1",
                json!({"operation": operation, "quantity": quantity,
                       "metadata": {"job": format!("j{i}")}}),
            )
            .await;
        debit.assert_status(201);
        ids.push(debit.body["id"].as_str().unwrap().to_owned());
    }
    ids
}

#[tokio::test]
async fn a_debit_is_read_back_with_its_refunds() {
    let app = spawn_app().await;
    let ids = history(&app).await;
    let image = &ids[1];
    for amount in [5, 3] {
        app.post(&format!("/v1/debits/{image}/refunds"))
            .json(json!({"amount": amount, "reason": "bad render"}))
            .send()
            .await
            .assert_status(201);
    }
    let read = app
        .get(&format!("/v1/debits/{image}"))
        .token(SERVICE)
        .send()
        .await;
    read.assert_status(200);
    let debit = &read.body;
    assert_eq!(debit["operation"], "image.generate");
    assert_eq!(
        (debit["quantity"].as_i64(), debit["cost"].as_i64()),
        (Some(2), Some(20))
    );
    assert_eq!(debit["refunded"], 8);
    assert_eq!(debit["remaining"], 1000 - 1 - 20);
    assert_eq!(debit["metadata"], json!({"job": "j1"}));
    assert_eq!(debit["drawn"][0]["kind"], "allowance");
    let refunds: Vec<i64> = debit["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(refunds, vec![5, 3]);
    assert_eq!(debit["refunds"][0]["reason"], "bad render");

    app.get(&format!("/v1/debits/{}", uuid::Uuid::now_v7()))
        .token(SERVICE)
        .send()
        .await
        .assert_error(404, "debit_not_found");
    app.get("/v1/debits/not-a-uuid")
        .token(SERVICE)
        .send()
        .await
        .assert_error(422, "invalid_request");
}

#[tokio::test]
async fn debits_are_listed_newest_first_with_filters_and_pages() {
    let app = spawn_app().await;
    let start = app.clock.now();
    let ids = history(&app).await;
    let list = |query: String| {
        let app = &app;
        async move {
            let page = app
                .get(&format!("/v1/accounts/key_1/debits?{query}"))
                .token(SERVICE)
                .send()
                .await;
            page.assert_status(200);
            page
        }
    };
    let ids_of = |body: &serde_json::Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = list(String::new()).await;
    assert_eq!(
        ids_of(&all.body),
        vec![ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );

    let searches = list("operation=search".into()).await;
    assert_eq!(ids_of(&searches.body), vec![ids[2].clone(), ids[0].clone()]);

    let at = |m: i64| {
        (start + chrono::Duration::minutes(m)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let window = list(format!("from={}&to={}", at(15), at(25))).await;
    assert_eq!(ids_of(&window.body), vec![ids[1].clone()]);

    let first = list("limit=2".into()).await;
    assert_eq!(ids_of(&first.body), vec![ids[2].clone(), ids[1].clone()]);
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = list(format!("limit=2&cursor={cursor}")).await;
    assert_eq!(ids_of(&second.body), vec![ids[0].clone()]);
    assert!(second.body["next_cursor"].is_null());

    for (query, field) in [
        ("cursor=12", "cursor"),
        ("operation=no%20spaces", "operation"),
        ("limit=0", "limit"),
    ] {
        let refused = app
            .get(&format!("/v1/accounts/key_1/debits?{query}"))
            .token(SERVICE)
            .send()
            .await;
        refused.assert_error(422, "invalid_request");
        assert_eq!(refused.body["error"]["details"]["field"], field, "{query}");
    }
    app.get("/v1/accounts/nobody/debits")
        .token(SERVICE)
        .send()
        .await
        .assert_error(404, "account_not_found");
}

/// The CSV body of a request with `Accept: text/csv`, parsed into records.
async fn csv(app: &TestApp, path: &str) -> (reqwest::header::HeaderMap, Vec<Vec<String>>) {
    let response = app
        .get(path)
        .token(SERVICE)
        .header("Accept", "text/csv")
        .send()
        .await;
    response.assert_status(200);
    let text = response.body.as_str().unwrap().to_owned();
    let records = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (response.headers, records)
}

#[tokio::test]
async fn the_journal_and_the_debits_export_as_csv_with_their_filters() {
    let app = spawn_app().await;
    let ids = history(&app).await;
    // A value a spreadsheet would run as a formula is written as text.
    app.debit("key_1", json!({"cost": 4, "operation": "-2-3"}))
        .await
        .assert_status(201);

    let (headers, rows) = csv(&app, "/v1/accounts/key_1/entries").await;
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(
        headers["content-disposition"].to_str().unwrap(),
        "attachment; filename=\"entries-key_1.csv\""
    );
    assert_eq!(rows[0][..5], ["id", "key_id", "pool", "kind", "amount"]);
    let kinds: Vec<(&str, &str)> = rows[1..]
        .iter()
        .map(|r| (r[3].as_str(), r[4].as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("debit", "-4"),
            ("debit", "-3"),
            ("debit", "-20"),
            ("debit", "-1"),
            ("grant", "1000")
        ]
    );

    let (_, debits_only) = csv(&app, "/v1/accounts/key_1/entries?kind=debit&limit=1").await;
    assert_eq!(
        debits_only.len(),
        1 + 4,
        "limit does not apply to an export"
    );

    let (headers, debits) = csv(&app, "/v1/accounts/key_1/debits?operation=search").await;
    assert_eq!(
        headers["content-disposition"].to_str().unwrap(),
        "attachment; filename=\"debits-key_1.csv\""
    );
    assert_eq!(
        debits[0][..6],
        ["id", "key_id", "pool", "operation", "quantity", "cost"]
    );
    let exported: Vec<&str> = debits[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(exported, vec![ids[2].as_str(), ids[0].as_str()]);
    assert_eq!(debits[1][15], r#"{"job":"j2"}"#);

    let (_, all) = csv(&app, "/v1/accounts/key_1/debits").await;
    let formula = all.iter().find(|r| r[3].contains("2-3")).unwrap();
    assert_eq!(formula[3], "'-2-3");
    assert_eq!(formula[5], "4", "numbers stay numbers");

    // An unknown account is a 404, not an empty file.
    app.get("/v1/accounts/nobody/entries")
        .token(SERVICE)
        .header("Accept", "text/csv")
        .send()
        .await
        .assert_error(404, "account_not_found");
}

/// The peak resident memory of a process so far (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// An export is streamed a page at a time: the binary's peak memory hardly moves while it sends
/// a CSV many times larger than that.
#[tokio::test]
async fn an_export_of_many_entries_streams_in_constant_memory() {
    use sqlx::Connection;
    use std::process::Stdio;

    use crate::helpers::{binary, free_port, ready_within_10s, ScratchDatabase};

    // EXPORT_ROWS=1000000 for the million-entry measurement in BENCHMARKS.md.
    let rows: i64 = std::env::var("EXPORT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let db = ScratchDatabase::new("export");
    let port = free_port();
    let mut child = binary()
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
        .env("LEDGER_ADMIN_TOKENS", "export-admin")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        ready_within_10s(port).await,
        "the service did not become ready"
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let put = |path: &str, body: serde_json::Value| {
        client
            .put(format!("{base}{path}"))
            .bearer_auth("export-admin")
            .json(&body)
            .send()
    };
    put(
        "/v1/plans/pro",
        json!({"name": "Pro", "interval": "month", "pools": {"credits": {"allowance": 10}}}),
    )
    .await
    .unwrap()
    .error_for_status()
    .unwrap();
    put("/v1/accounts/key_1", json!({"plan": "pro"}))
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    // A long journal, written straight into the table.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO entries (key_id, pool, kind, amount, balance_after, operation, metadata, created_at)
         SELECT 'key_1', 'credits', 'debit', -1, 0, 'search', jsonb_build_object('job', n), now()
           FROM generate_series(1, $1) AS n",
    )
    .bind(rows)
    .execute(&mut conn)
    .await
    .unwrap();
    // As autovacuum would (it is off on the test server): statistics for the planner.
    sqlx::query("ANALYZE entries")
        .execute(&mut conn)
        .await
        .unwrap();

    let before = peak_rss_kib(child.id());
    let mut response = client
        .get(format!("{base}/v1/accounts/key_1/entries"))
        .bearer_auth("export-admin")
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Some(chunk) = response.chunk().await.unwrap() {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let after = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    db.drop_it().await;

    assert_eq!(
        lines as i64,
        1 + rows + 1,
        "the header, the rows and the allowance grant"
    );
    let grown_kib = after.saturating_sub(before);
    eprintln!(
        "exported {lines} lines, {} MiB; peak memory {} → {} MiB (+{} KiB)",
        bytes >> 20,
        before >> 10,
        after >> 10,
        grown_kib
    );
    assert!(bytes > 20 << 20, "a sizeable export: {bytes} bytes");
    assert!(
        grown_kib * 1024 < bytes / 4,
        "peak memory grew by {grown_kib} KiB while sending {bytes} bytes"
    );
}
