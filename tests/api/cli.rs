//! The binary: configuration errors, migrate, and a graceful stop.

use std::process::{Command, Stdio};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::str::FromStr;

use crate::helpers::{binary, free_port, ready_within_10s, server_url};

#[test]
fn an_unreachable_database_is_a_one_line_error_naming_database_url() {
    let output = binary()
        .arg("migrate")
        .env(
            "DATABASE_URL",
            "postgres://postgres:s3cret@127.0.0.1:1/credit_ledger",
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(
        !stderr.contains("s3cret"),
        "the password is not printed: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_bad_setting_is_a_one_line_error_naming_it() {
    let output = binary()
        .arg("serve")
        .env("LEDGER_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("LEDGER_LISTEN"), "{stderr}");
    let output = binary()
        .arg("migrate")
        .env("LEDGER_WRITERS", "x")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        "error: LEDGER_WRITERS must be a whole number from 1 to 64, got 'x'\n"
    );
}

/// The variables of README.md's settings table.
fn readme_settings() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let section = readme.split("## Configuration").nth(1).unwrap();
    let table = section.split("\n## ").next().unwrap();
    let names: Vec<String> = table
        .lines()
        .filter_map(|line| line.strip_prefix("| `")?.split('`').next())
        .map(str::to_owned)
        .collect();
    assert!(names.len() > 30, "the settings table: {names:?}");
    names
}

#[test]
fn help_of_each_command_that_reads_settings_names_every_setting_of_the_readme() {
    for command in ["serve", "migrate", "audit"] {
        let output = binary().args([command, "--help"]).output().unwrap();
        assert!(output.status.success(), "{command} --help");
        let help = String::from_utf8(output.stdout).unwrap();
        for name in readme_settings() {
            assert!(
                help.contains(&format!("[env: {name}")),
                "{command} --help names {name}:\n{help}"
            );
        }
        assert!(
            help.contains("[default: 127.0.0.1:8080]"),
            "defaults are shown:\n{help}"
        );
    }
}

#[test]
fn help_shows_ordinary_values_from_the_environment_but_never_secrets() {
    let output = binary()
        .args(["serve", "--help"])
        .env("LEDGER_WRITERS", "7")
        .env("DATABASE_URL", "postgres://app:db-pass-1@db/ledger")
        .env("LEDGER_ADMIN_TOKENS", "admin-tok-1")
        .env("LEDGER_SERVICE_TOKENS", "service-tok-1")
        .env("UNKEY_ROOT_KEY", "unkey-root-1")
        .env("LEDGER_SECRETS_KEY", "sealing-key-1")
        .env("STRIPE_SECRET_KEY", "sk_test_1")
        .env("STRIPE_WEBHOOK_SECRET", "whsec_1")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("[env: LEDGER_WRITERS=7]"), "{help}");
    for secret in [
        "db-pass-1",
        "admin-tok-1",
        "service-tok-1",
        "unkey-root-1",
        "sealing-key-1",
        "sk_test_1",
        "whsec_1",
    ] {
        assert!(!help.contains(secret), "{secret} shown:\n{help}");
    }
}

#[test]
fn a_flag_sets_a_setting_as_its_environment_variable_does() {
    let output = binary()
        .args(["migrate", "--writers", "0"])
        .env("LEDGER_WRITERS", "4")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("LEDGER_WRITERS") && stderr.contains("got '0'"),
        "{stderr}"
    );
}

#[test]
fn openapi_needs_no_setting_even_when_one_is_bad() {
    let output = binary()
        .arg("openapi")
        .env("LEDGER_WRITERS", "x")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(output.stdout.starts_with(b"openapi: 3.1.0"));
}

