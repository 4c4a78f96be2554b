//! The console and the portal in a real browser: Debian's Chromium, driven through ChromeDriver
//! (WebDriver) by fantoccini. `.ci/run` installs both; these tests are `#[ignore]`d so that the
//! README's plain `cargo test` needs only PostgreSQL, and CI runs them with `--ignored`.
//! Screenshots land in `target/tmp/screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::{free_port, spawn_app, TestApp, ADMIN, SERVICE};

const WAIT: Duration = Duration::from_secs(15);

/// A headless Chromium session; ChromeDriver is stopped when it is dropped.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(width: u32, height: u32) -> Browser {
        let chromedriver =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {chromedriver} ({e}): install Debian's chromium and chromium-driver, as .ci/run does")
            });
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                // No background traffic: the machine's network is closed, and tests talk only to
                // 127.0.0.1.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--disable-quic", "--no-first-run",
                         format!("--window-size={width},{height}"),
                         format!("--user-data-dir={}", profile.path().display())],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        driver,
                        _profile: profile,
                    }
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ChromeDriver did not start a session: {last:?}");
    }

    async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
    }

    /// The element's text; empty when the page replaced the element while it was read (the
    /// callers poll, so the next read sees the new one).
    async fn text(&self, css: &str) -> String {
        self.wait_for(css).await.text().await.unwrap_or_default()
    }

    async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        self.wait_for(css).await.attr(name).await.ok().flatten()
    }

    /// Waits until `read` gives `expected`; fails with the last value seen.
    async fn until<F, Fut>(&self, what: &str, expected: &str, read: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = String>,
    {
        let mut seen = String::new();
        for _ in 0..150 {
            seen = read().await;
            if seen == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: expected {expected:?}, still {seen:?}");
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await.unwrap()).unwrap();
        path
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Digits only: numbers are shown with the browser's locale separators.
fn digits(text: String) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// Searches and images over the last week: 88 credits used of a 1,000 allowance.
async fn customer(app: &TestApp) {
    app.clock.advance(-chrono::Duration::days(6));
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "month",
               "pools": {"credits": {"allowance": 1000}},
               "operations": {"search": {"cost": 2}, "image.generate": {"cost": 10}},
               "packs": {"boost": {"credits": 500, "expires_in_days": 30,
                                   "price": {"amount": 900, "currency": "usd"}}}}),
    )
    .await;
    app.put("/v1/accounts/key_1")
        .json(json!({"plan": "pro", "external_id": "org_1"}))
        .send()
        .await
        .assert_status(201);
    for day in 0..6 {
        app.debit("key_1", json!({"operation": "search", "quantity": day + 1}))
            .await
            .assert_status(201);
        if day % 2 == 0 {
            app.debit("key_1", json!({"operation": "image.generate"}))
                .await
                .assert_status(201);
        }
        app.clock.advance(chrono::Duration::days(1));
    }
    app.debit("key_1", json!({"operation": "search", "quantity": 3}))
        .await
        .assert_status(201);
    app.debit("key_1", json!({"operation": "image.generate"}))
        .await
        .assert_status(201);
}

