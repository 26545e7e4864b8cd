//! Worker pods as Kubernetes reports them. A worker whose pod was deleted (the kubelet saw its
//! containers stop, or someone force-deleted it) or whose container terminated or restarted is
//! dead now: its balancer need not wait out the heartbeat timeout to fail its partitions over.
//! A pod being deleted gracefully is not: its worker is draining (the preStop hook) and hands
//! its partitions over itself; only when the pod object goes is it gone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::children::MANAGER;

/// The worker container's name in the pod template.
const WORKER_CONTAINER: &str = "worker";

/// A worker whose process Kubernetes reports gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gone {
    /// The ChatAgent's key (`namespace/name`).
    pub agent: String,
    /// The worker's id: its pod's name.
    pub worker: String,
    /// What Kubernetes said.
    pub why: &'static str,
}

/// What was seen of each worker pod (by uid): its container's restart count, whether its
/// terminated container was reported already, and whose it is; and the pods a (re)list shows.
#[derive(Default)]
pub struct PodWatch {
    seen: HashMap<String, Seen>,
    listed: Option<HashSet<String>>,
}

struct Seen {
    restarts: i32,
    reported: bool,
    worker: Option<Gone>,
}

impl PodWatch {
    /// The workers one watch event shows gone.
    pub fn on(&mut self, event: &watcher::Event<Pod>) -> Vec<Gone> {
        match event {
            watcher::Event::Delete(pod) => {
                self.seen.remove(&pod.uid().unwrap_or_default());
                gone(pod, "pod deleted").into_iter().collect()
            }
            watcher::Event::Apply(pod) => self.changed(pod, false),
            // a (re)list: remember restart counts; only a container down now counts
            watcher::Event::Init => {
                self.listed = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(pod) => {
                if let Some(listed) = self.listed.as_mut() {
                    listed.insert(pod.uid().unwrap_or_default());
                }
                self.changed(pod, true)
            }
            // pods seen before but not listed now were deleted while the watch was down
            watcher::Event::InitDone => {
                let Some(listed) = self.listed.take() else {
                    return Vec::new();
                };
                let missed: Vec<String> = self
                    .seen
                    .keys()
                    .filter(|uid| !listed.contains(*uid))
                    .cloned()
                    .collect();
                missed
                    .into_iter()
                    .filter_map(|uid| self.seen.remove(&uid)?.worker)
                    .map(|g| Gone {
                        why: "pod deleted",
                        ..g
                    })
                    .collect()
            }
        }
    }

    fn changed(&mut self, pod: &Pod, listing: bool) -> Vec<Gone> {
        let status = pod.status.as_ref();
        let container = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == WORKER_CONTAINER));
        let restarts = container.map_or(0, |c| c.restart_count);
        let terminated = container
            .and_then(|c| c.state.as_ref())
            .is_some_and(|s| s.terminated.is_some())
            || status
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Failed" || p == "Succeeded");
        let uid = pod.uid().unwrap_or_default();
        let (known_restarts, reported) = self
            .seen
            .get(&uid)
            .map_or((restarts, false), |s| (s.restarts, s.reported));
        self.seen.insert(
            uid,
            Seen {
                restarts,
                reported: terminated,
                worker: gone(pod, ""),
            },
        );
        // one notice per death: a terminated container is reported once, and its restart
        // (the new process) is not reported again; a restart seen only in a (re)list is old news
        let why = if reported {
            None
        } else if terminated {
            Some("container terminated")
        } else if restarts > known_restarts && !listing {
            Some("container restarted")
        } else {
            None
        };
        why.and_then(|why| gone(pod, why)).into_iter().collect()
    }
}

/// `pod`'s worker, if it is one of ours.
fn gone(pod: &Pod, why: &'static str) -> Option<Gone> {
    let agent = pod.labels().get("app.kubernetes.io/instance")?;
    Some(Gone {
        agent: format!("{}/{agent}", pod.namespace()?),
        worker: pod.name_any(),
        why,
    })
}

