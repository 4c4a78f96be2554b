//! The batching writer's unit of work: many commands, one transaction. These tests hand
//! batches to it directly, so what shares a batch is certain rather than left to timing.

use credit_ledger::ledger::command::{Answer, Command, Idempotency, Request};
use credit_ledger::ledger::debit::DebitRequest;
use credit_ledger::ledger::pricing::DebitSpec;
use credit_ledger::ledger::types::{KeyId, PoolName};
use credit_ledger::ledger::LedgerError;
use credit_ledger::service::{ServiceError, Target};
use serde_json::json;

use crate::helpers::{spawn_app, TestApp};

fn key(k: &str) -> KeyId {
    KeyId::parse("key_id", k).unwrap()
}

fn debit(k: &str, cost: i64, idempotency: Option<&str>) -> (Target, Request) {
    let request = DebitRequest {
        spec: DebitSpec {
            operation: None,
            quantity: 1,
            cost: Some(cost),
            pool: Some(PoolName::default_pool()),
        },
        metadata: json!({"cost": cost}),
        dry_run: false,
        source_key_id: None,
    };
    let idempotency = idempotency.map(|key| Idempotency {
        key: key.to_owned(),
        request_hash: format!("debit {cost}"),
    });
    (
        Target::Account(key(k)),
        Request::new(Command::Debit(request), idempotency),
    )
}

async fn available(app: &TestApp, k: &str) -> i64 {
    let balance = app.ledger.balance(&key(k)).await.unwrap();
    balance.pools[0].available.unwrap()
}

#[tokio::test]
async fn a_refused_command_in_a_batch_leaves_its_neighbours_applied() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    let batch = [
        debit("key_1", 60, None),
        debit("key_1", 50, None),
        debit("key_1", 40, None),
    ];
    let (results, _) = app.ledger.apply_batch(&batch).await.unwrap();
    assert!(matches!(&results[0], Ok(Answer::Debit(d)) if d.remaining == Some(40)));
    assert!(matches!(&results[1], Err(LedgerError::CreditsExhausted(e)) if e.available == 40));
    assert!(matches!(&results[2], Ok(Answer::Debit(d)) if d.remaining == Some(0)));
    assert_eq!(available(&app, "key_1").await, 0);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn two_requests_with_one_key_in_a_batch_make_one_effect() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    let batch = [
        debit("key_1", 30, Some("once")),
        debit("key_1", 30, Some("once")),
        debit("key_1", 31, Some("once")),
    ];
    let (results, _) = app.ledger.apply_batch(&batch).await.unwrap();
    let Ok(Answer::Debit(first)) = &results[0] else {
        panic!("the first debit was not applied: {:?}", results[0]);
    };
    let Ok(Answer::Replayed(replayed)) = &results[1] else {
        panic!("the second was not a replay: {:?}", results[1]);
    };
    assert_eq!(replayed, &serde_json::to_value(first).unwrap());
    assert!(matches!(results[2], Err(LedgerError::IdempotencyKeyReused)));
    assert_eq!(available(&app, "key_1").await, 70);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_batch_over_several_accounts_applies_each_in_order() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    for k in ["key_a", "key_b", "key_c"] {
        app.create_account(k, "pro").await;
    }
    let batch = [
        debit("key_c", 10, None),
        debit("key_a", 20, None),
        debit("key_missing", 1, None),
        debit("key_b", 30, None),
        debit("key_a", 5, None),
    ];
    let (results, states) = app.ledger.apply_batch(&batch).await.unwrap();
    assert!(matches!(&results[2], Err(LedgerError::AccountNotFound(_))));
    assert!(matches!(&results[4], Ok(Answer::Debit(d)) if d.remaining == Some(75)));
    let keys: Vec<&str> = states.iter().map(|s| s.key_id().as_str()).collect();
    assert_eq!(
        keys,
        ["key_a", "key_b", "key_c"],
        "loaded and locked in key order"
    );
    assert_eq!(available(&app, "key_a").await, 75);
    assert_eq!(available(&app, "key_b").await, 70);
    assert_eq!(available(&app, "key_c").await, 90);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_batch_whose_transaction_fails_applies_none_of_its_commands() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    app.create_account("key_2", "pro").await;
    // The database refuses one debit of the batch (as a full disk or a lost connection would
    // refuse the whole transaction).
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_cost_13() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.cost = 13 THEN RAISE EXCEPTION 'refused by the test'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_cost_13 BEFORE INSERT ON debits
             FOR EACH ROW EXECUTE FUNCTION refuse_cost_13();",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let batch = [
        debit("key_1", 10, Some("k1")),
        debit("key_2", 13, None),
        debit("key_1", 20, None),
    ];
    let failed = app.ledger.apply_batch(&batch).await;
    assert!(
        matches!(failed, Err(ServiceError::Database(_))),
        "{failed:?}"
    );
    assert_eq!(available(&app, "key_1").await, 100);
    assert_eq!(available(&app, "key_2").await, 100);
    // Retried with its Idempotency-Key once the database takes it, the debit applies once.
    sqlx::query("DROP TRIGGER refuse_cost_13 ON debits")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (results, _) = app
        .ledger
        .apply_batch(&[debit("key_1", 10, Some("k1"))])
        .await
        .unwrap();
    assert!(matches!(&results[0], Ok(Answer::Debit(d)) if d.remaining == Some(90)));
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn concurrent_requests_through_the_writer_are_exact() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(1000)).await;
    app.create_account("key_1", "pro").await;
    let requests = (0..200).map(|i| {
        let app = &app;
        async move {
            app.debit("key_1", json!({"cost": 7, "metadata": {"i": i}}))
                .await
                .status
                .as_u16()
        }
    });
    let statuses = futures::future::join_all(requests).await;
    let accepted = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 402).count();
    assert_eq!((accepted, refused), (142, 58));
    assert_eq!(available(&app, "key_1").await, 1000 - 142 * 7);
    app.assert_audit_clean().await;
}

