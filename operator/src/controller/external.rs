//! Reads the HPAs and KEDA ScaledObjects of a ChatAgent's namespace, so that the built-in
//! autoscaler yields to one that scales the same ChatAgent instead of fighting it.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client, ResourceExt};

use crate::autoscale::{External, ScaleTarget, external_for};

/// The autoscaler of the cluster's that targets ChatAgent `name` in `ns`, if any. A namespace
/// without KEDA's CRD has no ScaledObjects; any other failure to list is an error (the
/// reconcile retries rather than scale against an autoscaler it could not see).
pub async fn external_autoscaler(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<External>, kube::Error> {
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    let mut found: Vec<(String, String, ScaleTarget)> = hpas
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|h| {
            let t = h.spec.as_ref()?.scale_target_ref.clone();
            Some((
                "HorizontalPodAutoscaler".to_string(),
                h.name_any(),
                ScaleTarget {
                    api_version: t.api_version,
                    kind: t.kind,
                    name: t.name,
                },
            ))
        })
        .collect();
    let gvk = GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "scaledobjects");
    let scaled: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    match scaled.list(&ListParams::default()).await {
        Ok(list) => found.extend(list.items.into_iter().filter_map(|o| {
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
        })),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e),
    }
    Ok(external_for(
        name,
        found.iter().map(|(k, n, t)| (k.as_str(), n.as_str(), t)),
    ))
}
