//! Reads the HPAs and KEDA ScaledObjects of a ChatAgent's namespace, so that the built-in
//! autoscaler yields to one that scales the same ChatAgent instead of fighting it.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client, ResourceExt};

use crate::autoscale::{Lookup, ScaleTarget, external_for};

/// What targets ChatAgent `name` in `ns`. ScaledObjects come first: KEDA drives each through an
/// HPA of its own (`keda-hpa-*`, owned by the ScaledObject), which is skipped. A namespace
/// without KEDA's CRD has no ScaledObjects. A list that fails (RBAC without these rules, the
/// API server busy) makes the answer unknown: the reconcile goes on, and the built-in
/// autoscaler stands back until it can tell.
pub async fn external_autoscaler(client: &Client, ns: &str, name: &str) -> Lookup {
    // from the API server's cache (resourceVersion 0): this runs on every reconcile
    let lp = ListParams::default().match_any();
    let gvk = GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "scaledobjects");
    let scaled: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let mut found: Vec<(String, String, ScaleTarget)> = match scaled.list(&lp).await {
        Ok(list) => list
            .items
            .into_iter()
            .filter_map(|o| {
                let t = o.data.get("spec")?.get("scaleTargetRef")?;
                Some((
                    "ScaledObject".to_string(),
                    o.name_any(),
                    ScaleTarget {
                        api_version: t.get("apiVersion").and_then(|v| v.as_str()).map(str::to_string),
                        kind: t.get("kind")?.as_str()?.to_string(),
                        name: t.get("name")?.as_str()?.to_string(),
                    },
                ))
            })
            .collect(),
        Err(kube::Error::Api(e)) if e.code == 404 => Vec::new(),
        Err(e) => return unknown("KEDA ScaledObjects", ns, &e),
    };
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    match hpas.list(&lp).await {
        Ok(list) => found.extend(list.items.into_iter().filter_map(|h| {
            let keda = h
                .owner_references()
                .iter()
                .any(|o| o.kind == "ScaledObject" && o.api_version.starts_with("keda.sh/"));
            let t = h.spec.scale_target_ref.clone();
            (!keda).then(|| {
                (
                    "HorizontalPodAutoscaler".to_string(),
                    h.name_any(),
                    ScaleTarget {
                        api_version: t.api_version,
                        kind: t.kind,
                        name: t.name,
                    },
                )
            })
        })),
        Err(e) => return unknown("HorizontalPodAutoscalers", ns, &e),
    }
    match external_for(name, found.iter().map(|(k, n, t)| (k.as_str(), n.as_str(), t))) {
        Some(e) => Lookup::Found(e),
        None => Lookup::NoneFound,
    }
}

fn unknown(what: &str, ns: &str, e: &kube::Error) -> Lookup {
    tracing::warn!(error = %e, namespace = ns, "cannot list {what}; the built-in autoscaler stands back");
    Lookup::Unknown(format!(
        "cannot list {what} in {ns} ({e}): the built-in autoscaler stands back until it can tell whether one scales this ChatAgent"
    ))
}
