use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/auth");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
}

fn settings() -> JwtSettings {
    JwtSettings {
        jwks_file: None,
        jwks_url: None,
        issuer: "https://idp.test".into(),
        audience: "meshchat".into(),
        claims: ClaimNames::default(),
        leeway: Duration::from_secs(30),
    }
}

fn verifier() -> JwtVerifier {
    JwtVerifier::from_jwks(&settings(), &fixture("jwks.test-only.json")).expect("jwks")
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn claims(extra: Value) -> Value {
    let mut c = json!({
        "iss": "https://idp.test", "aud": "meshchat", "exp": now() + 300, "nbf": now() - 10,
        "sub": "alice", "tenant": "acme", "role": "user",
    });
    if let (Some(c), Value::Object(e)) = (c.as_object_mut(), extra) {
        c.extend(e);
    }
    c
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(&fixture("hs256.test-only.secret")),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&fixture("rs256.test-only.pem")).expect("rsa"),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&fixture("es256.test-only.pem")).expect("ec"),
        _ => panic!("unused"),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

fn alice() -> Identity {
    Identity {
        tenant: "acme".into(),
        user: "alice".into(),
        role: Role::User,
    }
}

#[tokio::test]
async fn hs256_rs256_and_es256_tokens_name_their_caller() {
    let v = verifier();
    for (alg, kid) in [
        (Algorithm::HS256, "hs-test"),
        (Algorithm::RS256, "rs-test"),
        (Algorithm::ES256, "es-test"),
    ] {
        let token = sign(alg, Some(kid), &claims(json!({})));
        assert_eq!(v.verify(&token).await.expect("valid"), alice(), "{alg:?}");
        // without a kid, the keys of the token's algorithm are tried
        let token = sign(alg, None, &claims(json!({})));
        assert_eq!(
            v.verify(&token).await.expect("valid"),
            alice(),
            "{alg:?} without kid"
        );
    }
}

#[tokio::test]
async fn expired_early_foreign_and_forged_tokens_are_refused() {
    let v = verifier();
    let cases = [
        ("expired", claims(json!({"exp": now() - 120}))),
        ("not yet valid", claims(json!({"nbf": now() + 120}))),
        ("wrong audience", claims(json!({"aud": "someone-else"}))),
        ("wrong issuer", claims(json!({"iss": "https://evil.test"}))),
        ("no tenant", claims(json!({"tenant": null}))),
        ("tenant with a slash", claims(json!({"tenant": "acme/x"}))),
    ];
    for (what, c) in cases {
        let token = sign(Algorithm::RS256, Some("rs-test"), &c);
        assert!(v.verify(&token).await.is_err(), "{what} was accepted");
    }
    // no exp at all
    let mut c = claims(json!({}));
    c.as_object_mut().expect("object").remove("exp");
    assert!(
        v.verify(&sign(Algorithm::HS256, Some("hs-test"), &c))
            .await
            .is_err()
    );
    // signed by a key the JWKS does not list, under a listed kid
    let other = EncodingKey::from_rsa_pem(&fixture("rs256-other.test-only.pem")).expect("rsa");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rs-test".into());
    let forged = jsonwebtoken::encode(&header, &claims(json!({})), &other).expect("sign");
    assert!(v.verify(&forged).await.is_err(), "forged token accepted");
    // an HS256 token whose secret is the RSA key's public material (alg confusion)
    let token = sign(Algorithm::HS256, Some("rs-test"), &claims(json!({})));
    assert!(v.verify(&token).await.is_err(), "alg confusion accepted");
    // unsigned
    let unsigned = format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","typ":"JWT"}"#),
        base64_url(claims(json!({})).to_string().as_bytes())
    );
    assert!(v.verify(&unsigned).await.is_err(), "alg none accepted");
}

