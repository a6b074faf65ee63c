//! Checks that every [`BaselineStore`] adapter must pass.
//!
//! The in-memory store, the node agent's embedded store and the DynamoDB
//! store run the same checks, so the engine can rely on one contract. Each
//! check takes a fresh, empty store and panics with a message on failure.
//! Races between processes are not covered here: each adapter tests them
//! against its own backend.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokenguard_schema::{Container, Owner, Pod, Process, Token, TokenKind, TokenRead};

use crate::finding::Finding;
use crate::scope::BaselineKey;
use crate::store::{BaselineStore, FindingRecord, ValueSighting};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A fixed instant, `hours` after 2026-12-01T00:00:00Z.
pub fn at(hours: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + chrono::Duration::hours(hours)
}

/// A read by `exe` in Deployment `payments/api`, container `api`.
pub fn sample_read(exe: &str, comm: &str) -> TokenRead {
    TokenRead {
        event_id: format!("boot-1:{exe}"),
        observed_at: at(0),
        cluster: "test".to_owned(),
        token: Token {
            kind: TokenKind::Irsa,
            path: "/var/run/secrets/eks.amazonaws.com/serviceaccount/token".to_owned(),
            host_path: false,
        },
        process: Process {
            pid: 4242,
            comm: comm.to_owned(),
            exe: exe.to_owned(),
            args: vec![comm.to_owned()],
            args_truncated: false,
            uid: 1000,
            start_time: 12345,
            parent: Some(Box::new(Process {
                pid: 4200,
                comm: "sh".to_owned(),
                exe: "/bin/sh".to_owned(),
                args: Vec::new(),
                args_truncated: false,
                uid: 1000,
                start_time: 12000,
                parent: None,
            })),
        },
        container: Some(Container {
            id: "c0ffee".repeat(10),
            runtime: Some("containerd".to_owned()),
            name: Some("api".to_owned()),
            image: Some("registry.example/payments-api:1.0".to_owned()),
        }),
        pod: Some(Pod {
            uid: "pod-uid-1".to_owned(),
            namespace: Some("payments".to_owned()),
            name: Some("api-6d8f7b9c5-x2k4q".to_owned()),
            service_account: Some("payments-api".to_owned()),
            owner: Some(Owner {
                kind: "Deployment".to_owned(),
                name: "api".to_owned(),
            }),
        }),
        count: 1,
    }
}

fn key(exe: &str) -> BaselineKey {
    BaselineKey::of(&sample_read(exe, "x"))
}

/// A new value is `New` once, then `Known` with the creating event's id.
pub async fn new_then_known(store: &impl BaselineStore) {
    let key = key("/bin/a");
    let first = store
        .record_value(&key, "e1", 1, at(0), 28 * DAY, HOUR)
        .await
        .unwrap();
    assert_eq!(first, ValueSighting::New, "first sighting must be new");

    let second = store
        .record_value(&key, "e2", 1, at(0), 28 * DAY, HOUR)
        .await
        .unwrap();
    let ValueSighting::Known(record) = second else {
        panic!("second sighting must be known, got {second:?}");
    };
    assert_eq!(record.first_event_id, "e1");
    assert_eq!(record.first_seen, at(0));
    assert_eq!(record.sightings, 1);
}

/// A value older than `forget_after` is new again, even if still stored.
pub async fn forgotten_value_is_new(store: &impl BaselineStore) {
    let key = key("/bin/b");
    store
        .record_value(&key, "e1", 1, at(0), 2 * DAY, HOUR)
        .await
        .unwrap();
    let later = store
        .record_value(&key, "e2", 1, at(49), 2 * DAY, HOUR)
        .await
        .unwrap();
    assert_eq!(
        later,
        ValueSighting::New,
        "a value unseen for 49h with forget_after 48h"
    );
}

/// `last_seen` moves only after `refresh_interval`, and keeps a value alive.
pub async fn refresh_keeps_value(store: &impl BaselineStore) {
    let key = key("/bin/c");
    store
        .record_value(&key, "e1", 1, at(0), 2 * DAY, HOUR)
        .await
        .unwrap();
    store
        .record_value(&key, "e2", 1, at(40), 2 * DAY, HOUR)
        .await
        .unwrap();
    let sighting = store
        .record_value(&key, "e3", 1, at(80), 2 * DAY, HOUR)
        .await
        .unwrap();
    let ValueSighting::Known(record) = sighting else {
        panic!("a value refreshed at 40h must be known at 80h, got {sighting:?}");
    };
    assert_eq!(record.last_seen, at(40));
    assert_eq!(record.last_event_id, "e2");

    let quick = store
        .record_value(&key, "e4", 1, at(80), 2 * DAY, HOUR)
        .await
        .unwrap();
    let ValueSighting::Known(record) = quick else {
        panic!("expected known, got {quick:?}");
    };
    assert_eq!(
        record.last_event_id, "e3",
        "a sighting within the interval must not rewrite"
    );
}