/// A batch waiting for one account's lock must not load an account created meanwhile: it does
/// not hold that account's lock, so a change to it could be lost under a concurrent writer.
#[tokio::test]
async fn an_account_created_while_a_batch_waits_for_locks_is_not_loaded_unlocked() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_a", "pro").await;
    // Another transaction holds key_a.
    let mut holder = app.db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM accounts WHERE key_id = 'key_a' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let ledger = app.ledger.clone();
    let batch = tokio::spawn(async move {
        ledger
            .apply_batch(&[debit("key_a", 10, None), debit("key_b", 10, None)])
            .await
    });
    // Wait until the batch is blocked on key_a's lock.
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.create_account("key_b", "pro").await;
    holder.commit().await.unwrap();
    let (results, _) = batch.await.unwrap().unwrap();
    assert!(matches!(&results[0], Ok(Answer::Debit(d)) if d.remaining == Some(90)));
    assert!(
        matches!(&results[1], Err(LedgerError::AccountNotFound(k)) if k.as_str() == "key_b"),
        "{:?}",
        results[1]
    );
    assert_eq!(available(&app, "key_b").await, 100);
    app.assert_audit_clean().await;
}

/// A write whose batch cannot begin in time to finish before its caller's deadline is answered
/// unapplied, so the caller is never charged for a write it was told failed.
#[tokio::test]
async fn a_write_that_cannot_begin_in_time_is_answered_unapplied() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    // No time at all to begin: every write expires in the queue.
    let ledger = credit_ledger::service::Ledger::with_writers(
        app.db.pool.clone(),
        credit_ledger::ledger::Clock::system(),
        1,
        256,
        Some(std::time::Duration::ZERO),
    );
    let (target, request) = debit("key_1", 10, None);
    let err = ledger.execute(target, request).await.unwrap_err();
    assert!(matches!(err, ServiceError::Expired), "{err:?}");
    assert_eq!(available(&app, "key_1").await, 100);
    // With time to begin, the same write applies.
    let ledger = credit_ledger::service::Ledger::with_writers(
        app.db.pool.clone(),
        credit_ledger::ledger::Clock::system(),
        1,
        256,
        Some(std::time::Duration::from_secs(5)),
    );
    let (target, request) = debit("key_1", 10, None);
    ledger.execute(target, request).await.unwrap();
    assert_eq!(available(&app, "key_1").await, 90);
    // The deadline counts from the start of the request, not from when the write was queued.
    let started = tokio::time::Instant::now()
        .checked_sub(std::time::Duration::from_secs(10))
        .unwrap();
    let (target, request) = debit("key_1", 10, None);
    let err = credit_ledger::service::REQUEST_STARTED
        .scope(started, ledger.execute(target, request))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Expired), "{err:?}");
    assert_eq!(available(&app, "key_1").await, 90);
}

/// A database restart drops every pooled connection; the first write after it is not lost to a
/// dead connection: its load is tried again on one that answers.
#[tokio::test]
async fn a_write_after_the_server_dropped_the_pools_connections_succeeds() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    for _ in 0..3 {
        app.debit("key_1", json!({"operation": "search"}))
            .await
            .assert_status(201);
    }
    // The server ends every other session on this database, as a restart would.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    app.debit("key_1", json!({"operation": "search"}))
        .await
        .assert_status(201);
    assert_eq!(available(&app, "key_1").await, 96);
}
