//! Attribute names of the baseline and findings tables.

/// Partition key of the baseline table: the scope key.
pub const PK: &str = "pk";
/// Sort key of the baseline table: [`SCOPE_SK`] or `V#<value key>`.
pub const SK: &str = "sk";
/// Sort key of a scope's own item.
pub const SCOPE_SK: &str = "SCOPE";
/// Prefix of the sort key of a value item.
pub const VALUE_SK_PREFIX: &str = "V#";
/// Partition key of the findings table, and the link from a value item to
/// the finding it raised.
pub const FINDING_ID: &str = "finding_id";
/// TTL attribute of both tables, in epoch seconds.
pub const EXPIRES_AT: &str = "expires_at";

/// RFC 3339 time of the first sighting of a scope or value.
pub const FIRST_SEEN: &str = "first_seen";
/// RFC 3339 time of the latest written sighting.
pub const LAST_SEEN: &str = "last_seen";
/// `last_seen` in epoch microseconds, for conditions.
pub const LAST_SEEN_US: &str = "last_seen_us";
pub const FIRST_EVENT_ID: &str = "first_event_id";
pub const LAST_EVENT_ID: &str = "last_event_id";
/// Reads counted at written sightings; it lags between refreshes.
pub const SIGHTINGS: &str = "sightings";

/// The finding document as JSON text.
pub const FINDING_JSON: &str = "finding";
/// Whether the alert for the finding was accepted by SNS.
pub const NOTIFIED: &str = "notified";
pub const REPEAT_COUNT: &str = "repeat_count";
pub const SEVERITY: &str = "severity";
pub const CLUSTER: &str = "cluster";
pub const NAMESPACE: &str = "namespace";
pub const DETECTED_AT: &str = "detected_at";
/// Times the finding item was replaced, for optimistic concurrency.
pub const VERSION: &str = "version";
/// `read` for a read finding, `exchange` for an exchange finding.
pub const FINDING_KIND: &str = "kind";
/// Event id of the exchange counted last into an exchange finding.
pub const LAST_EVENT_ID_FOLDED: &str = "last_event_id";

/// Partition key prefix of a subject's items in the correlation table.
pub const SUBJECT_PK_PREFIX: &str = "S#";
/// Partition key prefix of a cluster's learned egress.
pub const EGRESS_PK_PREFIX: &str = "E#";
/// Sort key prefix of an exchange item.
pub const EXCHANGE_SK_PREFIX: &str = "X#";
/// Sort key prefix of a read item.
pub const READ_SK_PREFIX: &str = "R#";
/// Sort key of a subject's profile and of a cluster's egress item.
pub const PROFILE_SK: &str = "PROFILE";
/// The record as JSON text, in exchange and read items.
pub const RECORD_JSON: &str = "record";
/// Attribute name prefix of a profile value; the rest is a hash of the value.
pub const PROFILE_VALUE_PREFIX: &str = "v_";
/// Attribute name prefix of a learned egress address.
pub const EGRESS_ADDRESS_PREFIX: &str = "a_";