/// The scope keeps its first sighting and the event that created it.
pub async fn scope_first_seen_kept(store: &impl BaselineStore) {
    let first = store
        .record_scope("s/1", "e1", at(0), 28 * DAY)
        .await
        .unwrap();
    assert_eq!(first.first_event_id, "e1");
    assert_eq!(first.first_seen, at(0));
    let second = store
        .record_scope("s/1", "e2", at(5), 28 * DAY)
        .await
        .unwrap();
    assert_eq!(second.first_event_id, "e1");
    assert_eq!(second.first_seen, at(0));
}

/// Value writes keep the scope alive; a scope with no sighting is forgotten.
pub async fn scope_lives_with_values(store: &impl BaselineStore) {
    let key = key("/bin/alive");
    store
        .record_scope(&key.scope.key, "e1", at(0), 2 * DAY)
        .await
        .unwrap();
    store
        .record_value(&key, "e1", 1, at(0), 2 * DAY, HOUR)
        .await
        .unwrap();
    store
        .record_value(&key, "e2", 1, at(40), 2 * DAY, HOUR)
        .await
        .unwrap();
    let alive = store
        .record_scope(&key.scope.key, "e3", at(80), 2 * DAY)
        .await
        .unwrap();
    assert_eq!(
        alive.first_event_id, "e1",
        "a value refreshed at 40h keeps the scope at 80h"
    );
    let reborn = store
        .record_scope(&key.scope.key, "e4", at(200), 2 * DAY)
        .await
        .unwrap();
    assert_eq!(
        reborn.first_event_id, "e4",
        "a scope unseen for 120h is created again"
    );
    assert_eq!(reborn.first_seen, at(200));
}

/// A value write does not revive a forgotten scope, so the scope learns again.
pub async fn forgotten_scope_not_revived(store: &impl BaselineStore) {
    let key = key("/bin/revived");
    store
        .record_scope(&key.scope.key, "e1", at(0), 2 * DAY)
        .await
        .unwrap();
    store
        .record_value(&key, "e1", 1, at(0), 2 * DAY, HOUR)
        .await
        .unwrap();
    let back = store
        .record_value(&key, "e2", 1, at(100), 2 * DAY, HOUR)
        .await
        .unwrap();
    assert_eq!(back, ValueSighting::New, "a value unseen for 100h is new");
    let scope = store
        .record_scope(&key.scope.key, "e2", at(100), 2 * DAY)
        .await
        .unwrap();
    assert_eq!(
        scope.first_event_id, "e2",
        "a scope unseen for 100h is created again, even after a value write"
    );
    assert_eq!(scope.first_seen, at(100));
}

/// Known values exclude the new value and forgotten ones.
pub async fn known_values_listed(store: &impl BaselineStore) {
    let old = key("/bin/old");
    let kept = key("/bin/kept");
    let new = key("/bin/new");
    store
        .record_value(&old, "e1", 1, at(0), 2 * DAY, HOUR)
        .await
        .unwrap();
    store
        .record_value(&kept, "e2", 1, at(30), 2 * DAY, HOUR)
        .await
        .unwrap();
    store
        .record_value(&new, "e3", 1, at(60), 2 * DAY, HOUR)
        .await
        .unwrap();
    let known = store
        .known_values(&new.scope.key, &new.value.key, at(60), 2 * DAY)
        .await
        .unwrap();
    let keys: Vec<_> = known.iter().map(|(value, _)| value.as_str()).collect();
    assert_eq!(keys, vec![kept.value.key.as_str()]);
}

/// Findings round-trip, are linked from their value, and count repeats.
pub async fn findings_round_trip(store: &impl BaselineStore, finding: Finding) {
    let key = BaselineKey {
        scope: finding.scope.clone(),
        value: finding.value.clone(),
    };
    store
        .record_value(&key, &finding.event_id, 1, at(0), 28 * DAY, HOUR)
        .await
        .unwrap();
    let record = FindingRecord {
        finding: finding.clone(),
        notified: false,
        version: 0,
    };
    store.put_finding(&key, &record).await.unwrap();
    let loaded = store.get_finding(&finding.finding_id).await.unwrap();
    assert_eq!(loaded.as_ref(), Some(&record));

    let sighting = store
        .record_value(&key, "later", 1, at(0), 28 * DAY, HOUR)
        .await
        .unwrap();
    let ValueSighting::Known(value) = sighting else {
        panic!("expected known, got {sighting:?}");
    };
    assert_eq!(
        value.finding_id.as_deref(),
        Some(finding.finding_id.as_str())
    );

    store
        .add_repeats(&finding.finding_id, 3, at(2))
        .await
        .unwrap();
    store.mark_notified(&finding.finding_id, 0).await.unwrap();
    let loaded = store
        .get_finding(&finding.finding_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.finding.repeat_count, finding.repeat_count + 3);
    assert_eq!(loaded.finding.last_seen, at(2));
    assert!(
        loaded.notified,
        "mark_notified must set notified and keep the repeats"
    );
    assert!(store.get_finding("tg-missing").await.unwrap().is_none());
}

