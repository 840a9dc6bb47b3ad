//! The HTTP face of the store: Kubernetes REST paths, verbs, query
//! parameters and `Status` errors, as a kube-rs client sends and expects
//! them.
//!
//! Paths: `/api/v1/...` (core) and `/apis/{group}/{version}/...`, each
//! either cluster-wide (`/{plural}`, `/{plural}/{name}[/{sub}]`) or in a
//! namespace (`/namespaces/{ns}/{plural}[/{name}[/{sub}]]`). Collections
//! answer `GET` (list, or watch with `watch=true`) and `POST`; objects answer
//! `GET`, `PUT`, `PATCH` and `DELETE`; the subresources are `status` (PUT,
//! PATCH) and `binding` (POST, pods only).

use crate::Shared;
use crate::store::{ApiError, PatchKind, ResourceType, WriteScope, event_line};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// One API call as RBAC sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiCall {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
    /// API group (empty for core).
    pub group: String,
    /// Resource, with `/subresource` when there is one (`pods/binding`).
    pub resource: String,
    /// Namespace of the call, if namespaced.
    pub namespace: Option<String>,
}

/// One request as served, for tests that check the order of calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// The call (verb, group, resource with subresource, namespace).
    pub call: ApiCall,
    /// The object's name, if the request names one.
    pub name: Option<String>,
    /// The HTTP status code answered (200 for a watch that opened).
    pub code: u16,
}

struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn error_response(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, e.status().to_string().into())
}

fn json_response(code: StatusCode, body: Bytes) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn resolve(shared: &Shared, path: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", g, _v, rest @ ..] => (*g, rest),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            ));
        }
    };
    let store = shared.store.lock();
    let lookup = |plural: &str| {
        store.resource_type(group, plural).ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            )
        })
    };
    let owned = |s: &str| Some(s.to_owned());
    let t = match rest {
        ["namespaces", ns, plural, tail @ ..] if store.resource_type(group, plural).is_some() => {
            let rt = lookup(plural)?;
            match tail {
                [] => Target {
                    rt,
                    namespace: owned(ns),
                    name: None,
                    sub: None,
                },
                [name] => Target {
                    rt,
                    namespace: owned(ns),
                    name: owned(name),
                    sub: None,
                },
                [name, sub] => Target {
                    rt,
                    namespace: owned(ns),
                    name: owned(name),
                    sub: owned(sub),
                },
                _ => {
                    return Err(ApiError::new(
                        404,
                        "NotFound",
                        format!("no such path {path}"),
                    ));
                }
            }
        }
        [plural] => Target {
            rt: lookup(plural)?,
            namespace: None,
            name: None,
            sub: None,
        },
        [plural, name] => Target {
            rt: lookup(plural)?,
            namespace: None,
            name: owned(name),
            sub: None,
        },
        [plural, name, sub] => Target {
            rt: lookup(plural)?,
            namespace: None,
            name: owned(name),
            sub: owned(sub),
        },
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("no such path {path}"),
            ));
        }
    };
    if t.name.is_some() && t.rt.namespaced && t.namespace.is_none() {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("{} are namespaced: {path}", t.rt.plural),
        ));
    }
    Ok(t)
}

/// What a write to the object (`None`) or to its `/status` may change.
fn scope(sub: Option<&str>) -> WriteScope {
    if sub.is_some() {
        WriteScope::Status
    } else {
        WriteScope::Main
    }
}

