//! A Kubernetes API server in memory, behind kube's `tower-test` mock service: the
//! client under test sends real HTTP requests (paths, query strings, JSON bodies), and
//! this answers them as the API server would, for the resources the compute backend
//! uses. It keeps objects, assigns uids and resource versions, streams watch events
//! as newline-delimited JSON while a watch is open, serves pod logs with `limitBytes`,
//! and garbage-collects objects whose owner is deleted.
//!
//! [`FakeKubelet`] plays the node: it runs a Job's containers as the real `insitu`
//! binary, in order, with the Job's own arguments (container paths mapped into a
//! temporary directory, the Secret "mounted" as a file), and reports their states back.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};
use tokio::sync::mpsc;

type Body = UnsyncBoxBody<Bytes, Infallible>;
type Sender = mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>;

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Value,
}

struct Watch {
    plural: String,
    name: Option<String>,
    tx: Sender,
}

#[derive(Default)]
struct State {
    /// (plural, name) → object.
    objects: BTreeMap<(String, String), Value>,
    version: u64,
    watches: Vec<Watch>,
    seen: Vec<Seen>,
    /// (pod, container) → log text.
    logs: HashMap<(String, String), String>,
    /// Every event, so a watch from a resource version replays what it missed (as the
    /// API server does between a list and the watch that follows it).
    history: Vec<Event>,
}

struct Event {
    version: u64,
    plural: String,
    name: String,
    line: String,
}

/// The fake API server. Cheap to clone.
#[derive(Clone, Default)]
pub struct FakeCluster {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeCluster")
    }
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}

