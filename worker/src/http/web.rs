//! The web pages every worker serves: the chat page at `/`, the mesh page at `/mesh`, and their
//! assets under `/assets/`. Plain HTML, CSS and JavaScript modules embedded in the binary
//! (`worker/web/`): no build step, nothing fetched from elsewhere at run time. The pages are
//! public; every call they make for data carries the signed-in user's token.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ChatService;
use super::error::AppError;

#[derive(rust_embed::Embed)]
#[folder = "web/"]
struct Assets;

/// `GET /`: the chat page.
pub async fn chat_page<S: ChatService>(State(s): State<Arc<S>>, headers: HeaderMap) -> Response {
    page(&*s, "index.html", &headers)
}

/// `GET /mesh`: the mesh page (its data needs an admin's or the operator's token).
pub async fn mesh_page<S: ChatService>(State(s): State<Arc<S>>, headers: HeaderMap) -> Response {
    page(&*s, "mesh.html", &headers)
}

/// `GET /assets/{*path}`: the pages' scripts, style sheet and icon.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    if path.ends_with(".html") {
        return AppError::NotFound("no such asset".into()).into_response();
    }
    serve(&path, &headers, None)
}

fn page<S: ChatService>(s: &S, name: &str, headers: &HeaderMap) -> Response {
    serve(name, headers, Some(policy(s)))
}

/// The pages' Content-Security-Policy: scripts, styles and everything else from this worker
/// only; API calls and live streams also to the other workers of the mesh (a page goes on at
/// another when its worker is gone).
fn policy<S: ChatService>(s: &S) -> String {
    let others = s.mesh_origins();
    if others.is_empty() {
        return SELF_ONLY.to_string();
    }
    SELF_ONLY.replacen(
        "connect-src 'self'",
        &format!("connect-src 'self' {}", others.join(" ")),
        1,
    )
}

/// The policy with this worker alone.
const SELF_ONLY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// An embedded file, revalidated by its hash (the paths carry no version).
fn serve(path: &str, headers: &HeaderMap, csp: Option<String>) -> Response {
    let Some(file) = Assets::get(path) else {
        return AppError::NotFound("no such asset".into()).into_response();
    };
    let hash = file.metadata.sha256_hash();
    let etag = format!(
        "\"{}\"",
        hash.iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == "*")
        });
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = file.data.into_owned().into_response();
        if let Ok(v) = HeaderValue::from_str(file.metadata.mimetype()) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Some(csp) = csp {
        // an address that cannot be a header value leaves the others out, never the policy
        let csp = HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static(SELF_ONLY));
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages' own JavaScript and CSS stay light: at most 200 KB uncompressed in all.
    #[test]
    fn scripts_and_styles_weigh_at_most_200_kb() {
        let total: usize = Assets::iter()
            .filter(|p| p.ends_with(".js") || p.ends_with(".css"))
            .filter_map(|p| Assets::get(&p).map(|f| f.data.len()))
            .sum();
        println!("the pages' JavaScript and CSS: {total} bytes");
        assert!(total > 10_000, "the assets are embedded: {total} bytes");
        assert!(total <= 200 * 1024, "{total} bytes of JavaScript and CSS");
    }

    /// Every module a page imports is embedded (a missing one breaks the page silently).
    #[test]
    fn every_imported_module_is_embedded() {
        for p in Assets::iter().filter(|p| p.ends_with(".js") || p.ends_with(".html")) {
            let file = Assets::get(&p).expect("listed");
            let text = String::from_utf8_lossy(&file.data).into_owned();
            let dir = p.rsplit_once('/').map_or("", |(d, _)| d);
            for quoted in text
                .split(['\'', '"'])
                .filter(|q| q.ends_with(".js") || q.ends_with(".css"))
            {
                let target = if let Some(rest) = quoted.strip_prefix("/assets/") {
                    rest.to_string()
                } else if let Some(rest) = quoted.strip_prefix("./") {
                    format!("{dir}/{rest}").trim_start_matches('/').to_string()
                } else {
                    continue;
                };
                assert!(
                    Assets::get(&target).is_some(),
                    "{p} refers to {quoted}, not embedded"
                );
            }
        }
    }

    /// The page model's tests (`worker/web-test/`, node's own test runner).
    #[test]
    fn the_page_model_passes_its_tests() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web-test");
        let out = std::process::Command::new("node")
            .arg("--test")
            .arg(&dir)
            .output()
            .expect("node runs (Node.js is a build requirement of the pages' tests)");
        let text = String::from_utf8_lossy(&out.stdout);
        println!("{text}");
        assert!(out.status.success(), "node --test failed:\n{text}");
        assert!(text.contains("# fail 0"), "{text}");
    }
}