/// A finding is replaced only at the version it was read at, keeps the
/// repeats counted meanwhile, and is marked notified only at its version.
pub async fn findings_replaced_by_version(store: &impl BaselineStore, finding: Finding) {
    let key = BaselineKey {
        scope: finding.scope.clone(),
        value: finding.value.clone(),
    };
    let first = FindingRecord {
        finding: finding.clone(),
        notified: true,
        version: 0,
    };
    store.put_finding(&key, &first).await.unwrap();
    store
        .add_repeats(&finding.finding_id, 2, at(3))
        .await
        .unwrap();

    let mut raised = first.clone();
    raised.finding.severity = crate::finding::Severity::Critical;
    raised.notified = false;
    assert!(store.replace_finding(&raised).await.unwrap());
    assert!(
        !store.replace_finding(&raised).await.unwrap(),
        "a replace at a stale version must not write"
    );

    let loaded = store
        .get_finding(&finding.finding_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.version, 1);
    assert_eq!(loaded.finding.severity, crate::finding::Severity::Critical);
    assert!(!loaded.notified);
    assert_eq!(loaded.finding.repeat_count, finding.repeat_count + 2);
    assert_eq!(loaded.finding.last_seen, at(3));

    store.mark_notified(&finding.finding_id, 0).await.unwrap();
    let stale = store.get_finding(&finding.finding_id).await.unwrap();
    assert!(
        !stale.unwrap().notified,
        "marking an older version must not mark the current one"
    );
    store.mark_notified(&finding.finding_id, 1).await.unwrap();
    let current = store.get_finding(&finding.finding_id).await.unwrap();
    assert!(current.unwrap().notified);

    let mut missing = raised.clone();
    missing.finding.finding_id = "tg-missing".to_owned();
    assert!(!store.replace_finding(&missing).await.unwrap());
}

/// Checks that every [`crate::correlate::CorrelationStore`] adapter must pass.
pub mod correlation {
    use std::net::IpAddr;

    use super::{DAY, at};
    use crate::cloudtrail::{ClusterRef, Exchange, ExchangeApi};
    use crate::correlate::{
        CallSignals, CorrelationStore, ExchangeFinding, ExchangeFindingRecord, ExchangeRecord,
        MatchedCall, ReadRecord, Subject,
    };

    fn subject() -> Subject {
        Subject {
            cluster: "test".to_owned(),
            namespace: Some("payments".to_owned()),
            service_account: Some("payments-api".to_owned()),
        }
    }

    fn exchange(event_id: &str, hours: i64) -> ExchangeRecord {
        ExchangeRecord {
            subject: subject(),
            exchange: Exchange {
                event_id: event_id.to_owned(),
                event_time: at(hours),
                api: ExchangeApi::AssumeRoleWithWebIdentity,
                cluster: ClusterRef::Name("test".to_owned()),
                namespace: Some("payments".to_owned()),
                service_account: Some("payments-api".to_owned()),
                pod_name: None,
                pod_uid: None,
                role_arn: Some("arn:aws:iam::111122223333:role/payments-api".to_owned()),
                session_name: Some("botocore-session-1".to_owned()),
                source_address: Some("198.51.100.20".to_owned()),
                user_agent: Some("Boto3/1.35.10".to_owned()),
                caller_arn: None,
                vpc_endpoint_id: None,
                error_code: None,
                error_message: None,
            },
            signals: CallSignals::default(),
        }
    }

    /// Exchanges are stored once per event and listed by time.
    pub async fn exchanges_by_time(store: &impl CorrelationStore) {
        let key = subject().key();
        let first = exchange("x-1", 1);
        assert_eq!(store.put_exchange(&first, at(25)).await.unwrap(), None);
        let mut again = first.clone();
        again.signals.new_user_agent = true;
        assert_eq!(
            store.put_exchange(&again, at(25)).await.unwrap(),
            Some(first.clone()),
            "a second put of one event returns the stored exchange"
        );
        store
            .put_exchange(&exchange("x-2", 3), at(27))
            .await
            .unwrap();
        let listed = store.exchanges_between(&key, at(0), at(2)).await.unwrap();
        assert_eq!(listed, vec![first.clone()]);
        let both = store.exchanges_between(&key, at(1), at(3)).await.unwrap();
        assert_eq!(both.len(), 2, "bounds are inclusive");
        let other = store
            .exchanges_between("test/other/sa", at(0), at(5))
            .await
            .unwrap();
        assert!(other.is_empty());
    }

