//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go does it: the leader
//! renews the Lease every `retry`; a candidate takes it over once it has not been renewed for
//! `lease`; a leader that could not renew within `renew_deadline` (< `lease`) steps down before
//! anyone else can take over, so two operators never both balance. Writes use the Lease's
//! resourceVersion (optimistic concurrency): of two candidates racing, one gets a conflict.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Election timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionTiming {
    /// How long a Lease holds without renewal.
    pub lease: Duration,
    /// A leader that has not renewed for this long steps down.
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry: Duration,
}

impl Default for ElectionTiming {
    fn default() -> Self {
        // client-go's defaults
        Self {
            lease: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// What a candidate should do with the Lease it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over (one more transition).
    TakeOver,
    /// Someone else holds it and renewed recently.
    Follow {
        /// The current holder.
        holder: String,
    },
}

/// Decides from the Lease as read (pure).
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: Timestamp, timing: &ElectionTiming) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return Decision::Renew;
    }
    let held_for = spec.lease_duration_seconds.map_or(timing.lease, |s| {
        Duration::from_secs(u64::try_from(s).unwrap_or(0))
    });
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let expired = match renewed {
        Some(t) => now.duration_since(t) >= SignedDuration::try_from(held_for).unwrap_or(SignedDuration::MAX),
        None => true,
    };
    if holder.is_empty() || expired {
        Decision::TakeOver
    } else {
        Decision::Follow { holder }
    }
}

/// The Lease spec to write for a decision.
pub fn next_spec(
    current: Option<&LeaseSpec>,
    decision: &Decision,
    me: &str,
    now: Timestamp,
    timing: &ElectionTiming,
) -> Option<LeaseSpec> {
    let duration = i32::try_from(timing.lease.as_secs()).unwrap_or(i32::MAX);
    match decision {
        Decision::Follow { .. } => None,
        Decision::Renew => Some(LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(duration),
            ..current.cloned().unwrap_or_default()
        }),
        Decision::Create | Decision::TakeOver => Some(LeaseSpec {
            holder_identity: Some(me.to_string()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(current.and_then(|c| c.lease_transitions).map_or(0, |t| t + 1)),
            ..LeaseSpec::default()
        }),
    }
}

/// Runs an election for Lease `name` until `stop`, publishing whether we lead on `leading`.
pub async fn campaign(
    client: Client,
    namespace: String,
    name: String,
    identity: String,
    timing: ElectionTiming,
    leading: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let (name, identity) = (name.as_str(), identity.as_str());
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut last_renewed: Option<tokio::time::Instant> = None;
    loop {
        let outcome = attempt(&api, name, identity, &timing).await;
        let now = tokio::time::Instant::now();
        match outcome {
            Ok(true) => {
                if !*leading.borrow() {
                    tracing::info!(lease = name, identity, "became the leader");
                }
                last_renewed = Some(now);
                leading.send_replace(true);
            }
            Ok(false) => {
                if *leading.borrow() {
                    tracing::warn!(lease = name, "another operator took the lease");
                }
                last_renewed = None;
                leading.send_replace(false);
            }
            Err(e) => {
                tracing::warn!(lease = name, error = %e, "lease update failed");
                let overdue = last_renewed.is_none_or(|t| now.duration_since(t) >= timing.renew_deadline);
                if overdue && *leading.borrow() {
                    tracing::warn!(lease = name, "could not renew in time; stepping down");
                    leading.send_replace(false);
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(timing.retry) => {}
        }
    }
    if *leading.borrow() {
        // hand over at once instead of after the lease runs out
        let _ = release(&api, name, identity).await;
        leading.send_replace(false);
    }
}

/// One round: read, decide, write. Ok(true) when we hold the Lease afterwards.
async fn attempt(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    timing: &ElectionTiming,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(name).await?;
    let now = Timestamp::now();
    let decision = decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        identity,
        now,
        timing,
    );
    let Some(spec) = next_spec(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &decision,
        identity,
        now,
        timing,
    ) else {
        return Ok(false);
    };
    let result = match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await
        }
        Some(mut lease) => {
            // carries the resourceVersion we read: a concurrent write makes this a 409
            lease.spec = Some(spec);
            api.replace(name, &PostParams::default(), &lease).await
        }
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

async fn release(api: &Api<Lease>, name: &str, identity: &str) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(name).await? else {
        return Ok(());
    };
    if lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) != Some(identity) {
        return Ok(());
    }
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = None;
        spec.renew_time = None;
    }
    api.replace(name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(by: &str, renewed_s: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(by.into()),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed_s).expect("t"))),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("t")
    }

    #[test]
    fn candidates_follow_a_live_leader_and_take_over_an_expired_one() {
        let t = ElectionTiming::default();
        assert_eq!(decide(None, "b", at(100), &t), Decision::Create);
        assert_eq!(decide(Some(&held("a", 100)), "a", at(101), &t), Decision::Renew);
        assert_eq!(
            decide(Some(&held("a", 100)), "b", at(114), &t),
            Decision::Follow { holder: "a".into() }
        );
        assert_eq!(
            decide(Some(&held("a", 100)), "b", at(115), &t),
            Decision::TakeOver
        );
        let released = LeaseSpec {
            holder_identity: None,
            ..held("a", 100)
        };
        assert_eq!(decide(Some(&released), "b", at(101), &t), Decision::TakeOver);
    }

    #[test]
    fn a_take_over_counts_a_transition_and_a_renewal_keeps_the_holder() {
        let t = ElectionTiming::default();
        let cur = held("a", 100);
        let next = next_spec(Some(&cur), &Decision::TakeOver, "b", at(120), &t).expect("spec");
        assert_eq!(next.holder_identity.as_deref(), Some("b"));
        assert_eq!(next.lease_transitions, Some(3));
        assert_eq!(next.acquire_time, Some(MicroTime(at(120))));
        let renewed = next_spec(Some(&cur), &Decision::Renew, "a", at(105), &t).expect("spec");
        assert_eq!(renewed.holder_identity.as_deref(), Some("a"));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(105))));
        assert_eq!(renewed.lease_transitions, Some(2));
        assert!(
            next_spec(
                Some(&cur),
                &Decision::Follow { holder: "a".into() },
                "b",
                at(105),
                &t
            )
            .is_none()
        );
        let first = next_spec(None, &Decision::Create, "a", at(1), &t).expect("spec");
        assert_eq!(first.lease_transitions, Some(0));
    }
}
