//! openapi.yaml stays true: every documented operation is served, every served route is
//! documented, and every response any test receives is validated against it (see
//! `helpers::Spec::check`). Admin routes refuse every other caller.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{spawn_app, spec};

#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = spawn_app().await;
    let paths = spec().document()["paths"].as_object().unwrap().clone();
    let mut checked = 0;
    for (template, item) in &paths {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_none() {
                continue;
            }
            // A parameter the spec lists the values of gets its first value; others a probe.
            let concrete: String = template
                .split('/')
                .map(
                    |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(name) => {
                            first_enum_value(item, method, name).unwrap_or("probe".into())
                        }
                        None => s.to_owned(),
                    },
                )
                .collect::<Vec<_>>()
                .join("/");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = app.call(m, &concrete).no_token().send().await;
            assert!(
                !(response.status == 404 && response.error_code() == "not_found")
                    && response.status != 405,
                "{method} {template} is documented but not served: {} {}",
                response.status,
                response.body
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "checked {checked} operations");
}

/// The first value of the path parameter `name`'s enum, if the operation's spec lists values.
fn first_enum_value(item: &Value, method: &str, name: &str) -> Option<String> {
    let parameters = item[method]["parameters"]
        .as_array()
        .into_iter()
        .chain(item["parameters"].as_array())
        .flatten();
    parameters
        .filter(|p| p["name"] == name)
        .find_map(|p| p["schema"]["enum"][0].as_str().map(str::to_owned))
}

fn walk_refs(value: &Value, document: &Value, found: &mut usize) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                assert!(
                    document
                        .pointer(reference.trim_start_matches('#'))
                        .is_some(),
                    "dangling $ref {reference}"
                );
                *found += 1;
            }
            for v in map.values() {
                walk_refs(v, document, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| walk_refs(v, document, found)),
        _ => {}
    }
}

#[test]
fn the_spec_is_openapi_3_1_with_resolving_refs_and_documented_errors() {
    let document = spec().document();
    assert_eq!(document["openapi"], "3.1.0");
    let mut refs = 0;
    walk_refs(document, document, &mut refs);
    assert!(refs > 0);
    for (template, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let responses = operation["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {template} has no responses"));
            // An operation with `security: []` takes no token (the Stripe webhook), so no 401.
            let tokenless = operation["security"]
                .as_array()
                .is_some_and(|schemes| schemes.is_empty());
            if template.starts_with("/v1/") {
                let statuses: &[&str] = if tokenless { &["500"] } else { &["401", "500"] };
                for status in statuses {
                    assert!(
                        responses.contains_key(*status),
                        "{method} {template} does not document {status}"
                    );
                }
            }
        }
    }
}

#[test]
fn credit_ledger_openapi_prints_the_committed_spec() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_credit-ledger"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(output.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), committed);
}

/// Every route the router serves, read from its source (`src/api/mod.rs`): (path, method).
fn served_routes() -> Vec<(String, String)> {
    let source = include_str!("../../src/api/mod.rs");
    let mut routes = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let Some(open) = rest.find('"') else { break };
        let Some(close) = rest[open + 1..].find('"') else {
            break;
        };
        let path = rest[open + 1..open + 1 + close].to_owned();
        // The handlers: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let mut end = 0;
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let handlers = &rest[open + 1 + close..end];
        for method in ["get", "put", "post", "delete", "patch"] {
            let call = format!("{method}(");
            let found = handlers.match_indices(&call).any(|(i, _)| {
                i == 0 || !handlers[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if found {
                routes.push((path.clone(), method.to_owned()));
            }
        }
    }
    routes
}

#[tokio::test]
async fn every_served_route_is_documented_and_admin_routes_refuse_everyone_else() {
    let app = spawn_app().await;
    let routes = served_routes();
    assert!(routes.len() >= 25, "read {} routes", routes.len());
    let document = spec().document().clone();
    let mut admin = 0;
    for (path, method) in &routes {
        let operation = &document["paths"][path][method];
        assert!(
            operation.is_object(),
            "{method} {path} is served but not in openapi.yaml"
        );
        let page = operation["tags"][0] == "pages";
        let public = path == "/healthz" || path == "/readyz" || path == "/metrics" || page;
        let customer = path.starts_with("/v1/me/");
        if public || customer {
            continue;
        }
        let role = operation["x-role"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} names no x-role in openapi.yaml"));
        if role == "stripe" {
            // Authenticated by Stripe's signature, not a token: unsigned, it changes nothing.
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let unsigned = app.call(m, path).no_token().send().await;
            assert!(
                matches!(unsigned.status.as_u16(), 400 | 503),
                "{method} {path} unsigned answered {}",
                unsigned.status
            );
            continue;
        }
        let concrete: String = path
            .split('/')
            .map(|s| if s.starts_with('{') { "probe" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let call = |token: Option<&str>| {
            let call = app.call(m.clone(), &concrete);
            match token {
                Some(t) => call.token(t),
                None => call.no_token(),
            }
        };
        call(None).send().await.assert_error(401, "unauthorized");
        // A customer's API key is not a ledger token.
        call(Some("sk_live_customer_key"))
            .send()
            .await
            .assert_error(401, "unauthorized");
        if role == "portal" {
            // Only a portal link's token opens it: no ledger token does.
            for token in [crate::helpers::SERVICE, crate::helpers::ADMIN] {
                call(Some(token))
                    .send()
                    .await
                    .assert_error(401, "unauthorized");
            }
        }
        if role == "admin" {
            admin += 1;
            call(Some(crate::helpers::SERVICE))
                .send()
                .await
                .assert_error(403, "forbidden");
        }
    }
    assert!(admin >= 10, "checked {admin} admin routes");
}

#[test]
fn the_licence_is_the_same_in_cargo_toml_the_spec_and_license() {
    let document = spec().document();
    assert_eq!(
        document["info"]["license"]["identifier"],
        env!("CARGO_PKG_LICENSE")
    );
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/LICENSE")).unwrap();
    assert_eq!(env!("CARGO_PKG_LICENSE"), "Apache-2.0");
    assert!(text.trim_start().starts_with("Apache License"));
    assert!(text.contains("Version 2.0, January 2004"));
}
