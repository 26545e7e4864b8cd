//! The librdkafka settings of an agent's balancer: the workers' (`children::kafka_properties`,
//! without the pods' file paths) plus the credentials and certificates of the Secrets the
//! ChatAgent names, as PEM — read through the API server under the operator, from a directory
//! laid out as Kubernetes mounts a Secret (`<dir>/<secret>/<key>`) under
//! `meshchat-operator local --secrets-dir`.

use std::future::Future;
use std::path::Path;

use meshchat_crds::ChatAgent;

use crate::children;

/// The balancer's client settings for `agent`; `read(secret, key)` gives a Secret's value.
pub async fn balancer_properties<F, Fut>(agent: &ChatAgent, read: F) -> Result<Vec<(String, String)>, String>
where
    F: Fn(String, String) -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let mut props = children::kafka_properties(agent, false);
    let kafka = &agent.spec.kafka;
    if let Some(sasl) = &kafka.sasl {
        let c = &sasl.credentials_secret_ref;
        let username = match &c.username {
            Some(user) => user.clone(),
            None => read(c.name.clone(), c.username_key.clone()).await?,
        };
        props.push(("sasl.username".into(), username));
        props.push((
            "sasl.password".into(),
            read(c.name.clone(), c.password_key.clone()).await?,
        ));
    }
    let tls = kafka.tls.as_ref();
    if let Some(ca) = tls.and_then(|t| t.ca_secret_ref.as_ref()) {
        props.push(("ssl.ca.pem".into(), read(ca.name.clone(), ca.key.clone()).await?));
    }
    if let Some(cert) = tls.and_then(|t| t.client_cert_secret_ref.as_ref()) {
        props.push((
            "ssl.certificate.pem".into(),
            read(cert.name.clone(), cert.cert_key.clone()).await?,
        ));
        props.push((
            "ssl.key.pem".into(),
            read(cert.name.clone(), cert.key_key.clone()).await?,
        ));
    }
    Ok(props)
}

/// `<dir>/<secret>/<key>`, as a Secret volume holds it; without a directory, a message saying
/// how to give one.
pub async fn read_secret_file(dir: Option<&Path>, secret: String, key: String) -> Result<String, String> {
    let Some(dir) = dir else {
        return Err(format!(
            "spec.kafka names Secret {secret} (key {key}): give --secrets-dir DIR with the file \
             DIR/{secret}/{key}, as Kubernetes mounts a Secret"
        ));
    };
    let path = dir.join(&secret).join(&key);
    tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| format!("Secret {secret} key {key}: reading {}: {e}", path.display()))
}
