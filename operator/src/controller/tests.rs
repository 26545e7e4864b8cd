//! Reconcile scenarios against a mocked API server (kube-rs controller-rs style): every
//! request the controller makes is checked for method, URI and body, and answered.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use meshchat_crds::{
    AutoscalingSpec, ChatAgent, ChatAgentSpec, ClientCertSecretRef, CredentialsSecretRef, SaslMechanism,
    SaslSpec, SecretKeyRef, TlsSpec,
};
use serde_json::{Value, json};

use super::*;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Plays the API server: each call checks one expected request and answers it.
struct ApiServerVerifier(Handle);

impl ApiServerVerifier {
    /// Expects `method` on `path` (the URI without its query) whose query contains `query`;
    /// answers `status` with `reply(body)`. Returns the request body.
    async fn expect(
        &mut self,
        method: Method,
        path: &str,
        query: &str,
        status: StatusCode,
        reply: impl FnOnce(&Value) -> Value,
    ) -> Value {
        let (request, send) = self
            .0
            .next_request()
            .await
            .expect("the controller made a request");
        assert_eq!(request.method(), method, "{}", request.uri());
        assert_eq!(request.uri().path(), path);
        let q = request.uri().query().unwrap_or_default().to_string();
        assert!(q.contains(query), "query {q:?} lacks {query:?}");
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("json body")
        };
        let answer = serde_json::to_vec(&reply(&body)).expect("reply");
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(answer))
                .expect("response"),
        );
        body
    }

    /// Expects the server-side apply of one child; answers with the applied object.
    async fn apply(&mut self, path: &str, kind: &str, name: &str) -> Value {
        let body = self
            .expect(
                Method::PATCH,
                path,
                "fieldManager=meshchat-operator",
                StatusCode::OK,
                |b| b.clone(),
            )
            .await;
        assert_eq!(
            (body["kind"].as_str(), body["metadata"]["name"].as_str()),
            (Some(kind), Some(name))
        );
        assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "ChatAgent");
        body
    }

    /// The six children of ChatAgent `support` in `team-a`, in order, and the mesh secret's
    /// create (which finds it there already).
    async fn children(&mut self) -> Value {
        self.children_creating(false).await
    }

    /// The children; `first`: the mesh secret does not exist yet.
    async fn children_creating(&mut self, first: bool) -> Value {
        let ns = "/api/v1/namespaces/team-a";
        self.apply(
            &format!("{ns}/serviceaccounts/support-worker"),
            "ServiceAccount",
            "support-worker",
        )
        .await;
        self.apply(
            &format!("{ns}/configmaps/support-config"),
            "ConfigMap",
            "support-config",
        )
        .await;
        self.apply(
            &format!("{ns}/services/support-peers"),
            "Service",
            "support-peers",
        )
        .await;
        self.apply(&format!("{ns}/services/support"), "Service", "support")
            .await;
        self.apply(
            "/apis/policy/v1/namespaces/team-a/poddisruptionbudgets/support",
            "PodDisruptionBudget",
            "support",
        )
        .await;
        let (status, reply) = if first {
            (StatusCode::CREATED, None)
        } else {
            let exists = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "AlreadyExists", "code": 409, "message": "secrets \"support-mesh\" already exists"});
            (StatusCode::CONFLICT, Some(exists))
        };
        let secret = self
            .expect(Method::POST, &format!("{ns}/secrets"), "", status, |b| {
                reply.unwrap_or_else(|| b.clone())
            })
            .await;
        assert_eq!(secret["metadata"]["name"], "support-mesh");
        assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "ChatAgent");
        let value = secret["data"]["secret"].as_str().unwrap_or_default();
        // 32 random bytes, base64url, base64-encoded again as Secret data
        assert!(value.len() >= 56, "{value}");
        self.apply(
            "/apis/apps/v1/namespaces/team-a/statefulsets/support",
            "StatefulSet",
            "support",
        )
        .await
    }

    async fn status(&mut self) -> Value {
        let body = self
            .expect(
                Method::PATCH,
                "/apis/meshchat.io/v1alpha1/namespaces/team-a/chatagents/support/status",
                "fieldManager=meshchat-operator",
                StatusCode::OK,
                |b| json!({"apiVersion": "meshchat.io/v1alpha1", "kind": "ChatAgent", "metadata": {"name": "support", "namespace": "team-a"}, "spec": {}, "status": b["status"].clone()}),
            )
            .await;
        body["status"].clone()
    }

    /// Expects the lookups of autoscalers in team-a, from the API server's cache: KEDA's
    /// ScaledObjects not served (its CRD is not installed), then `hpas` listed.
    async fn autoscalers(&mut self, hpas: Value) {
        self.expect(
            Method::GET,
            "/apis/keda.sh/v1alpha1/namespaces/team-a/scaledobjects",
            "resourceVersion=0",
            StatusCode::NOT_FOUND,
            |_| json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"}),
        )
        .await;
        self.expect(
            Method::GET,
            "/apis/autoscaling/v2/namespaces/team-a/horizontalpodautoscalers",
            "resourceVersion=0",
            StatusCode::OK,
            |_| json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList", "metadata": {}, "items": hpas}),
        )
        .await;
    }

    async fn event(&mut self) -> Value {
        self.expect(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/team-a/events",
            "",
            StatusCode::CREATED,
            |b| b.clone(),
        )
        .await
    }
}