fn status(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    full(
        code,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
               "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

/// `(api prefix, kind)` of a plural the fake serves.
fn kind_of(plural: &str) -> Option<(&'static str, &'static str)> {
    Some(match plural {
        "jobs" => ("batch/v1", "Job"),
        "pods" => ("v1", "Pod"),
        "secrets" => ("v1", "Secret"),
        "networkpolicies" => ("networking.k8s.io/v1", "NetworkPolicy"),
        "workflows" => ("argoproj.io/v1alpha1", "Workflow"),
        _ => return None,
    })
}

/// RFC 7386 merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

impl FakeCluster {
    /// A kube client whose every request this fake answers. Call inside a runtime.
    pub fn client(&self) -> kube::Client {
        let (svc, mut handle) =
            tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
        let me = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let resp = me.handle(req).await;
                send.send_response(resp);
            }
        });
        kube::Client::new(svc, "default")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake cluster state")
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// An object, if it exists.
    pub fn get(&self, plural: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(plural.to_string(), name.to_string()))
            .cloned()
    }

    /// Names of the objects of `plural`.
    pub fn names(&self, plural: &str) -> Vec<String> {
        self.lock()
            .objects
            .keys()
            .filter(|(p, _)| p == plural)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// Waits until `plural/name` exists and `ready` holds for it.
    pub async fn wait_for(
        &self,
        plural: &str,
        name: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        for _ in 0..3000 {
            if let Some(v) = self.get(plural, name)
                && ready(&v)
            {
                return Ok(v);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        bail!("{plural}/{name} never became ready")
    }

    /// Puts an object as a controller would (no request recorded), notifying watches.
    pub fn put(&self, plural: &str, mut obj: Value) -> Result<()> {
        let name = obj["metadata"]["name"]
            .as_str()
            .ok_or_else(|| anyhow!("object without a name"))?
            .to_string();
        let mut st = self.lock();
        st.version += 1;
        let rv = st.version.to_string();
        let existed = st.objects.contains_key(&(plural.to_string(), name.clone()));
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(format!("uid-{rv}"));
        }
        obj["metadata"]["resourceVersion"] = json!(rv);
        st.objects
            .insert((plural.to_string(), name.clone()), obj.clone());
        notify(
            &mut st,
            plural,
            &name,
            if existed { "MODIFIED" } else { "ADDED" },
            &obj,
        );
        Ok(())
    }

    /// Merges `status` into an object's status (a controller's update).
    pub fn set_status(&self, plural: &str, name: &str, status: Value) -> Result<()> {
        let mut obj = self
            .get(plural, name)
            .ok_or_else(|| anyhow!("no {plural}/{name}"))?;
        merge(&mut obj["status"], &status);
        self.put(plural, obj)
    }

    pub fn set_log(&self, pod: &str, container: &str, text: String) {
        self.lock()
            .logs
            .insert((pod.to_string(), container.to_string()), text);
    }

    /// Serves the fake over real HTTP on `listener`, for a process that reads a
    /// kubeconfig (`server: http://127.0.0.1:<port>`).
    pub async fn serve_http(self, listener: tokio::net::TcpListener) -> Result<()> {
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let me = self.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let resp = me.answer(parts, bytes).await;
                resp.map(axum::body::Body::new)
            }
        });
        axum::serve(listener, app).await?;
        Ok(())
    }

    async fn handle(&self, req: Request<kube::client::Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = body.collect_bytes().await.unwrap_or_default();
        self.answer(parts, body).await
    }

    async fn answer(&self, parts: http::request::Parts, body: Bytes) -> Response<Body> {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let path = parts.uri.path().to_string();
        let query: BTreeMap<String, String> =
            url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        self.lock().seen.push(Seen {
            method: parts.method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
        });
        // /api/v1/namespaces/{ns}/{plural}[/{name}[/log]] or /apis/{g}/{v}/namespaces/…
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let Some(ns_at) = segs.iter().position(|s| *s == "namespaces") else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no route {path}"),
            );
        };
        let rest = &segs[ns_at + 2..];
        let (plural, name, sub) = match rest {
            [p] => (*p, None, None),
            [p, n] => (*p, Some(*n), None),
            [p, n, s] => (*p, Some(*n), Some(*s)),
            _ => {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("no route {path}"),
                );
            }
        };
        if kind_of(plural).is_none() {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no resource {plural}"),
            );
        }
        match (parts.method.clone(), name, sub) {
            (Method::POST, None, None) => self.create(plural, body),
            (Method::GET, None, None) if query.get("watch").map(String::as_str) == Some("true") => {
                self.watch(plural, &query)
            }
            (Method::GET, None, None) => self.list(plural, &query),
            (Method::GET, Some(n), None) => match self.get(plural, n) {
                Some(o) => full(StatusCode::OK, o),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{plural} \"{n}\" not found"),
                ),
            },
            (Method::GET, Some(n), Some("log")) => self.log(n, &query),
            (Method::PATCH, Some(n), None) => self.patch(plural, n, &body),
            (Method::DELETE, Some(n), None) => self.delete(plural, n),
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", path),
        }
    }

    fn create(&self, plural: &str, obj: Value) -> Response<Body> {
        let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "name required".into(),
            );
        };
        if self.get(plural, &name).is_some() {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{plural} \"{name}\" already exists"),
            );
        }
        match self.put(plural, obj) {
            Ok(()) => full(
                StatusCode::CREATED,
                self.get(plural, &name).unwrap_or_default(),
            ),
            Err(e) => status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string()),
        }
    }

    fn list(&self, plural: &str, query: &BTreeMap<String, String>) -> Response<Body> {
        let st = self.lock();
        let by_name = query
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="));
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((p, n), o)| {
                p == plural
                    && by_name.is_none_or(|want| want == n)
                    && query
                        .get("labelSelector")
                        .is_none_or(|l| labels_match(o, l))
            })
            .map(|(_, o)| o.clone())
            .collect();
        let (api, kind) = kind_of(plural).unwrap_or(("v1", "Unknown"));
        full(
            StatusCode::OK,
            json!({"apiVersion": api, "kind": format!("{kind}List"),
                   "metadata": {"resourceVersion": st.version.to_string()}, "items": items}),
        )
    }

    fn watch(&self, plural: &str, query: &BTreeMap<String, String>) -> Response<Body> {
        let (tx, rx) = mpsc::unbounded_channel();
        let name = query
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="))
            .map(str::to_string);
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut st = self.lock();
        for e in st.history.iter().filter(|e| {
            e.version > from && e.plural == plural && name.as_ref().is_none_or(|n| *n == e.name)
        }) {
            let _ = tx.send(Ok(Frame::data(Bytes::from(e.line.clone()))));
        }
        st.watches.push(Watch {
            plural: plural.to_string(),
            name,
            tx,
        });
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
        *r.status_mut() = StatusCode::OK;
        r
    }

    fn log(&self, pod: &str, query: &BTreeMap<String, String>) -> Response<Body> {
        let container = query.get("container").cloned().unwrap_or_default();
        let Some(text) = self
            .lock()
            .logs
            .get(&(pod.to_string(), container.clone()))
            .cloned()
        else {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("container \"{container}\" in pod \"{pod}\" is waiting to start"),
            );
        };
        let mut bytes = text.into_bytes();
        if let Some(limit) = query
            .get("limitBytes")
            .and_then(|l| l.parse::<usize>().ok())
        {
            bytes.truncate(limit);
        }
        let mut r = Response::new(
            Full::new(Bytes::from(bytes))
                .map_err(|n| match n {})
                .boxed_unsync(),
        );
        *r.status_mut() = StatusCode::OK;
        r
    }

    fn patch(&self, plural: &str, name: &str, patch: &Value) -> Response<Body> {
        let Some(mut obj) = self.get(plural, name) else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{plural} \"{name}\" not found"),
            );
        };
        merge(&mut obj, patch);
        match self.put(plural, obj) {
            Ok(()) => full(StatusCode::OK, self.get(plural, name).unwrap_or_default()),
            Err(e) => status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string()),
        }
    }

    /// Deletes an object and, as the garbage collector does, everything it owns.
    fn delete(&self, plural: &str, name: &str) -> Response<Body> {
        let mut st = self.lock();
        let Some(obj) = st.objects.remove(&(plural.to_string(), name.to_string())) else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{plural} \"{name}\" not found"),
            );
        };
        st.version += 1;
        notify(&mut st, plural, name, "DELETED", &obj);
        let mut owners = vec![
            obj["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ];
        while let Some(uid) = owners.pop() {
            let owned: Vec<(String, String)> = st
                .objects
                .iter()
                .filter(|(_, o)| {
                    o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == json!(uid)))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in owned {
                if let Some(o) = st.objects.remove(&key) {
                    owners.push(
                        o["metadata"]["uid"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    );
                    notify(&mut st, &key.0, &key.1, "DELETED", &o);
                }
            }
        }
        full(
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "Status", "status": "Success",
                   "details": {"name": name, "kind": plural}}),
        )
    }
}