fn verb_of(method: &Method, t: &Target, watch: bool) -> &'static str {
    match (method.as_str(), t.name.is_some()) {
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

/// Takes one from a fault counter; false when it is zero.
fn take_one(n: &std::sync::atomic::AtomicU64) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if path == "/version" {
        return json_response(
            StatusCode::OK,
            Bytes::from_static(br#"{"major":"1","minor":"34","gitVersion":"v1.34.0-strata-fake"}"#),
        );
    }
    if path == "/healthz" || path == "/readyz" || path == "/livez" {
        return (StatusCode::OK, "ok").into_response();
    }
    let q = parse_query(uri.query());
    let watch = q.get("watch").is_some_and(|v| v == "true" || v == "1");
    if shared.unavailable.load(Ordering::SeqCst) {
        return error_response(&ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ));
    }
    let t = match resolve(&shared, &path) {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let verb = verb_of(&method, &t, watch);
    let call = ApiCall {
        verb: verb.to_owned(),
        group: t.rt.group.clone(),
        resource: match &t.sub {
            Some(s) => format!("{}/{s}", t.rt.plural),
            None => t.rt.plural.clone(),
        },
        namespace: t.namespace.clone(),
    };
    shared.calls.lock().insert(call.clone());
    if !watch {
        let lat = shared.latency_us.load(Ordering::Relaxed);
        if lat > 0 {
            tokio::time::sleep(Duration::from_micros(lat)).await;
        }
    }
    let is_write = matches!(verb, "create" | "update" | "patch" | "delete");
    if is_write && take_one(&shared.throttled_writes) {
        // As API Priority and Fairness rejects: 429, Retry-After, nothing
        // processed.
        let secs = shared.retry_after_secs.load(Ordering::SeqCst);
        if let Some(log) = shared.requests.lock().as_mut() {
            log.push(RequestRecord {
                call,
                name: t.name.clone(),
                code: 429,
            });
        }
        let mut status = ApiError::new(
            429,
            "TooManyRequests",
            "too many requests, please try again later",
        )
        .status();
        status["details"] = serde_json::json!({"retryAfterSeconds": secs});
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (header::RETRY_AFTER, secs.to_string()),
            ],
            Bytes::from(status.to_string()),
        )
            .into_response();
    }
    let ns = t.namespace.clone().unwrap_or_default();
    let parse_body = || -> Result<Value, ApiError> {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(400, "BadRequest", format!("invalid JSON body: {e}")))
    };
    let result: Result<(StatusCode, Bytes), ApiError> = (|| match (
        verb,
        t.name.as_deref(),
        t.sub.as_deref(),
    ) {
        ("watch", None, None) => Err(ApiError::new(0, "", "")),
        ("list", None, None) => {
            let limit = q.get("limit").and_then(|l| l.parse().ok());
            let cont = q
                .get("continue")
                .filter(|c| !c.is_empty())
                .map(String::as_str);
            let page = shared
                .store
                .lock()
                .list(&t.rt, t.namespace.as_deref(), limit, cont)?;
            let mut md = json!({"resourceVersion": page.rv.to_string()});
            if let Some(c) = &page.continue_token {
                md["continue"] = json!(c);
                md["remainingItemCount"] = json!(page.remaining);
            }
            let mut out = Vec::with_capacity(
                page.items.iter().map(|o| o.json.len() + 1).sum::<usize>() + 128,
            );
            out.extend_from_slice(
                format!(
                    "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
                    t.rt.kind,
                    t.rt.api_version(),
                    md
                )
                .as_bytes(),
            );
            for (i, o) in page.items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&o.json);
            }
            out.extend_from_slice(b"]}");
            Ok((StatusCode::OK, Bytes::from(out)))
        }
        ("get", Some(name), None) => Ok((
            StatusCode::OK,
            shared.store.lock().get(&t.rt, &ns, name)?.json,
        )),
        ("create", None, None) => Ok((
            StatusCode::CREATED,
            shared
                .store
                .lock()
                .create_from_client(&t.rt, &ns, parse_body()?)?
                .json,
        )),
        ("create", Some(name), Some("binding"))
            if t.rt.plural == "pods" && t.rt.group.is_empty() =>
        {
            let b = parse_body()?;
            let node = b["target"]["name"].as_str().unwrap_or("").to_owned();
            if node.is_empty() {
                return Err(ApiError::new(422, "Invalid", "target.name: Required value"));
            }
            if shared
                .fail_binds
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(ApiError::new(
                    500,
                    "InternalError",
                    "injected binding failure",
                ));
            }
            let uid = b["metadata"]["uid"].as_str();
            let r = shared.store.lock().bind(&ns, name, &node, uid);
            match r {
                Ok(pod) => {
                    shared.bindings.lock().push(crate::BindRecord {
                        uid: pod.value["metadata"]["uid"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned(),
                        pod: format!("{ns}/{name}"),
                        node,
                    });
                    let s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
                    Ok((StatusCode::CREATED, s.to_string().into()))
                }
                Err(e) => {
                    if e.code == 409 {
                        shared.bind_conflicts.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e)
                }
            }
        }
        ("update", Some(_), Some("status") | None) if take_conflict(&shared, &t) => {
            Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} {:?}: the object has been modified; please apply your changes to the latest version and try again (injected)",
                    t.rt.key(),
                    t.name.as_deref().unwrap_or("")
                ),
            ))
        }
        ("update", Some(name), sub @ (None | Some("status"))) => Ok((
            StatusCode::OK,
            shared
                .store
                .lock()
                .update(&t.rt, &ns, name, parse_body()?, scope(sub))?
                .json,
        )),
        ("patch", Some(name), sub @ (None | Some("status"))) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let kind = if ct.starts_with("application/merge-patch+json") {
                PatchKind::Merge
            } else if ct.starts_with("application/strategic-merge-patch+json") {
                PatchKind::Strategic
            } else if ct.starts_with("application/json-patch+json") {
                PatchKind::Json
            } else {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("patch type {ct:?} is not supported by this test server"),
                ));
            };
            Ok((
                StatusCode::OK,
                shared
                    .store
                    .lock()
                    .patch(&t.rt, &ns, name, &parse_body()?, kind, scope(sub))?
                    .json,
            ))
        }
        ("delete", Some(name), None) => {
            let opts: Value = if body.is_empty() {
                Value::Null
            } else {
                parse_body()?
            };
            let uid = opts["preconditions"]["uid"].as_str();
            let rv = opts["preconditions"]["resourceVersion"].as_str();
            Ok((
                StatusCode::OK,
                shared.store.lock().delete(&t.rt, &ns, name, uid, rv)?.json,
            ))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        )),
    })();
    // Faults after a committed binding: the client never learns it worked.
    let is_bind = verb == "create" && t.sub.as_deref() == Some("binding");
    let result = match result {
        Ok(ok) if is_bind && take_one(&shared.ambiguous_binds) => {
            let _ = ok;
            let code = shared.ambiguous_code.load(Ordering::SeqCst) as u16;
            Err(ApiError::new(
                code,
                if code == 504 {
                    "Timeout"
                } else {
                    "InternalError"
                },
                "injected failure after the binding was committed",
            ))
        }
        Ok(ok) if is_bind && take_one(&shared.stalled_binds) => {
            let ms = shared.stall_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(ok)
        }
        other => other,
    };
    let code = match &result {
        Ok((c, _)) => c.as_u16(),
        Err(e) if e.code == 0 => 200,
        Err(e) => e.code,
    };
    if let Some(log) = shared.requests.lock().as_mut() {
        log.push(RequestRecord {
            call,
            name: t.name.clone(),
            code,
        });
    }
    match result {
        Ok((code, body)) => json_response(code, body),
        Err(e) if e.code == 0 => watch_response(&shared, &t, &q),
        Err(e) => error_response(&e),
    }
}