fn agent() -> ChatAgent {
    let mut spec: ChatAgentSpec = serde_json::from_str("{}").expect("defaults");
    spec.kafka.partitions = 4;
    let mut a = ChatAgent::new("support", spec);
    a.metadata.namespace = Some("team-a".into());
    a.metadata.uid = Some("uid-1".into());
    a.metadata.generation = Some(1);
    a
}

/// `support` with the built-in autoscaler on, 4 to 8 replicas (it runs 3).
fn autoscaled_agent() -> ChatAgent {
    let mut a = agent();
    a.spec.autoscaling = Some(AutoscalingSpec {
        enabled: true,
        min_replicas: 4,
        max_replicas: 8,
        target_load: 0.6,
        scale_down_stabilization_seconds: 300,
    });
    a
}

fn context() -> (Arc<Context>, ApiServerVerifier) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Context::new(
        client,
        Settings::default(),
        Supervisor::dry(),
        Metrics::default(),
        Reporter {
            controller: MANAGER.into(),
            instance: None,
        },
    );
    (Arc::new(ctx), ApiServerVerifier(handle))
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .expect("condition")
}

#[tokio::test]
async fn a_new_agent_gets_its_children_a_balancer_and_a_status() {
    let (ctx, mut api) = context();
    let a = Arc::new(agent());
    let verifier = tokio::spawn(async move {
        let sts = api.children_creating(true).await;
        assert_eq!(sts["spec"]["replicas"], 3);
        assert_eq!(sts["spec"]["serviceName"], "support-peers");
        api.status().await
    });
    let action = reconcile(a, ctx.clone()).await.expect("reconciled");
    assert_eq!(action, Action::requeue(RESYNC));
    let status = verifier.await.expect("verifier");
    assert_eq!(
        status["selector"],
        "app.kubernetes.io/instance=support,app.kubernetes.io/name=meshchat-worker"
    );
    assert_eq!(condition(&status, "Ready")["reason"], "WorkersNotReady");
    assert_eq!(condition(&status, "KafkaReachable")["status"], "Unknown");
    let settings = ctx
        .supervisor
        .settings("team-a/support")
        .expect("a balancer for the agent");
    assert_eq!(settings.bootstrap, "kafka:9092");
    assert_eq!(settings.topics.messages, "chat.messages");
    assert!(settings.client.is_empty());
}

#[tokio::test]
async fn an_unchanged_status_is_not_written_again() {
    let (ctx, mut api) = context();
    let first = tokio::spawn(async move {
        api.children().await;
        let s = api.status().await;
        (api, s)
    });
    reconcile(Arc::new(agent()), ctx.clone()).await.expect("first");
    let (mut api, status) = first.await.expect("verifier");
    let mut settled = agent();
    settled.status = Some(serde_json::from_value(status).expect("status"));
    let second = tokio::spawn(async move {
        api.children().await;
        api
    });
    reconcile(Arc::new(settled), ctx.clone()).await.expect("second");
    let mut api = second.await.expect("verifier");
    drop(ctx);
    assert!(
        api.0.next_request().await.is_none(),
        "no status write when nothing changed"
    );
}