fn notify(st: &mut State, plural: &str, name: &str, kind: &str, obj: &Value) {
    let line = format!("{}\n", json!({"type": kind, "object": obj}));
    st.history.push(Event {
        version: st.version,
        plural: plural.to_string(),
        name: name.to_string(),
        line: line.clone(),
    });
    st.watches.retain(|w| {
        if w.plural != plural || w.name.as_deref().is_some_and(|n| n != name) {
            return !w.tx.is_closed();
        }
        w.tx.send(Ok(Frame::data(Bytes::from(line.clone()))))
            .is_ok()
    });
}

/// How a container ended under the fake kubelet.
#[derive(Debug, Clone)]
pub struct Ran {
    pub container: String,
    pub exit_code: i32,
    pub message: Option<String>,
}

/// Plays the node for one Job: see the module documentation.
#[derive(Debug)]
pub struct FakeKubelet {
    pub root: PathBuf,
    pub insitu: PathBuf,
}

impl FakeKubelet {
    /// Maps a container path into the node's directory for this pod.
    fn map(&self, arg: &str) -> String {
        for prefix in [
            "/data",
            "/work",
            "/out",
            "/run/insitu",
            "/dev/termination-log",
        ] {
            if arg == prefix || arg.starts_with(&format!("{prefix}/")) {
                return format!("{}{arg}", self.root.display());
            }
        }
        arg.to_string()
    }