/// Whether this update is one [`crate::FakeApiServer::conflict_next_updates`]
/// asked to refuse (counting it).
fn take_conflict(shared: &Shared, t: &Target) -> bool {
    let key = match &t.sub {
        Some(s) => format!("{}/{s}", t.rt.key()),
        None => t.rt.key(),
    };
    let mut m = shared.update_conflicts.lock();
    match m.get_mut(&key) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

fn watch_response(shared: &Arc<Shared>, t: &Target, q: &HashMap<String, String>) -> Response {
    let from = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .map(|v| v.parse::<u64>());
    let from = match from {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return error_response(&ApiError::new(400, "BadRequest", "invalid resourceVersion"));
        }
    };
    let bookmarks = q
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let rx = if take_one(&shared.failing_watches) {
        Err(ApiError::new(
            500,
            "InternalError",
            "injected watch failure",
        ))
    } else {
        shared
            .store
            .lock()
            .watch(&t.rt, t.namespace.as_deref(), from, bookmarks)
    };
    let rx = match rx {
        Ok(rx) => rx,
        Err(e) => {
            // As kube-apiserver: the watch opens, then carries one ERROR
            // event with the Status, then ends.
            let line = event_line("ERROR", &Bytes::from(e.status().to_string()));
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                line,
            )
                .into_response();
        }
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = futures::stream::unfold(rx, move |mut rx| async move {
        tokio::select! {
            m = rx.recv() => m.map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx)),
            _ = tokio::time::sleep_until(deadline) => None,
        }
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("limit=500&continue=3%3A500&labelSelector=a%3Db+c"));
        assert_eq!(q["limit"], "500");
        assert_eq!(q["continue"], "3:500");
        assert_eq!(q["labelSelector"], "a=b c");
        assert_eq!(percent_decode("50%"), "50%");
    }
}