#[tokio::test]
async fn a_failing_api_server_backs_off_per_agent() {
    let (ctx, mut api) = context();
    let verifier = tokio::spawn(async move {
        let ns = "/api/v1/namespaces/team-a";
        api.apply(
            &format!("{ns}/serviceaccounts/support-worker"),
            "ServiceAccount",
            "support-worker",
        )
        .await;
        api.expect(Method::PATCH, &format!("{ns}/configmaps/support-config"), "", StatusCode::INTERNAL_SERVER_ERROR, |_| {
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd is sad", "reason": "InternalError", "code": 500})
        })
        .await;
    });
    let a = Arc::new(agent());
    let err = reconcile(a.clone(), ctx.clone())
        .await
        .expect_err("the ConfigMap failed");
    verifier.await.expect("verifier");
    assert!(
        matches!(err, Error::Kube(kube::Error::Api(ref s)) if s.code == 500),
        "{err}"
    );
    assert_eq!(
        error_policy(a.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(
        error_policy(a.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(2))
    );
    assert_eq!(
        error_policy(a, &err, ctx.clone()),
        Action::requeue(Duration::from_secs(4))
    );
    assert!(
        ctx.metrics
            .encode()
            .contains("meshchat_operator_reconciles_total{outcome=\"kube\"} 1")
    );
    assert_eq!(backoff(30), Duration::from_secs(300));
}

#[tokio::test]
async fn autoscaling_sets_replicas_through_the_scale_subresource() {
    let (ctx, mut api) = context();
    let a = autoscaled_agent();
    let verifier = tokio::spawn(async move {
        api.children().await;
        api.autoscalers(json!([])).await;
        let scale = api
            .expect(Method::PATCH, "/apis/meshchat.io/v1alpha1/namespaces/team-a/chatagents/support/scale", "", StatusCode::OK, |b| {
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "support", "namespace": "team-a"}, "spec": {"replicas": b["spec"]["replicas"].clone()}})
            })
            .await;
        let event = api.event().await;
        api.status().await;
        (scale, event)
    });
    reconcile(Arc::new(a), ctx.clone()).await.expect("reconciled");
    let (scale, event) = verifier.await.expect("verifier");
    assert_eq!(
        scale,
        json!({"spec": {"replicas": 4}}),
        "below minReplicas: raised to it"
    );
    assert_eq!(
        (event["reason"].as_str(), event["type"].as_str()),
        (Some("Scaled"), Some("Normal"))
    );
    assert!(
        event["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("replicas 3 -> 4")),
        "{event}"
    );
    assert!(
        ctx.metrics
            .encode()
            .contains("meshchat_operator_scalings_total 1")
    );
}

#[tokio::test]
async fn the_builtin_autoscaler_yields_to_an_hpa_on_the_same_chatagent() {
    let (ctx, mut api) = context();
    let a = autoscaled_agent();
    let hpa = |name: &str, api_version: &str, kind: &str, target: &str| json!({"metadata": {"name": name, "namespace": "team-a"}, "spec": {"maxReplicas": 10, "scaleTargetRef": {"apiVersion": api_version, "kind": kind, "name": target}}});
    let hpas = json!([
        hpa("web", "apps/v1", "Deployment", "support"),
        hpa("other", "meshchat.io/v1alpha1", "ChatAgent", "sales"),
        hpa("support-load", "meshchat.io/v1alpha1", "ChatAgent", "support"),
    ]);
    // KEDA's own HPA for a ScaledObject is not what is named (the ScaledObject would be)
    let mut keda = hpa("keda-hpa-x", "meshchat.io/v1alpha1", "ChatAgent", "support");
    keda["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": "x", "uid": "u"}]);
    let hpas = json!([keda, hpas[0], hpas[1], hpas[2]]);
    let verifier = tokio::spawn(async move {
        api.children().await;
        api.autoscalers(hpas).await;
        // no /scale patch: below minReplicas, yet the HPA decides
        let event = api.event().await;
        let status = api.status().await;
        (event, status)
    });
    reconcile(Arc::new(a), ctx.clone()).await.expect("reconciled");
    let (event, status) = verifier.await.expect("verifier");
    assert_eq!(
        (event["reason"].as_str(), event["action"].as_str()),
        (Some("AutoscalingYielded"), Some("Autoscale"))
    );
    assert!(
        event["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("HorizontalPodAutoscaler support-load scales")),
        "{event}"
    );
    assert_eq!(
        (
            event["related"]["kind"].as_str(),
            event["related"]["name"].as_str()
        ),
        (Some("HorizontalPodAutoscaler"), Some("support-load")),
        "the Event names the autoscaler it yields to"
    );
    let yielded = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "ExternalAutoscaler"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (yielded["status"].as_str(), yielded["reason"].as_str()),
        (Some("True"), Some("HorizontalPodAutoscaler")),
        "{status}"
    );
    assert!(
        ctx.metrics
            .encode()
            .contains("meshchat_operator_scalings_total 0")
    );
}

#[tokio::test]
async fn an_autoscaler_lookup_refused_by_rbac_holds_the_builtin_autoscaler_back_without_failing() {
    let (ctx, mut api) = context();
    let verifier = tokio::spawn(async move {
        api.children().await;
        api.expect(
            Method::GET,
            "/apis/keda.sh/v1alpha1/namespaces/team-a/scaledobjects",
            "",
            StatusCode::FORBIDDEN,
            |_| json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403, "message": "scaledobjects.keda.sh is forbidden"}),
        )
        .await;
        // no /scale patch (the mesh is below minReplicas), and the status is written
        api.status().await
    });
    reconcile(Arc::new(autoscaled_agent()), ctx.clone())
        .await
        .expect("reconciled despite the refusal");
    let status = verifier.await.expect("verifier");
    let c = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "ExternalAutoscaler"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("Unknown"), Some("CannotTell")),
        "{status}"
    );
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot list KEDA ScaledObjects in team-a")),
        "{c}"
    );
}