    /// Runs the Job's pod to its end: creates the Pod object, runs its containers in
    /// order (init containers first, stopping at the first failure), records their
    /// logs and states, and sets the Job's condition. Returns what each container did.
    pub async fn run_job(&self, cluster: &FakeCluster, job: &str) -> Result<Vec<Ran>> {
        let job_obj = cluster
            .wait_for("jobs", job, |j| j["spec"]["suspend"] == json!(false))
            .await?;
        let spec = &job_obj["spec"]["template"]["spec"];
        let pod_name = format!("{job}-pod");
        let labels = job_obj["spec"]["template"]["metadata"]["labels"].clone();
        cluster.put(
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": pod_name, "labels": labels,
                       "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job,
                           "uid": job_obj["metadata"]["uid"], "controller": true}]},
                   "spec": spec.clone(), "status": {"phase": "Running"}}),
        )?;
        self.mount_secrets(cluster, spec)?;
        for d in ["data", "work", "out", "dev"] {
            std::fs::create_dir_all(self.root.join(d))?;
        }
        let mut ran = Vec::new();
        let init: Vec<Value> = spec["initContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let main: Vec<Value> = spec["containers"].as_array().cloned().unwrap_or_default();
        let mut failed = false;
        let mut statuses = (Vec::new(), Vec::new());
        for (is_init, c) in init
            .iter()
            .map(|c| (true, c))
            .chain(main.iter().map(|c| (false, c)))
        {
            if failed {
                break;
            }
            let r = self.run_container(cluster, &pod_name, c).await?;
            failed = r.exit_code != 0;
            let state = json!({"name": r.container, "state": {"terminated": {
                "exitCode": r.exit_code, "reason": if failed { "Error" } else { "Completed" },
                "message": r.message}}});
            if is_init {
                statuses.0.push(state);
            } else {
                statuses.1.push(state);
            }
            ran.push(r);
        }
        cluster.set_status(
            "pods",
            &pod_name,
            json!({"phase": if failed { "Failed" } else { "Succeeded" },
                   "initContainerStatuses": statuses.0, "containerStatuses": statuses.1}),
        )?;
        let condition = if failed {
            json!({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                   "message": "Job has reached the specified backoff limit"})
        } else {
            json!({"type": "Complete", "status": "True"})
        };
        cluster.set_status("jobs", job, json!({"conditions": [condition]}))?;
        Ok(ran)
    }

    /// Writes each Secret volume's keys as files, where the containers mount them.
    fn mount_secrets(&self, cluster: &FakeCluster, spec: &Value) -> Result<()> {
        let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
        let containers = spec["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(spec["containers"].as_array().into_iter().flatten());
        for c in containers {
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let Some(v) = volumes.iter().find(|v| v["name"] == m["name"]) else {
                    continue;
                };
                let Some(secret) = v["secret"]["secretName"].as_str() else {
                    continue;
                };
                let s = cluster.get("secrets", secret).ok_or_else(|| {
                    anyhow!("the pod mounts Secret {secret}, which does not exist")
                })?;
                let dir = PathBuf::from(self.map(m["mountPath"].as_str().unwrap_or_default()));
                std::fs::create_dir_all(&dir)?;
                for (k, val) in s["stringData"].as_object().into_iter().flatten() {
                    std::fs::write(dir.join(k), val.as_str().unwrap_or_default())?;
                }
            }
        }
        Ok(())
    }

    async fn run_container(&self, cluster: &FakeCluster, pod: &str, c: &Value) -> Result<Ran> {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        let command: Vec<String> = c["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        if command != ["insitu"] {
            bail!("container {name} runs {command:?}, not insitu");
        }
        let args: Vec<String> = c["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(|a| self.map(a)))
            .collect();
        // Defaults of the pod steps are container paths too.
        let mut args = args;
        let step = args.get(2).cloned().unwrap_or_default();
        let defaults: &[(&str, &str)] = match step.as_str() {
            "stage" => &[("--data", "/data"), ("--work", "/work")],
            "publish" => &[("--out", "/out")],
            _ => &[],
        };
        for (flag, path) in defaults {
            if !args.iter().any(|a| a == flag) {
                args.push((*flag).to_string());
                args.push(self.map(path));
            }
        }
        let out = tokio::process::Command::new(&self.insitu)
            .args(&args)
            .env_clear()
            .env("RUST_LOG", "warn")
            .output()
            .await
            .with_context(|| format!("running container {name}"))?;
        let mut log = String::from_utf8_lossy(&out.stdout).into_owned();
        log.push_str(&String::from_utf8_lossy(&out.stderr));
        cluster.set_log(pod, &name, log.clone());
        let code = out.status.code().unwrap_or(-1);
        let termination = self.root.join("dev/termination-log");
        let message = if code == 0 {
            None
        } else if let Ok(m) = std::fs::read_to_string(&termination) {
            let _ = std::fs::remove_file(&termination);
            Some(m)
        } else {
            // FallbackToLogsOnError: the log's tail.
            Some(
                log.lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        };
        Ok(Ran {
            container: name,
            exit_code: code,
            message,
        })
    }
}
