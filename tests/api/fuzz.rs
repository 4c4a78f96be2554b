//! Schemathesis against the real binary: every route of `openapi.yaml` with generated valid and
//! invalid requests, all checks and stateful sequences, once with an admin token, once with a
//! service token and once with a customer's key on `/v1/me/*`, with doubles of Unkey and Stripe. Webhook delivery is switched off
//! (`LEDGER_WEBHOOK_DELIVERY=false`), so generated endpoint URLs never make the service send
//! anything. Afterwards `credit-ledger audit` must find the ledger consistent.
//!
//! Needs schemathesis (`pip install schemathesis==4.32.5`), so it is ignored by a plain
//! `cargo test`; `.ci/run` installs it and runs this test with `--ignored`. Settings:
//! `SCHEMATHESIS_SEED` (default fixed, so CI is repeatable) and `SCHEMATHESIS_MAX_EXAMPLES`
//! (default in tests/schemathesis.toml).

use std::path::Path;
use std::process::Stdio;

use serde_json::json;

use crate::helpers::{binary, free_port, ready_within_10s, ScratchDatabase};
use crate::stripe_double::StripeDouble;
use crate::unkey_double::{UnkeyDouble, ROOT_KEY};

const ADMIN: &str = "fuzz-admin";
const SERVICE: &str = "fuzz-service";
const CUSTOMER_KEY: &str = "sk_fuzz_customer";

/// Seeds what generated requests can find: the spec's example plan, account and key ids.
async fn seed(base: &str) {
    let client = reqwest::Client::new();
    let plan = json!({"name": "Pro", "interval": "month",
                      "pools": {"credits": {"allowance": 10_000, "rollover_cap": 5_000}},
                      "operations": {"image.generate": {"cost": 10}, "search": {"cost": 1}},
                      "packs": {"starter": {"credits": 5000, "expires_in_days": 365,
                                            "stripe_price": "price_1Starter"}}});
    let calls = [
        ("/v1/plans/pro", plan),
        (
            "/v1/accounts/key_123",
            json!({"plan": "pro", "external_id": "org_1"}),
        ),
        ("/v1/accounts/0", json!({"plan": "pro"})),
    ];
    for (path, body) in calls {
        let response = client
            .put(format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "seeding {path}: {response:?}"
        );
    }
}

async fn schemathesis(base: &str, token: &str, extra: &[&str]) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261202".to_owned());
    let report = std::env::temp_dir().join(format!("schemathesis-{}", uuid::Uuid::new_v4()));
    let mut command = tokio::process::Command::new("st");
    command
        .arg("--config-file")
        .arg(root.join("tests/schemathesis.toml"))
        .arg("run")
        .arg(root.join("openapi.yaml"))
        .args(["--url", base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all"])
        .args(["--seed", &seed])
        // One worker: CPython 3.11's AST validator is not thread-safe, and hypothesis parses
        // source while describing strategies ("AST constructor recursion depth mismatch").
        .args(["--workers", "1", "--no-color"])
        .arg("--report-dir")
        .arg(&report)
        .args(extra)
        .stdin(Stdio::null());
    if let Ok(examples) = std::env::var("SCHEMATHESIS_MAX_EXAMPLES") {
        command.args(["--max-examples", &examples]);
    }
    let output = command
        .output()
        .await
        .expect("schemathesis (`st`) is not installed: pip install schemathesis==4.32.5");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(report);
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs schemathesis; .ci/run installs it and runs this with --ignored"]
async fn schemathesis_finds_no_failure_with_any_token() {
    let db = ScratchDatabase::new("cl_fuzz");
    let unkey = UnkeyDouble::start().await;
    let stripe = StripeDouble::start().await;
    stripe.know_every_price();
    unkey.valid(CUSTOMER_KEY, "key_123", json!({"plan": "pro"}));
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = binary()
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
        .env("LEDGER_ADMIN_TOKENS", ADMIN)
        .env("LEDGER_SERVICE_TOKENS", SERVICE)
        .env("LEDGER_WEBHOOK_DELIVERY", "false")
        .env("LEDGER_SECRETS_KEY", crate::helpers::SECRETS_KEY)
        .env("UNKEY_ROOT_KEY", ROOT_KEY)
        .env("UNKEY_BASE_URL", &unkey.base_url)
        .env("STRIPE_SECRET_KEY", crate::stripe_double::SECRET_KEY)
        .env("STRIPE_API_BASE", &stripe.base_url)
        .env(
            "STRIPE_WEBHOOK_SECRET",
            crate::stripe_double::WEBHOOK_SECRET,
        )
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    assert!(ready_within_10s(port).await, "the service did not start");
    seed(&base).await;

    let every_phase = ["--phases", "examples,coverage,fuzzing,stateful"];
    let runs: [(&str, &str, &[&str]); 3] = [
        ("admin token", ADMIN, &every_phase),
        ("service token", SERVICE, &every_phase),
        // No link leads between the /v1/me routes, so there is no stateful phase to run.
        (
            "customer key on /v1/me",
            CUSTOMER_KEY,
            &[
                "--include-path-regex",
                "^/v1/me/",
                "--phases",
                "examples,coverage,fuzzing",
            ],
        ),
    ];
    let mut failed = Vec::new();
    for (label, token, extra) in runs {
        let (passed, output) = schemathesis(&base, token, extra).await;
        let summary: String = output.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
        eprintln!("schemathesis with the {label}: {summary}");
        if !passed {
            failed.push(format!("=== with the {label} ===\n{output}"));
        }
    }

    let _ = child.kill();
    let _ = child.wait();
    let audit = binary()
        .arg("audit")
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let audit_report = String::from_utf8_lossy(&audit.stdout).into_owned();
    db.drop_it().await;
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(
        audit.status.success(),
        "audit after fuzzing: {audit_report}"
    );
}