#[tokio::test]
async fn a_missing_credentials_secret_degrades_the_agent_with_an_event() {
    let (ctx, mut api) = context();
    let mut a = agent();
    a.spec.kafka.sasl = Some(SaslSpec {
        mechanism: SaslMechanism::ScramSha256,
        credentials_secret_ref: CredentialsSecretRef {
            name: "kafka-user".into(),
            username: None,
            username_key: "username".into(),
            password_key: "password".into(),
        },
    });
    let verifier = tokio::spawn(async move {
        api.children().await;
        api.expect(Method::GET, "/api/v1/namespaces/team-a/secrets/kafka-user", "", StatusCode::NOT_FOUND, |_| {
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "secrets \"kafka-user\" not found", "reason": "NotFound", "code": 404})
        })
        .await;
        let event = api.event().await;
        (event, api.status().await)
    });
    reconcile(Arc::new(a), ctx.clone())
        .await
        .expect("reconciled: a status says what is wrong");
    let (event, status) = verifier.await.expect("verifier");
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("SecretUnavailable"))
    );
    let degraded = condition(&status, "Degraded");
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("SecretUnavailable"))
    );
    assert_eq!(degraded["message"], "Secret kafka-user not found");
    assert!(
        ctx.supervisor.settings("team-a/support").is_none(),
        "no balancer without credentials"
    );
}

/// A Strimzi KafkaUser's Secrets as they come: SCRAM (the Secret, named after the user, holds
/// `password`; the username is the user's name) over TLS with the cluster CA, and a client
/// certificate (`user.crt`, `user.key`). The balancer reads each key; nothing else is read.
#[tokio::test]
async fn strimzi_user_secrets_become_the_balancers_client_settings() {
    let (ctx, mut api) = context();
    let mut a = agent();
    a.spec.kafka.sasl = Some(SaslSpec {
        mechanism: SaslMechanism::ScramSha512,
        credentials_secret_ref: CredentialsSecretRef {
            name: "support-user".into(),
            username: Some("support-user".into()),
            username_key: "username".into(),
            password_key: "password".into(),
        },
    });
    a.spec.kafka.tls = Some(TlsSpec {
        ca_secret_ref: Some(SecretKeyRef {
            name: "my-cluster-cluster-ca-cert".into(),
            key: "ca.crt".into(),
        }),
        client_cert_secret_ref: Some(ClientCertSecretRef {
            name: "support-tls-user".into(),
            cert_key: "user.crt".into(),
            key_key: "user.key".into(),
        }),
    });
    let secret = |name: &str, data: Value| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "team-a"}, "data": data});
    let b64 = |t: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, t);
    let verifier = tokio::spawn(async move {
        api.children().await;
        let ns = "/api/v1/namespaces/team-a/secrets";
        let user = secret(
            "support-user",
            json!({"password": b64("s3cret"), "sasl.jaas.config": b64("x")}),
        );
        api.expect(
            Method::GET,
            &format!("{ns}/support-user"),
            "",
            StatusCode::OK,
            |_| user,
        )
        .await;
        let ca = secret("my-cluster-cluster-ca-cert", json!({"ca.crt": b64("CA PEM")}));
        api.expect(
            Method::GET,
            &format!("{ns}/my-cluster-cluster-ca-cert"),
            "",
            StatusCode::OK,
            |_| ca,
        )
        .await;
        let tls = secret(
            "support-tls-user",
            json!({"user.crt": b64("CERT PEM"), "user.key": b64("KEY PEM")}),
        );
        for _ in 0..2 {
            let tls = tls.clone();
            api.expect(
                Method::GET,
                &format!("{ns}/support-tls-user"),
                "",
                StatusCode::OK,
                |_| tls,
            )
            .await;
        }
        api.status().await
    });
    reconcile(Arc::new(a), ctx.clone()).await.expect("reconciled");
    let status = verifier.await.expect("verifier");
    assert_ne!(condition(&status, "Degraded")["reason"], "SecretUnavailable");
    let settings = ctx.supervisor.settings("team-a/support").expect("a balancer");
    let get = |k: &str| {
        settings
            .client
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("security.protocol"), Some("SASL_SSL"));
    assert_eq!(get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    assert_eq!(get("sasl.username"), Some("support-user"));
    assert_eq!(get("sasl.password"), Some("s3cret"));
    assert_eq!(get("ssl.ca.pem"), Some("CA PEM"));
    assert_eq!(get("ssl.certificate.pem"), Some("CERT PEM"));
    assert_eq!(get("ssl.key.pem"), Some("KEY PEM"));
    assert_eq!(get("ssl.ca.location"), None, "no pod paths for the balancer");
}