/// Watches the worker pods in `namespace` (all when `None`) until `stop`, telling the balancers
/// which workers are gone.
pub async fn watch_worker_pods(
    client: Client,
    namespace: Option<String>,
    ctx: Arc<Context>,
    stop: CancellationToken,
) {
    let api: Api<Pod> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let selector = format!("app.kubernetes.io/name=meshchat-worker,app.kubernetes.io/managed-by={MANAGER}");
    let mut events = watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .boxed();
    let mut watch = PodWatch::default();
    let mut failing = false;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            e = events.next() => e,
        };
        match event {
            None => return,
            Some(Err(e)) => {
                // without pod access (an older chart's RBAC) failover waits for heartbeats
                if !failing {
                    tracing::warn!(error = %e, "cannot watch worker pods; failover waits for the heartbeat timeout");
                    failing = true;
                }
            }
            Some(Ok(event)) => {
                failing = false;
                for g in watch.on(&event) {
                    if ctx.supervisor.worker_gone(&g.agent, &g.worker) {
                        tracing::info!(agent = %g.agent, worker = %g.worker, why = g.why, "worker pod gone; failing over at once");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use kube::api::ObjectMeta;

    fn pod(name: &str, restarts: i32, terminated: bool) -> Pod {
        let state = if terminated {
            ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 137,
                    ..Default::default()
                }),
                ..Default::default()
            }
        } else {
            ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app.kubernetes.io/instance".to_string(), "support".to_string())].into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Running".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: WORKER_CONTAINER.into(),
                    restart_count: restarts,
                    state: Some(state),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn workers(gone: Vec<Gone>) -> Vec<(String, String, &'static str)> {
        gone.into_iter().map(|g| (g.agent, g.worker, g.why)).collect()
    }

    #[test]
    fn a_deleted_pod_or_a_dead_container_is_a_gone_worker_once() {
        let mut w = PodWatch::default();
        assert!(w.on(&watcher::Event::Init).is_empty());
        // a (re)list: old restarts are old news
        assert!(
            w.on(&watcher::Event::InitApply(pod("support-0", 3, false)))
                .is_empty()
        );
        assert!(
            w.on(&watcher::Event::InitApply(pod("support-1", 0, false)))
                .is_empty()
        );
        assert!(w.on(&watcher::Event::InitDone).is_empty());
        // the container died: reported once, and its restart is the new process
        assert_eq!(
            workers(w.on(&watcher::Event::Apply(pod("support-0", 3, true)))),
            [("shop/support".into(), "support-0".into(), "container terminated")]
        );
        assert!(w.on(&watcher::Event::Apply(pod("support-0", 3, true))).is_empty());
        assert!(
            w.on(&watcher::Event::Apply(pod("support-0", 4, false)))
                .is_empty()
        );
        // a restart seen only as a higher count (the kubelet restarted it at once)
        assert_eq!(
            workers(w.on(&watcher::Event::Apply(pod("support-0", 5, false)))),
            [("shop/support".into(), "support-0".into(), "container restarted")]
        );
        // a status change of a running container is nothing
        assert!(
            w.on(&watcher::Event::Apply(pod("support-1", 0, false)))
                .is_empty()
        );
        // a pod being deleted gracefully drains; only its removal counts
        let mut deleting = pod("support-1", 0, false);
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(w.on(&watcher::Event::Apply(deleting.clone())).is_empty());
        assert_eq!(
            workers(w.on(&watcher::Event::Delete(deleting))),
            [("shop/support".into(), "support-1".into(), "pod deleted")]
        );
        // a relist after the watch was down: a pod deleted meanwhile is gone, the others not
        assert!(
            w.on(&watcher::Event::Apply(pod("support-2", 0, false)))
                .is_empty()
        );
        assert!(w.on(&watcher::Event::Init).is_empty());
        assert!(
            w.on(&watcher::Event::InitApply(pod("support-0", 5, false)))
                .is_empty()
        );
        assert_eq!(
            workers(w.on(&watcher::Event::InitDone)),
            [("shop/support".into(), "support-2".into(), "pod deleted")]
        );
        assert!(
            w.on(&watcher::Event::Apply(pod("support-2", 0, false)))
                .is_empty()
        );
        // a failed pod's worker is gone too
        let mut failed = pod("support-2", 0, false);
        if let Some(s) = failed.status.as_mut() {
            s.phase = Some("Failed".into());
        }
        assert_eq!(
            workers(w.on(&watcher::Event::Apply(failed))),
            [("shop/support".into(), "support-2".into(), "container terminated")]
        );
    }
}
