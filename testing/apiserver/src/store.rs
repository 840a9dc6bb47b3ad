//! The object store: every object as JSON, one global resourceVersion
//! counter (as etcd's revision), a bounded log of changes per resource for
//! watches, and the open watches themselves.
//!
//! Invariants:
//! - every write takes the next resourceVersion and appends one entry to its
//!   resource's log, and is sent to matching watches, all under one lock, so
//!   a watch sees events in resourceVersion order with no gap;
//! - a watch from resourceVersion `v` can be served only if no event after
//!   `v` was dropped from the log (`v >= compacted`); otherwise it gets
//!   410 Gone, as from a compacted etcd;
//! - a paginated list is served from a snapshot taken at its first page, so
//!   all its pages are consistent at the list's resourceVersion, and a watch
//!   from that resourceVersion misses nothing.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A resource the server knows: where it lives and what it is called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Plural resource name, e.g. `pods`.
    pub plural: String,
    /// Kind, e.g. `Pod`.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether the type has a `status` subresource. As in kube-apiserver,
    /// a write to such an object itself (PUT, PATCH) keeps the stored
    /// status whatever the body says, a create starts from an empty status
    /// (nodes excepted: their status may be set on create), and only the
    /// `/status` subresource changes it.
    pub status_subresource: bool,
}

/// What a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteScope {
    /// Everything in the body: the test's own control channel
    /// ([`crate::FakeApiServer::update`]), standing in for kubelets and
    /// controllers.
    Whole,
    /// A client's write to the object itself: `status` is kept from the
    /// stored object when the type has a status subresource.
    Main,
    /// The `/status` subresource: only `status` changes.
    Status,
}

impl ResourceType {
    /// A resource type.
    pub fn new(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
    ) -> ResourceType {
        ResourceType {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            status_subresource: false,
        }
    }