    /// Reads are stored under each subject and listed by time.
    pub async fn reads_by_time(store: &impl CorrelationStore) {
        let keys = vec![subject().key(), "test/~eks-auth".to_owned()];
        let unfamiliar = ReadRecord {
            observed_at: at(1),
            finding_id: Some("tg-1".to_owned()),
            pod_uid: Some("pod-uid-1".to_owned()),
        };
        let marker = ReadRecord {
            observed_at: at(1),
            finding_id: None,
            pod_uid: None,
        };
        store.put_read(&keys, &unfamiliar, at(25)).await.unwrap();
        store.put_read(&keys[..1], &marker, at(25)).await.unwrap();
        let reads = store.reads_between(&keys[0], at(1), at(1)).await.unwrap();
        assert_eq!(reads.len(), 2, "{reads:?}");
        assert!(reads.contains(&unfamiliar));
        assert!(reads.contains(&marker));
        let pod_identity = store.reads_between(&keys[1], at(0), at(2)).await.unwrap();
        assert_eq!(pod_identity, vec![unfamiliar]);
        assert!(
            store
                .reads_between(&keys[0], at(2), at(3))
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// A profile says which values are new, and forgets old ones.
    pub async fn profile_marks_new_values(store: &impl CorrelationStore) {
        let key = subject().key();
        let values = vec!["ua:Boto3".to_owned(), "sn:botocore-session-#".to_owned()];
        let first = store
            .record_profile(&key, &values, at(0), 2 * DAY)
            .await
            .unwrap();
        assert!(first.created);
        assert_eq!(first.first_seen, at(0));
        assert_eq!(first.new, vec![true, true]);

        let mixed = vec!["ua:Boto3".to_owned(), "ua:aws-cli".to_owned()];
        let second = store
            .record_profile(&key, &mixed, at(1), 2 * DAY)
            .await
            .unwrap();
        assert!(!second.created);
        assert_eq!(second.first_seen, at(0));
        assert_eq!(second.new, vec![false, true]);

        let late = store
            .record_profile(&key, &values[1..], at(60), 2 * DAY)
            .await
            .unwrap();
        assert_eq!(
            late.new,
            vec![true],
            "a value unseen for forget_after is new again"
        );
    }

    /// Learned egress is listed until forgotten.
    pub async fn egress_learned(store: &impl CorrelationStore) {
        let nat: IpAddr = "192.0.2.50".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert!(
            store
                .learned_egress("test", at(0), 2 * DAY)
                .await
                .unwrap()
                .is_empty()
        );
        store
            .learn_egress("test", nat, at(0), 2 * DAY)
            .await
            .unwrap();
        store
            .learn_egress("test", v6, at(1), 2 * DAY)
            .await
            .unwrap();
        let learned = store.learned_egress("test", at(2), 2 * DAY).await.unwrap();
        assert_eq!(learned, vec![nat, v6]);
        assert!(
            store
                .learned_egress("other", at(2), 2 * DAY)
                .await
                .unwrap()
                .is_empty()
        );
        let later = store.learned_egress("test", at(48), 2 * DAY).await.unwrap();
        assert_eq!(
            later,
            vec![v6],
            "an address unseen for forget_after is forgotten"
        );
    }

    /// Exchange findings are created once, count repeats once each, and
    /// record delivery.
    pub async fn exchange_findings_fold(store: &impl CorrelationStore) {
        let record = exchange("x-1", 1);
        let call = MatchedCall::of(&record.exchange, record.signals);
        let finding = ExchangeFinding::new(&subject(), call.clone(), Vec::new(), at(1));
        let fresh = ExchangeFindingRecord {
            finding: finding.clone(),
            notified: false,
        };
        assert_eq!(store.put_exchange_finding(&fresh).await.unwrap(), None);
        let stored = store.put_exchange_finding(&fresh).await.unwrap();
        assert_eq!(stored.as_ref().map(|r| &r.finding), Some(&finding));

        let repeat = MatchedCall::of(&exchange("x-2", 2).exchange, CallSignals::default());
        store
            .fold_exchange_finding(&finding.finding_id, &repeat)
            .await
            .unwrap();
        store
            .fold_exchange_finding(&finding.finding_id, &repeat)
            .await
            .unwrap();
        store
            .mark_exchange_notified(&finding.finding_id)
            .await
            .unwrap();
        let stored = store.put_exchange_finding(&fresh).await.unwrap().unwrap();
        assert_eq!(
            stored.finding.repeat_count, 1,
            "a redelivered repeat counts once"
        );
        assert_eq!(stored.finding.last_seen, at(2));
        assert!(stored.notified);
    }
}