async fn with_fresh_database_name(test: impl AsyncFnOnce(String)) {
    let name = format!("cl_cli_{}", uuid::Uuid::new_v4().simple());
    let server = PgConnectOptions::from_str(&server_url()).unwrap();
    let url = server.clone().database(&name).to_url_lossy().to_string();
    test(url).await;
    let mut conn = PgConnection::connect_with(&server).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn migrate_creates_the_database_and_applies_every_migration() {
    with_fresh_database_name(async |url| {
        let status = binary()
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .status()
            .unwrap();
        assert!(status.success());
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(applied as usize, credit_ledger::db::MIGRATOR.iter().count());
        // A second run is a no-op.
        let again = binary()
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .status()
            .unwrap();
        assert!(again.success());
        conn.close().await.ok();
    })
    .await;
}

#[tokio::test]
async fn serve_answers_and_stops_gracefully_on_sigterm() {
    with_fresh_database_name(async |url| {
        let port = free_port();
        let mut child = binary()
            .arg("serve")
            .env("DATABASE_URL", &url)
            .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
            .env("LEDGER_ADMIN_TOKENS", "adm")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if !ready_within_10s(port).await {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the service did not become ready");
        }
        let kill = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let mut exited = None;
        for _ in 0..100 {
            if let Some(status) = child.try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = exited.unwrap_or_else(|| {
            let _ = child.kill();
            panic!("serve did not stop on SIGTERM")
        });
        assert!(status.success(), "exit status {status}");
    })
    .await;
}

#[test]
fn openapi_into_a_reader_that_stops_early_ends_quietly() {
    use std::io::Read;
    let mut child = binary()
        .arg("openapi")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, as `| head -c 16` would, then hang up.
    let mut start = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut start).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(start.starts_with(b"openapi: 3.1.0"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
}

#[tokio::test]
async fn logs_into_a_file_are_plain_and_json_logs_carry_numbers() {
    with_fresh_database_name(async |url| {
        for format in ["text", "json"] {
            let log = std::env::temp_dir().join(format!("cl-log-{}.log", uuid::Uuid::new_v4()));
            let port = free_port();
            let mut child = binary()
                .arg("serve")
                .env("DATABASE_URL", &url)
                .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
                .env("LEDGER_LOG_FORMAT", format)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            assert!(ready_within_10s(port).await, "the service did not start");
            reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
                .await
                .unwrap();
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap();
            let _ = std::fs::remove_file(&log);
            assert!(
                !text.contains('\u{1b}'),
                "no colour codes in a file:\n{text}"
            );
            assert!(text.contains("migrations applied"), "{text}");
            assert!(!text.contains("Uninited"), "no scheduler noise:\n{text}");
            if format == "json" {
                let response = text
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find(|l| l["fields"]["message"] == "response")
                    .unwrap_or_else(|| panic!("a response line in:\n{text}"));
                assert_eq!(response["fields"]["status"], 200);
                assert!(response["fields"]["latency_ms"].is_f64(), "{response}");
            }
        }
    })
    .await;
}

#[test]
fn completions_print_a_script_for_each_shell_that_knows_the_commands_and_flags() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        // No setting is needed, even a bad one.
        let output = binary()
            .args(["completions", shell])
            .env("LEDGER_WRITERS", "x")
            .output()
            .unwrap();
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = String::from_utf8(output.stdout).unwrap();
        for word in ["serve", "migrate", "audit", "openapi", "completions"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
        assert!(script.contains("database-url"), "{shell} completes flags");
    }
    let unknown = binary().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn the_bash_completion_script_is_valid_bash() {
    let script = binary().args(["completions", "bash"]).output().unwrap();
    let path = std::env::temp_dir().join(format!("cl-completion-{}.bash", uuid::Uuid::new_v4()));
    std::fs::write(&path, &script.stdout).unwrap();
    // `bash -n` parses without running; then sourcing registers the completion function.
    let checked = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "bash -n {0} && source {0} && complete -p credit-ledger",
            path.display()
        ))
        .output();
    let _ = std::fs::remove_file(&path);
    let checked = checked.unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(String::from_utf8_lossy(&checked.stdout).contains("credit-ledger"));
}