    /// The same type with a `status` subresource (see
    /// [`ResourceType::status_subresource`]).
    pub fn with_status_subresource(mut self) -> ResourceType {
        self.status_subresource = true;
        self
    }

    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store key: `plural.group` (just `plural` for the core group).
    pub fn key(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// The resources every server starts with.
pub fn builtin_resources() -> Vec<ResourceType> {
    vec![
        ResourceType::new("", "v1", "pods", "Pod", true).with_status_subresource(),
        ResourceType::new("", "v1", "nodes", "Node", false).with_status_subresource(),
        ResourceType::new("", "v1", "namespaces", "Namespace", false).with_status_subresource(),
        ResourceType::new("", "v1", "events", "Event", true),
        ResourceType::new(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
        )
        .with_status_subresource(),
        ResourceType::new(
            "scheduling.k8s.io",
            "v1",
            "priorityclasses",
            "PriorityClass",
            false,
        ),
        ResourceType::new("events.k8s.io", "v1", "events", "Event", true),
        ResourceType::new("coordination.k8s.io", "v1", "leases", "Lease", true),
    ]
}

/// Puts the stored object's `status` into `next` (a write to the object
/// itself does not change its status).
fn keep_status(next: &mut Value, old: &Value) {
    let Some(m) = next.as_object_mut() else {
        return;
    };
    match old.get("status") {
        Some(s) => {
            m.insert("status".into(), s.clone());
        }
        None => {
            m.remove("status");
        }
    }
}

/// One stored object, kept both parsed and serialized (lists and watches
/// send the bytes as they are).
#[derive(Clone, Debug)]
pub(crate) struct Obj {
    pub value: Arc<Value>,
    pub json: Bytes,
}

impl Obj {
    pub fn new(value: Value) -> Obj {
        let json = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        Obj {
            value: Arc::new(value),
            json,
        }
    }
    fn rv(&self) -> u64 {
        self.value["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

struct LogEntry {
    rv: u64,
    namespace: String,
    line: Bytes,
}

struct Watch {
    namespace: Option<String>,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Bytes>,
}

struct Resource {
    rt: ResourceType,
    objects: BTreeMap<(String, String), Obj>,
    log: VecDeque<LogEntry>,
    /// Every event with a resourceVersion at or below this is gone.
    compacted: u64,
    watches: Vec<Watch>,
}

/// A failure, as the API reports it (a `Status` with a code and reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP code.
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Expired`, `Gone`...
    pub reason: &'static str,
    /// Human message.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }
    pub(crate) fn not_found(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.key()),
        )
    }
    /// The `Status` object.
    pub fn status(&self) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code})
    }
}

/// A page of a list.
pub(crate) struct Page {
    pub items: Vec<Obj>,
    pub rv: u64,
    pub continue_token: Option<String>,
    pub remaining: usize,
}

struct ListSnapshot {
    rv: u64,
    items: Arc<Vec<Obj>>,
}

/// How a patch merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Strategic,
    /// RFC 6902: `test`, `add`, `replace`, `remove` (a failed `test` or a
    /// missing parent is 422, as in kube-apiserver).
    Json,
}

/// The store.
pub(crate) struct Store {
    rv: u64,
    uid_seq: u64,
    resources: HashMap<String, Resource>,
    snapshots: HashMap<u64, ListSnapshot>,
    snapshot_seq: u64,
    log_capacity: usize,
}

/// Most list snapshots kept at once (older ones expire: their continue
/// tokens get 410).
const MAX_SNAPSHOTS: usize = 64;

impl Store {
    pub fn new(log_capacity: usize) -> Store {
        let mut s = Store {
            rv: 1,
            uid_seq: 0,
            resources: HashMap::new(),
            snapshots: HashMap::new(),
            snapshot_seq: 0,
            log_capacity,
        };
        for rt in builtin_resources() {
            s.register(rt);
        }
        s
    }

    pub fn register(&mut self, rt: ResourceType) {
        self.resources.entry(rt.key()).or_insert(Resource {
            rt,
            objects: BTreeMap::new(),
            log: VecDeque::new(),
            compacted: 0,
            watches: Vec::new(),
        });
    }

    /// The resource type for a URL's group and plural.
    pub fn resource_type(&self, group: &str, plural: &str) -> Option<ResourceType> {
        let key = if group.is_empty() {
            plural.to_owned()
        } else {
            format!("{plural}.{group}")
        };
        self.resources.get(&key).map(|r| r.rt.clone())
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    fn res(&mut self, rt: &ResourceType) -> Result<&mut Resource, ApiError> {
        self.resources.get_mut(&rt.key()).ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                format!(
                    "the server could not find the requested resource {}",
                    rt.key()
                ),
            )
        })
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Obj, ApiError> {
        self.resources
            .get(&rt.key())
            .and_then(|r| r.objects.get(&(ns.to_owned(), name.to_owned())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// All objects (of one namespace, or all).
    pub fn all(&self, rt: &ResourceType, ns: Option<&str>) -> Vec<Obj> {
        let Some(r) = self.resources.get(&rt.key()) else {
            return Vec::new();
        };
        r.objects
            .iter()
            .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
            .map(|(_, o)| o.clone())
            .collect()
    }

    pub fn list(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        limit: Option<usize>,
        cont: Option<&str>,
    ) -> Result<Page, ApiError> {
        let (snap_id, offset, rv, items) = match cont {
            Some(token) => {
                let mut parts = token.split(':');
                let id: Option<u64> = parts.next().and_then(|s| s.parse().ok());
                let off: Option<usize> = parts.next().and_then(|s| s.parse().ok());
                let (Some(id), Some(off)) = (id, off) else {
                    return Err(ApiError::new(400, "BadRequest", "invalid continue token"));
                };
                let Some(s) = self.snapshots.get(&id) else {
                    return Err(ApiError::new(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ));
                };
                (id, off, s.rv, s.items.clone())
            }
            None => {
                let items = Arc::new(self.all(rt, ns));
                self.snapshot_seq += 1;
                (self.snapshot_seq, 0, self.rv, items)
            }
        };
        let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let end = offset.saturating_add(limit).min(items.len());
        let page: Vec<Obj> = items
            .get(offset..end)
            .map(|s| s.to_vec())
            .unwrap_or_default();
        let remaining = items.len() - end;
        let continue_token = if remaining > 0 {
            if !self.snapshots.contains_key(&snap_id) {
                if self.snapshots.len() >= MAX_SNAPSHOTS
                    && let Some(oldest) = self.snapshots.keys().min().copied()
                {
                    self.snapshots.remove(&oldest);
                }
                self.snapshots.insert(snap_id, ListSnapshot { rv, items });
            }
            Some(format!("{snap_id}:{end}"))
        } else {
            self.snapshots.remove(&snap_id);
            None
        };
        Ok(Page {
            items: page,
            rv,
            continue_token,
            remaining,
        })
    }

    /// Opens a watch from `from` (`None`: from now). Returns the receiver of
    /// event lines, already holding every event after `from`.
    pub fn watch(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        from: Option<u64>,
        bookmarks: bool,
    ) -> Result<mpsc::UnboundedReceiver<Bytes>, ApiError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let r = self.res(rt)?;
        match from {
            Some(v) if v < r.compacted => {
                return Err(ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {v} ({})", r.compacted),
                ));
            }
            Some(v) => {
                for e in &r.log {
                    if e.rv > v && ns.is_none_or(|n| n == e.namespace) {
                        let _ = tx.send(e.line.clone());
                    }
                }
            }
            None => {
                // "Any" or "most recent": the current state as ADDED events.
                for ((n, _), o) in &r.objects {
                    if ns.is_none_or(|want| want == n) {
                        let _ = tx.send(event_line("ADDED", &o.json));
                    }
                }
            }
        }
        r.watches.push(Watch {
            namespace: ns.map(str::to_owned),
            bookmarks,
            tx,
        });
        Ok(rx)
    }

    /// Sends a bookmark at the current resourceVersion to every watch that
    /// asked for them.
    pub fn bookmark(&mut self) {
        let rv = self.rv;
        for r in self.resources.values_mut() {
            let line = event_line(
                "BOOKMARK",
                &Bytes::from(
                    serde_json::to_vec(
                        &json!({"kind": r.rt.kind, "apiVersion": r.rt.api_version(),
                                               "metadata": {"resourceVersion": rv.to_string()}}),
                    )
                    .unwrap_or_default(),
                ),
            );
            r.watches
                .retain(|w| !w.bookmarks || w.tx.send(line.clone()).is_ok());
        }
    }

    /// How many watches are open.
    pub fn open_watches(&self) -> usize {
        self.resources
            .values()
            .map(|r| r.watches.iter().filter(|w| !w.tx.is_closed()).count())
            .sum()
    }

    /// Ends every open watch (as an API server restart or a network cut).
    pub fn interrupt_watches(&mut self) -> usize {
        let mut n = 0;
        for r in self.resources.values_mut() {
            n += r.watches.len();
            r.watches.clear();
        }
        n
    }

    /// Drops every logged event (as an etcd compaction): a watch from any
    /// resourceVersion before now gets 410 Gone; paginated lists in
    /// progress expire.
    pub fn compact(&mut self) {
        let rv = self.rv;
        for r in self.resources.values_mut() {
            r.log.clear();
            r.compacted = rv;
        }
        self.snapshots.clear();
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn next_uid(&mut self) -> String {
        self.uid_seq += 1;
        let n = self.uid_seq;
        format!(
            "{:08x}-0000-4000-8000-{:012x}",
            (n >> 48) as u32,
            n & 0xffff_ffff_ffff
        )
    }

    fn record(&mut self, rt: &ResourceType, ty: &'static str, obj: &Obj) {
        let rv = obj.rv();
        let ns = obj.value["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let line = event_line(ty, &obj.json);
        let cap = self.log_capacity;
        let Ok(r) = self.res(rt) else { return };
        r.watches.retain(|w| {
            if w.namespace.as_deref().is_some_and(|n| n != ns) {
                return true;
            }
            w.tx.send(line.clone()).is_ok()
        });
        r.log.push_back(LogEntry {
            rv,
            namespace: ns,
            line,
        });
        while r.log.len() > cap {
            if let Some(e) = r.log.pop_front() {
                r.compacted = e.rv;
            }
        }
    }

    /// Creates an object. `ns` is the namespace from the path (namespaced
    /// resources only).
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut v: Value,
        log: bool,
    ) -> Result<Obj, ApiError> {
        if !v.is_object() {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the body must be a JSON object",
            ));
        }
        if v.get("metadata").is_none_or(|m| !m.is_object()) {
            v["metadata"] = json!({});
        }
        let body_ns = v["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
        let ns = if rt.namespaced {
            if !body_ns.is_empty() && !ns.is_empty() && body_ns != ns {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    "the namespace of the object does not match the namespace of the request",
                ));
            }
            if ns.is_empty() {
                body_ns
            } else {
                ns.to_owned()
            }
        } else {
            String::new()
        };
        if rt.namespaced && ns.is_empty() {
            return Err(ApiError::new(400, "BadRequest", "a namespace is required"));
        }
        let mut name = v["metadata"]["name"].as_str().unwrap_or("").to_owned();
        if name.is_empty() {
            let Some(prefix) = v["metadata"]["generateName"]
                .as_str()
                .filter(|p| !p.is_empty())
            else {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "metadata.name: Required value: name or generateName is required",
                ));
            };
            // As kube-apiserver: the prefix itself must be a DNS subdomain
            // once a trailing dash is allowed for (so `pod.` is refused).
            if !is_dns_subdomain(prefix.strip_suffix('-').unwrap_or(prefix)) {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "metadata.generateName: Invalid value: \"{prefix}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                    ),
                ));
            }
            self.uid_seq += 1;
            name = format!("{prefix}{:05x}", self.uid_seq & 0xfffff);
        }
        let key = (ns.clone(), name.clone());
        if self.res(rt)?.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.key()),
            ));
        }
        let rv = self.next_rv();
        let uid = self.next_uid();
        {
            let md = v["metadata"].as_object_mut().expect("made an object above");
            md.insert("name".into(), json!(name));
            if rt.namespaced {
                md.insert("namespace".into(), json!(ns));
            }
            md.entry("uid").or_insert_with(|| json!(uid));
            md.entry("creationTimestamp")
                .or_insert_with(|| json!(now_rfc3339()));
            md.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        v["kind"] = json!(rt.kind);
        v["apiVersion"] = json!(rt.api_version());
        if rt.kind == "Pod" && rt.group.is_empty() {
            // The API server's defaults the scheduler relies on.
            if v["spec"]["schedulerName"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                v["spec"]["schedulerName"] = json!("default-scheduler");
            }
            if v["status"]["phase"].is_null() {
                v["status"]["phase"] = json!("Pending");
            }
        }
        let obj = Obj::new(v);
        self.res(rt)?.objects.insert(key, obj.clone());
        if log {
            self.record(rt, "ADDED", &obj);
        }
        Ok(obj)
    }

    fn store_modified(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut v: Value,
    ) -> Result<Obj, ApiError> {
        let rv = self.next_rv();
        v["metadata"]["resourceVersion"] = json!(rv.to_string());
        let being_deleted = !v["metadata"]["deletionTimestamp"].is_null();
        let obj = Obj::new(v);
        if being_deleted && !has_finalizers(&obj.value) {
            // The last finalizer is gone: the deletion completes.
            self.res(rt)?
                .objects
                .remove(&(ns.to_owned(), name.to_owned()));
            self.record(rt, "DELETED", &obj);
            return Ok(obj);
        }
        self.res(rt)?
            .objects
            .insert((ns.to_owned(), name.to_owned()), obj.clone());
        self.record(rt, "MODIFIED", &obj);
        Ok(obj)
    }

    /// Replaces an object. A resourceVersion in the body must match the
    /// stored one (optimistic concurrency); `scope` says what the write may
    /// change.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut v: Value,
        scope: WriteScope,
    ) -> Result<Obj, ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        let old = self.get(rt, ns, name)?;
        if let Some(rv) = v["metadata"]["resourceVersion"]
            .as_str()
            .filter(|s| !s.is_empty())
            && rv
                != old.value["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
        {
            return Err(conflict(rt, name));
        }
        if scope == WriteScope::Status {
            let mut next = (*old.value).clone();
            next["status"] = v.get("status").cloned().unwrap_or(Value::Null);
            v = next;
        } else {
            if scope == WriteScope::Main && rt.status_subresource {
                keep_status(&mut v, &old.value);
            }
            // Identity and system fields are the server's.
            for k in ["uid", "creationTimestamp", "name", "namespace"] {
                let old_v = old.value["metadata"][k].clone();
                if !old_v.is_null() {
                    v["metadata"][k] = old_v;
                }
            }
            v["kind"] = json!(rt.kind);
            v["apiVersion"] = json!(rt.api_version());
        }
        if v == *old.value {
            return Ok(old);
        }
        self.store_modified(rt, ns, name, v)
    }

    /// Patches an object; `scope` says what the patch may change.
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        patch: &Value,
        kind: PatchKind,
        scope: WriteScope,
    ) -> Result<Obj, ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        let old = self.get(rt, ns, name)?;
        if kind == PatchKind::Json {
            let mut next = (*old.value).clone();
            json_patch(&mut next, patch)?;
            return self.patch(
                rt,
                ns,
                name,
                &diff_as_merge(&old.value, &next),
                PatchKind::Merge,
                scope,
            );
        }
        if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
            && rv
                != old.value["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
        {
            return Err(conflict(rt, name));
        }
        // A uid in the patch is a precondition, as in kube-apiserver: an
        // object recreated under the same name is not patched.
        if let Some(uid) = patch["metadata"]["uid"].as_str()
            && uid != old.value["metadata"]["uid"].as_str().unwrap_or("")
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} {name:?}: Precondition failed: UID in precondition: {uid}",
                    rt.key()
                ),
            ));
        }
        let mut next = (*old.value).clone();
        merge(&mut next, patch, kind == PatchKind::Strategic);
        match scope {
            WriteScope::Status => {
                let status = next.get("status").cloned().unwrap_or(Value::Null);
                next = (*old.value).clone();
                next["status"] = status;
            }
            WriteScope::Main if rt.status_subresource => keep_status(&mut next, &old.value),
            WriteScope::Main | WriteScope::Whole => {}
        }
        next["metadata"]["resourceVersion"] = old.value["metadata"]["resourceVersion"].clone();
        if next == *old.value {
            return Ok(old);
        }
        self.store_modified(rt, ns, name, next)
    }

    /// Creates an object as a client's POST does: for a type with a status
    /// subresource the body's `status` is dropped (kube-apiserver's create
    /// strategies reset it), except for nodes, whose status a create may
    /// set.
    pub fn create_from_client(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut v: Value,
    ) -> Result<Obj, ApiError> {
        if rt.status_subresource
            && !(rt.kind == "Node" && rt.group.is_empty())
            && let Some(m) = v.as_object_mut()
        {
            m.remove("status");
        }
        self.create(rt, ns, v, true)
    }

    /// Deletes an object; `uid` and `rv` are DeleteOptions preconditions.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        uid: Option<&str>,
        rv: Option<&str>,
    ) -> Result<Obj, ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        let old = self.get(rt, ns, name)?;
        if let Some(u) = uid
            && u != old.value["metadata"]["uid"].as_str().unwrap_or("")
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("Precondition failed: UID in precondition: {u}"),
            ));
        }
        if let Some(v) = rv
            && v != old.value["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("Precondition failed: ResourceVersion in precondition: {v}"),
            ));
        }
        if has_finalizers(&old.value) {
            // As kube-apiserver: marked for deletion, kept until the last
            // finalizer is removed (a pod so marked is terminating).
            if !old.value["metadata"]["deletionTimestamp"].is_null() {
                return Ok(old);
            }
            let mut v = (*old.value).clone();
            v["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            v["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            return self.store_modified(rt, ns, name, v);
        }
        let new_rv = self.next_rv();
        self.res(rt)?
            .objects
            .remove(&(ns.to_owned(), name.to_owned()));
        let mut v = (*old.value).clone();
        v["metadata"]["resourceVersion"] = json!(new_rv.to_string());
        let obj = Obj::new(v);
        self.record(rt, "DELETED", &obj);
        Ok(obj)
    }

    /// The `pods/binding` subresource: sets `spec.nodeName` once.
    pub fn bind(
        &mut self,
        ns: &str,
        name: &str,
        node: &str,
        uid: Option<&str>,
    ) -> Result<Obj, ApiError> {
        let rt = ResourceType::new("", "v1", "pods", "Pod", true).with_status_subresource();
        let old = self.get(&rt, ns, name)?;
        if let Some(u) = uid.filter(|u| !u.is_empty())
            && u != old.value["metadata"]["uid"].as_str().unwrap_or("")
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on pods/binding \"{name}\": the UID in the precondition ({u}) does not match the UID in record"
                ),
            ));
        }
        if let Some(cur) = old.value["spec"]["nodeName"]
            .as_str()
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{cur}\""
                ),
            ));
        }
        if !old.value["metadata"]["deletionTimestamp"].is_null() {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let mut v = (*old.value).clone();
        v["spec"]["nodeName"] = json!(node);
        let cond =
            json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()});
        merge(&mut v, &json!({"status": {"conditions": [cond]}}), true);
        self.store_modified(&rt, ns, name, v)
    }
}

fn has_finalizers(v: &Value) -> bool {
    v["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty())
}

fn conflict(rt: &ResourceType, name: &str) -> ApiError {
    ApiError::new(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            rt.key()
        ),
    )
}

pub(crate) fn event_line(ty: &str, obj: &Bytes) -> Bytes {
    let mut b = Vec::with_capacity(obj.len() + 32);
    b.extend_from_slice(b"{\"type\":\"");
    b.extend_from_slice(ty.as_bytes());
    b.extend_from_slice(b"\",\"object\":");
    b.extend_from_slice(obj);
    b.extend_from_slice(b"}\n");
    Bytes::from(b)
}

/// RFC 3339 now, seconds precision (as `metav1.Time`).
pub(crate) fn now_rfc3339() -> String {
    let ts = jiff::Timestamp::now();
    jiff::Timestamp::from_second(ts.as_second())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ts.to_string())
}

/// List fields merged by key in a strategic merge patch (the ones this
/// server's clients patch).
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "conditions" => Some("type"),
        "containers" | "initContainers" | "ephemeralContainers" => Some("name"),
        "ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// JSON merge patch (RFC 7386); with `strategic`, lists with a known merge
/// key are merged element by element.
pub(crate) fn merge(target: &mut Value, patch: &Value, strategic: bool) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, pv) in p {
        if pv.is_null() {
            t.remove(k);
            continue;
        }
        if strategic
            && let (Some(key), Some(items)) = (merge_key(k), pv.as_array())
            && let Some(existing) = t.get_mut(k).and_then(|v| v.as_array_mut())
        {
            for item in items {
                let id = &item[key];
                match existing.iter_mut().find(|e| &e[key] == id) {
                    Some(e) => merge(e, item, true),
                    None => existing.push(item.clone()),
                }
            }
            continue;
        }
        match t.get_mut(k) {
            Some(tv) if pv.is_object() && tv.is_object() => merge(tv, pv, strategic),
            _ => {
                t.insert(k.clone(), pv.clone());
            }
        }
    }
}

/// Applies an RFC 6902 JSON patch to `doc` (the operations kube-apiserver's
/// clients use: test, add, replace, remove). A `test` of `null` passes on a
/// missing member, as in kube-apiserver.
fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let invalid = |m: String| {
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {m}"),
        )
    };
    let ops = patch
        .as_array()
        .ok_or_else(|| invalid("a JSON patch is a list".into()))?;
    for op in ops {
        let path = op["path"]
            .as_str()
            .ok_or_else(|| invalid("op without path".into()))?;
        let mut parts: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        let last = parts
            .pop()
            .ok_or_else(|| invalid(format!("bad path {path:?}")))?;
        let mut parent = Some(&mut *doc);
        for p in &parts {
            parent = parent.and_then(|v| v.get_mut(p.as_str()));
        }
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match op["op"].as_str().unwrap_or("") {
            "test" => {
                let cur = parent
                    .and_then(|v| v.get(last.as_str()))
                    .cloned()
                    .unwrap_or(Value::Null);
                if cur != value {
                    return Err(invalid(format!("testing value {path} failed")));
                }
            }
            "add" | "replace" => {
                let obj = parent
                    .and_then(Value::as_object_mut)
                    .ok_or_else(|| invalid(format!("missing parent of {path}")))?;
                obj.insert(last, value);
            }
            "remove" => {
                let obj = parent
                    .and_then(Value::as_object_mut)
                    .ok_or_else(|| invalid(format!("missing parent of {path}")))?;
                obj.remove(&last);
            }
            other => return Err(invalid(format!("unsupported op {other:?}"))),
        }
    }
    Ok(())
}

/// The JSON merge patch that turns `old` into `new` (objects only; removed
/// members become `null`).
fn diff_as_merge(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = serde_json::Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) if ov == nv => {}
                    Some(ov) if ov.is_object() && nv.is_object() => {
                        out.insert(k.clone(), diff_as_merge(ov, nv));
                    }
                    _ => {
                        out.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

/// A lowercase RFC 1123 subdomain: at most 253 characters, dot-separated
/// labels of `[a-z0-9]` and inner `-` (kube-apiserver's check on names).
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> ResourceType {
        ResourceType::new("", "v1", "pods", "Pod", true).with_status_subresource()
    }

    #[test]
    fn json_patch_tests_adds_and_refuses_as_kube_apiserver() {
        let doc = serde_json::json!({"metadata": {"uid": "u1"}, "spec": {}});
        // A test of null passes on a missing member; add makes a map.
        let mut d = doc.clone();
        json_patch(
            &mut d,
            &serde_json::json!([
                {"op": "test", "path": "/metadata/uid", "value": "u1"},
                {"op": "test", "path": "/spec/nodeName", "value": null},
                {"op": "add", "path": "/metadata/annotations", "value": {"a/b": "1"}},
                {"op": "add", "path": "/metadata/annotations/c~1d", "value": "2"},
            ]),
        )
        .unwrap();
        assert_eq!(d["metadata"]["annotations"]["a/b"], "1");
        assert_eq!(d["metadata"]["annotations"]["c/d"], "2");
        // A failed test and a missing parent are 422; nothing is applied.
        for bad in [
            serde_json::json!([{"op": "test", "path": "/metadata/uid", "value": "u2"}]),
            serde_json::json!([{"op": "add", "path": "/metadata/labels/x", "value": "1"}]),
            serde_json::json!({"op": "add"}),
        ] {
            let mut d = doc.clone();
            assert_eq!(json_patch(&mut d, &bad).unwrap_err().code, 422, "{bad}");
        }
        let merge = diff_as_merge(&doc, &d);
        assert_eq!(
            merge,
            serde_json::json!({"metadata": {"annotations": {"a/b": "1", "c/d": "2"}}})
        );
    }

    #[test]
    fn strategic_merge_keeps_other_conditions() {
        let mut v = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}});
        merge(
            &mut v,
            &json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}}),
            true,
        );
        assert_eq!(v["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(v["status"]["conditions"][1]["status"], "False");
        assert_eq!(v["status"]["conditions"][1]["reason"], "Unschedulable");
        let mut m = json!({"status": {"conditions": [{"type": "Ready"}]}});
        merge(
            &mut m,
            &json!({"status": {"conditions": [{"type": "X"}], "phase": null}}),
            false,
        );
        assert_eq!(m["status"]["conditions"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn pagination_is_a_consistent_snapshot_and_expires_on_compaction() {
        let mut s = Store::new(100);
        for i in 0..5 {
            s.create(
                &pods(),
                "ns",
                json!({"metadata": {"name": format!("p{i}")}}),
                true,
            )
            .unwrap();
        }
        let p1 = s.list(&pods(), None, Some(2), None).unwrap();
        assert_eq!(p1.items.len(), 2);
        assert_eq!(p1.remaining, 3);
        s.delete(&pods(), "ns", "p4", None, None).unwrap();
        let p2 = s
            .list(&pods(), None, Some(2), p1.continue_token.as_deref())
            .unwrap();
        let p3 = s
            .list(&pods(), None, Some(2), p2.continue_token.as_deref())
            .unwrap();
        assert_eq!(
            p3.items.len(),
            1,
            "the deleted pod is still in the snapshot"
        );
        assert!(p3.continue_token.is_none());
        assert_eq!(p3.rv, p1.rv);
        let q1 = s.list(&pods(), None, Some(2), None).unwrap();
        s.compact();
        let e = s
            .list(&pods(), None, Some(2), q1.continue_token.as_deref())
            .err()
            .unwrap();
        assert_eq!(e.code, 410);
    }

    #[test]
    fn watch_replays_from_a_version_and_is_gone_after_compaction() {
        let mut s = Store::new(3);
        let a = s
            .create(&pods(), "ns", json!({"metadata": {"name": "a"}}), true)
            .unwrap();
        let rv_a = a.rv();
        for n in ["b", "c"] {
            s.create(&pods(), "ns", json!({"metadata": {"name": n}}), true)
                .unwrap();
        }
        let mut rx = s.watch(&pods(), None, Some(rv_a), false).unwrap();
        let mut lines = Vec::new();
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        assert_eq!(lines.len(), 2);
        for n in ["d", "e", "f"] {
            s.create(&pods(), "ns", json!({"metadata": {"name": n}}), true)
                .unwrap();
        }
        assert_eq!(
            s.watch(&pods(), None, Some(rv_a), false)
                .err()
                .unwrap()
                .code,
            410
        );
    }

    #[test]
    fn binding_sets_the_node_once() {
        let mut s = Store::new(100);
        s.create(&pods(), "ns", json!({"metadata": {"name": "p"}}), true)
            .unwrap();
        let b = s.bind("ns", "p", "n1", None).unwrap();
        assert_eq!(b.value["spec"]["nodeName"], "n1");
        assert_eq!(b.value["status"]["conditions"][0]["type"], "PodScheduled");
        assert_eq!(s.bind("ns", "p", "n2", None).err().unwrap().code, 409);
        assert_eq!(s.bind("ns", "gone", "n2", None).err().unwrap().code, 404);
    }

    #[test]
    fn update_checks_the_resource_version() {
        let mut s = Store::new(100);
        let rt = ResourceType::new("coordination.k8s.io", "v1", "leases", "Lease", true);
        let l = s
            .create(
                &rt,
                "ns",
                json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}}),
                true,
            )
            .unwrap();
        let mut v = (*l.value).clone();
        v["spec"]["holderIdentity"] = json!("b");
        let l2 = s
            .update(&rt, "ns", "l", v.clone(), WriteScope::Main)
            .unwrap();
        assert_ne!(l2.rv(), l.rv());
        assert_eq!(
            s.update(&rt, "ns", "l", v, WriteScope::Main)
                .err()
                .unwrap()
                .code,
            409
        );
    }

    #[test]
    fn writes_to_the_object_keep_the_status_of_types_with_a_status_subresource() {
        let mut s = Store::new(100);
        let p = s
            .create_from_client(
                &pods(),
                "ns",
                json!({"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Running"}}),
            )
            .unwrap();
        // A client's create does not set a pod's status.
        assert_eq!(p.value["status"]["phase"], "Pending");
        let cond = json!({"conditions": [{"type": "PodScheduled", "status": "False"}]});
        // PUT of the object: the label changes, the status does not.
        let mut v = (*p.value).clone();
        v["metadata"]["labels"] = json!({"a": "b"});
        v["status"] = cond.clone();
        let after = s.update(&pods(), "ns", "p", v, WriteScope::Main).unwrap();
        assert_eq!(after.value["metadata"]["labels"]["a"], "b");
        assert_eq!(after.value["status"], p.value["status"]);
        // Merge, strategic and JSON patches of the object: the same.
        for (patch, kind) in [
            (json!({"status": cond.clone()}), PatchKind::Merge),
            (json!({"status": cond.clone()}), PatchKind::Strategic),
            (
                json!([{"op": "add", "path": "/status/conditions", "value": cond["conditions"].clone()}]),
                PatchKind::Json,
            ),
        ] {
            let after = s
                .patch(&pods(), "ns", "p", &patch, kind, WriteScope::Main)
                .unwrap();
            assert!(after.value["status"]["conditions"].is_null(), "{kind:?}");
        }
        // The status subresource changes it, and only it.
        let patch = json!({"metadata": {"labels": {"a": "c"}}, "status": cond.clone()});
        let after = s
            .patch(
                &pods(),
                "ns",
                "p",
                &patch,
                PatchKind::Merge,
                WriteScope::Status,
            )
            .unwrap();
        assert_eq!(
            after.value["status"]["conditions"][0]["type"],
            "PodScheduled"
        );
        assert_eq!(after.value["metadata"]["labels"]["a"], "b");
        // A type without a status subresource takes status on any write.
        let rt = ResourceType::new("coordination.k8s.io", "v1", "leases", "Lease", true);
        s.create_from_client(
            &rt,
            "ns",
            json!({"metadata": {"name": "l"}, "status": {"x": 1}}),
        )
        .unwrap();
        let l = s
            .patch(
                &rt,
                "ns",
                "l",
                &json!({"status": {"x": 2}}),
                PatchKind::Merge,
                WriteScope::Main,
            )
            .unwrap();
        assert_eq!(l.value["status"]["x"], 2);
        // Nodes may carry their status on create.
        let nodes = ResourceType::new("", "v1", "nodes", "Node", false).with_status_subresource();
        let n = s
            .create_from_client(
                &nodes,
                "",
                json!({"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "1"}}}),
            )
            .unwrap();
        assert_eq!(n.value["status"]["capacity"]["cpu"], "1");
    }
}