#[tokio::test]
async fn the_leeway_allows_small_clock_skew() {
    let v = verifier();
    let token = sign(
        Algorithm::HS256,
        Some("hs-test"),
        &claims(json!({"exp": now() - 5})),
    );
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn roles_come_from_a_string_or_a_list_and_default_to_user() {
    let v = verifier();
    let role_of = |c: Value| {
        let v = v.clone();
        async move {
            v.verify(&sign(Algorithm::HS256, Some("hs-test"), &claims(c)))
                .await
                .expect("valid")
                .role
        }
    };
    assert_eq!(role_of(json!({"role": "admin"})).await, Role::Admin);
    assert_eq!(
        role_of(json!({"role": ["offline_access", "admin", "user"]})).await,
        Role::Admin
    );
    assert_eq!(role_of(json!({"role": null})).await, Role::User);
    assert_eq!(role_of(json!({"role": "superuser"})).await, Role::User);
}

#[tokio::test]
async fn claim_names_are_configurable_and_dotted_names_reach_into_objects() {
    let mut s = settings();
    s.claims = ClaimNames {
        tenant: "org.id".into(),
        user: "email_id".into(),
        role: "org.role".into(),
    };
    let v = JwtVerifier::from_jwks(&s, &fixture("jwks.test-only.json")).expect("jwks");
    let c = claims(json!({"org": {"id": "globex", "role": "admin"}, "email_id": "bob"}));
    let who = v
        .verify(&sign(Algorithm::ES256, Some("es-test"), &c))
        .await
        .expect("valid");
    assert_eq!(
        who,
        Identity {
            tenant: "globex".into(),
            user: "bob".into(),
            role: Role::Admin
        }
    );
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn entry(tenant: &str, user: &str, role: Role, key: &str) -> ApiKeyEntry {
    ApiKeyEntry {
        id: None,
        tenant: tenant.into(),
        user: user.into(),
        role,
        sha256: hash_key_hex(key),
    }
}

#[tokio::test]
async fn api_keys_are_looked_up_by_hash() {
    let keys = ApiKeys::from_entries(&[
        entry("acme", "alice", Role::User, "key-a"),
        entry("acme", "root", Role::Admin, "key-b"),
    ])
    .expect("keys");
    let auth = Authenticator::from_parts(false, Some(keys), None, Tickets::new(Some("s")).expect("t"));
    assert_eq!(auth.bearer("key-a").await.expect("known"), alice());
    assert_eq!(auth.bearer("key-b").await.expect("known").role, Role::Admin);
    assert!(auth.bearer("key-c").await.is_err());
    assert!(matches!(auth.bearer("").await, Err(AuthError::Missing)));
    // a key is never a JWT and the reverse: a JWT-looking string with no JWKS is a key lookup
    assert!(auth.bearer("eyJhbGciOi.x.y").await.is_err());
}

#[test]
fn a_bad_keys_file_names_the_entry_and_field() {
    let dup = [
        entry("acme", "a", Role::User, "same"),
        entry("acme", "b", Role::User, "same"),
    ];
    let e = ApiKeys::from_entries(&dup)
        .err()
        .expect("duplicate refused")
        .to_string();
    assert!(e.contains("keys[1].sha256"), "{e}");
    let mut bad = entry("acme", "a", Role::User, "k");
    bad.sha256 = "not-hex".into();
    let e = ApiKeys::from_entries(&[bad]).err().expect("bad hash").to_string();
    assert!(e.contains("keys[0].sha256"), "{e}");
    let bad = entry("acme/x", "a", Role::User, "k");
    let e = ApiKeys::from_entries(&[bad])
        .err()
        .expect("bad tenant")
        .to_string();
    assert!(e.contains("keys[0].tenant"), "{e}");
}

#[tokio::test]
async fn a_changed_keys_file_is_picked_up_and_a_broken_one_ignored() {
    let dir = std::env::temp_dir().join(format!("meshchat-keys-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("keys.yaml");
    let write = |entries: &[(&str, &str)]| {
        let mut text = String::from("keys:\n");
        for (user, key) in entries {
            text += &format!(
                "  - tenant: acme\n    user: {user}\n    role: user\n    sha256: {}\n",
                hash_key_hex(key)
            );
        }
        std::fs::write(&path, text).expect("write");
    };
    write(&[("alice", "old-key")]);
    let stop = tokio_util::sync::CancellationToken::new();
    let keys = ApiKeys::watch(path.clone(), stop.clone()).expect("load");
    assert!(keys.lookup("old-key").is_ok());
    // rotation: add the new key, then remove the old one
    write(&[("alice", "old-key"), ("alice", "new-key")]);
    wait(|| keys.lookup("new-key").is_ok()).await;
    write(&[("alice", "new-key")]);
    wait(|| keys.lookup("old-key").is_err()).await;
    // a broken file keeps the keys in force
    std::fs::write(&path, "keys: [ {tenant: ").expect("write");
    tokio::time::sleep(source::POLL * 3).await;
    assert!(keys.lookup("new-key").is_ok());
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

async fn wait(f: impl Fn() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the watcher did not pick the change up in 10 s");
}

#[test]
fn tickets_stand_for_their_caller_on_every_worker_of_the_mesh_only() {
    let a = Tickets::new(Some("mesh-secret")).expect("tickets");
    let b = Tickets::new(Some("mesh-secret")).expect("tickets");
    let other = Tickets::new(Some("another-mesh")).expect("tickets");
    let (ticket, ttl) = a.issue(&alice()).expect("issue");
    assert_eq!(ttl, TICKET_TTL.as_secs());
    assert_eq!(b.verify(&ticket).expect("same mesh"), alice());
    assert!(other.verify(&ticket).is_err());
    // a ticket is not a bearer credential: the JWT verifier does not know its key
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
    assert!(rt.block_on(verifier().verify(&ticket)).is_err());
}

#[tokio::test]
async fn a_verified_token_is_remembered_until_the_keys_change_and_expired_ones_never() {
    let dir = std::env::temp_dir().join(format!("meshchat-jwks-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("jwks.json");
    std::fs::write(&path, fixture("jwks.test-only.json")).expect("write");
    let mut s = settings();
    s.jwks_file = Some(path.clone());
    s.leeway = Duration::ZERO;
    let stop = tokio_util::sync::CancellationToken::new();
    let v = JwtVerifier::start(s, stop.clone()).await.expect("start");
    let token = sign(Algorithm::RS256, Some("rs-test"), &claims(json!({})));
    assert_eq!(v.verify(&token).await.expect("valid"), alice());
    assert_eq!(v.verify(&token).await.expect("remembered"), alice());
    // the provider withdraws the RSA key: the remembered token is verified again, and refused
    let only_hs: Value = serde_json::from_slice(&fixture("jwks.test-only.json")).expect("json");
    let hs: Vec<Value> = only_hs["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["kty"] == "oct")
        .cloned()
        .collect();
    std::fs::write(&path, json!({"keys": hs}).to_string()).expect("write");
    let mut refused = false;
    for _ in 0..100 {
        if v.verify(&token).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "a withdrawn key's token was still accepted after 10 s");
    // a token about to expire is remembered only until its exp
    let short = sign(
        Algorithm::HS256,
        Some("hs-test"),
        &claims(json!({"exp": now() + 1})),
    );
    assert!(v.verify(&short).await.is_ok());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(v.verify(&short).await.is_err(), "expired, remembered or not");
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
#[ignore = "timing probe, run by hand: cargo test --release -p meshchat-worker --lib verify_cost -- --ignored --nocapture"]
async fn verify_cost() {
    let v = verifier();
    let token = sign(Algorithm::RS256, Some("rs-test"), &claims(json!({})));
    let n = 20_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        v.verify(&token).await.expect("valid");
    }
    println!(
        "RS256 remembered: {:.2} µs per verify",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
    let keys = ApiKeys::from_entries(&[entry("acme", "alice", Role::User, "key-a")]).expect("keys");
    let t = std::time::Instant::now();
    for _ in 0..n {
        keys.lookup("key-a").expect("known");
    }
    println!(
        "API key: {:.2} µs per lookup",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
}