#[tokio::test]
#[ignore = "needs Chromium and ChromeDriver; .ci/run installs them and runs it"]
async fn the_console_signs_in_finds_an_account_tops_up_a_pack_and_shows_the_change() {
    let app = spawn_app().await;
    customer(&app).await;
    let browser = Browser::start(1280, 1400).await;
    browser
        .client
        .goto(&format!("{}/console", app.address))
        .await
        .unwrap();

    // A service token is turned away in the API's words; the admin token signs in.
    let token = browser.wait_for("#token").await;
    token.send_keys(SERVICE).await.unwrap();
    browser
        .wait_for("#sign-in-form button")
        .await
        .click()
        .await
        .unwrap();
    browser
        .until(
            "the sign-in error",
            "This is a service token. The console needs an admin token (LEDGER_ADMIN_TOKENS).",
            || async { browser.text("#sign-in-error").await },
        )
        .await;
    token.clear().await.unwrap();
    token.send_keys(ADMIN).await.unwrap();
    browser
        .wait_for("#sign-in-form button")
        .await
        .click()
        .await
        .unwrap();

    // Find the account by its external id.
    let query = browser.wait_for("#find-account input[name=q]").await;
    query.send_keys("org_1").await.unwrap();
    browser
        .wait_for("#find-account button")
        .await
        .click()
        .await
        .unwrap();
    browser
        .until("the account page", "key_1", || async {
            browser.text("#account-title").await
        })
        .await;
    let available = || async { digits(browser.text("[data-pool=credits] .available").await) };
    browser.until("credits available", "912", available).await;
    let chart_total = || async {
        browser
            .attribute("#usage .chart", "data-total")
            .await
            .unwrap_or_default()
    };
    browser
        .until("credits used in the chart", "88", chart_total)
        .await;
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css("#usage svg rect"))
            .await
            .unwrap()
            .len(),
        6 + 3 + 2,
        "a bar for each day of the week, a segment per operation used that day"
    );

    // Top up the catalogue's pack: the balance changes, and the grant was sent with an
    // Idempotency-Key.
    let keys_before = app.count("idempotency_keys").await;
    browser.wait_for("#top-up-pack select[name=pack]").await;
    browser
        .wait_for("#top-up-pack button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    browser.until("credits available", "1412", available).await;
    assert!(browser.text("#grants").await.contains("pack"));
    assert_eq!(app.count("idempotency_keys").await, keys_before + 1);

    // A form the API refuses shows the API's own sentence, and changes nothing.
    browser
        .wait_for("[data-tab=adjust]")
        .await
        .click()
        .await
        .unwrap();
    // Taking away more than there is: the API refuses it with a sentence of its own.
    browser
        .wait_for("#adjust select[name=op] option[value=decrement]")
        .await
        .click()
        .await
        .unwrap();
    browser
        .wait_for("#adjust input[name=amount]")
        .await
        .send_keys("5000")
        .await
        .unwrap();
    browser
        .wait_for("#adjust input[name=reason]")
        .await
        .send_keys("ticket 42")
        .await
        .unwrap();
    browser
        .wait_for("#adjust button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    let refused = app
        .post("/v1/accounts/key_1/adjustments")
        .json(json!({"pool": "credits", "op": "decrement", "amount": 5000, "reason": "ticket 42"}))
        .send()
        .await;
    refused.assert_status(422);
    let sentence = refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    browser
        .until("the adjust error", &sentence, || async {
            browser.text("#adjust .error").await
        })
        .await;
    assert_eq!(
        digits(browser.text("[data-pool=credits] .available").await),
        "1412"
    );

    // Use elsewhere shows in the chart once the page is read again.
    app.debit("key_1", json!({"operation": "image.generate"}))
        .await
        .assert_status(201);
    browser.client.refresh().await.unwrap();
    browser
        .until("credits used in the chart", "98", chart_total)
        .await;
    browser.until("credits available", "1402", available).await;
    browser.wait_for("#journal tbody tr").await;
    browser.screenshot("console-account").await;

    // The same page on a phone's width.
    browser.client.set_window_size(390, 1400).await.unwrap();
    browser.until("credits available", "1402", available).await;
    browser.screenshot("console-account-phone").await;
    browser.close().await;
}

#[tokio::test]
#[ignore = "needs Chromium and ChromeDriver; .ci/run installs them and runs it"]
async fn a_portal_link_shows_the_customers_numbers_and_refuses_once_expired() {
    let app = spawn_app().await;
    customer(&app).await;
    app.post("/v1/accounts/key_1/grants")
        .json(json!({"pack": "boost"}))
        .send()
        .await
        .assert_status(201);
    let link = app
        .post("/v1/accounts/key_1/portal-sessions")
        .token(SERVICE)
        .json(json!({"return_url": "https://app.example.com/billing", "ttl_seconds": 600}))
        .send()
        .await;
    link.assert_status(201);
    let url = link.body["url"].as_str().unwrap().to_owned();

    let browser = Browser::start(1280, 1600).await;
    browser.client.goto(&url).await.unwrap();
    let available = || async { digits(browser.text("[data-pool=credits] .available").await) };
    browser.until("credits available", "1412", available).await;
    browser
        .until("credits used in the chart", "88", || async {
            browser
                .attribute("#usage .chart", "data-total")
                .await
                .unwrap_or_default()
        })
        .await;
    assert!(browser.text("#expiries").await.contains("pack"));
    assert!(browser.text("[data-pack=boost]").await.contains("500"));
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css("#entries tbody tr"))
            .await
            .unwrap()
            .len(),
        13
    );
    assert_eq!(
        browser.attribute("#back", "href").await.as_deref(),
        Some("https://app.example.com/billing")
    );
    browser.screenshot("portal").await;
    // The token has left the address bar (and the history); a reload still shows the page.
    let shown = browser.client.current_url().await.unwrap();
    assert_eq!(shown.fragment(), None, "{shown}");
    browser.client.refresh().await.unwrap();
    browser.until("credits available", "1412", available).await;

    // Past its expiry the same link is refused, in the API's words.
    app.clock.advance(chrono::Duration::seconds(601));
    browser.client.goto("about:blank").await.unwrap();
    browser.client.goto(&url).await.unwrap();
    let refusal = browser.text("#refused").await;
    assert!(
        refusal.contains("expired") && refusal.contains("ask for a new link"),
        "{refusal}"
    );
    browser.screenshot("portal-expired").await;
    browser.close().await;
}
