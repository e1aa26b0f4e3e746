//! Where the lake lives: a local folder (the default), or an object store named by URL
//! (`s3://bucket/prefix`, and `hdfs://…` when built with the `hdfs` feature).
//!
//! Every Delta operation goes through `deltalake`'s object-store registry, keyed by URL
//! scheme. `file://` is [`crate::local::DurableLocal`] (every put fsync'd). `s3://` and
//! `s3a://` are `object_store`'s `AmazonS3`, registered here.
//!
//! Commits on S3: the Delta log's version `N` is the object `_delta_log/<N>.json`, and a
//! commit is a put of it with `If-None-Match: *` (put-if-absent, `object_store`'s
//! `PutMode::Create` with `S3ConditionalPut::ETagMatch`). Of two writers racing for the
//! same version, the store refuses the second with 412 Precondition Failed. Its writer then
//! reads the winner's commit, checks for conflicts, and retries as the next version.
//! No lock server (DynamoDB) is needed. This requires a store that honours `If-None-Match`
//! on PUT: AWS S3 (since 2024-08), MinIO, Cloudflare R2, Ceph RGW (Squid and later) and
//! moto do. A store that ignores the header would let the second writer overwrite the
//! first commit; do not point two writers at such a store.
//!
//! Credentials and settings, in increasing precedence:
//! 1. the `AWS_*` environment variables, as the AWS tools read them (`AWS_ACCESS_KEY_ID`,
//!    `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//!    `AWS_ALLOW_HTTP`, …; with none set, the instance or container credentials);
//! 2. the options given to [`Root::open`] (`[lake] storage_options` in the server's
//!    config), with `object_store`'s key names (`aws_endpoint`, `aws_region`,
//!    `aws_access_key_id`, …).
//!
//! Neither is ever logged: [`StorageOptions`]' `Debug` shows the keys only.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt};
use deltalake::logstore::{default_logstore, LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig};
use deltalake::DeltaResult;
use futures_util::StreamExt;
use url::Url;

use crate::LakeError;

/// Settings of an object store, by `object_store` key (`aws_endpoint`, `aws_region`, …).
/// Values are strings; numbers and booleans are taken as their text (so that
/// `SLUICE_LAKE__STORAGE_OPTIONS__AWS_ALLOW_HTTP=true` works). Values may be secrets:
/// `Debug` prints the keys alone, and serializing (`sluice config`) shows `"<redacted>"` for
/// the value of any key that names a secret, key, token or password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StorageOptions(pub BTreeMap<String, String>);

/// Whether the value of storage option `key` may be a secret.
pub fn is_secret_option(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "key", "token", "password", "credential"].iter().any(|s| k.contains(s))
}

impl serde::Serialize for StorageOptions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, if is_secret_option(k) { "<redacted>" } else { v.as_str() })))
    }
}

impl<'de> serde::Deserialize<'de> for StorageOptions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Text(String),
            Int(i64),
            Float(f64),
            Bool(bool),
        }
        let map = BTreeMap::<String, Scalar>::deserialize(d)?;
        Ok(StorageOptions(
            map.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Scalar::Text(s) => s,
                        Scalar::Int(i) => i.to_string(),
                        Scalar::Float(f) => f.to_string(),
                        Scalar::Bool(b) => b.to_string(),
                    };
                    (k, v)
                })
                .collect(),
        ))
    }
}

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Options per store (`scheme://authority`), set by [`Root::open`] and read by the
/// factories, so that tables opened anywhere in the process see the same settings.
fn options_by_store() -> &'static Mutex<HashMap<String, StorageOptions>> {
    static M: OnceLock<Mutex<HashMap<String, StorageOptions>>> = OnceLock::new();
    M.get_or_init(Default::default)
}

/// Built S3 clients per store and options, reused by every table of the process.
fn s3_clients() -> &'static Mutex<HashMap<String, ObjectStoreRef>> {
    static M: OnceLock<Mutex<HashMap<String, ObjectStoreRef>>> = OnceLock::new();
    M.get_or_init(Default::default)
}

fn store_key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.authority())
}

/// Builds `AmazonS3` stores for `s3://` and `s3a://` URLs: the environment, then the
/// options of [`Root::open`], then the table's own options.
struct S3Factory;

impl ObjectStoreFactory for S3Factory {
    fn parse_url_opts(&self, url: &Url, config: &StorageConfig) -> DeltaResult<(ObjectStoreRef, Path)> {
        use deltalake::logstore::object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        let key = store_key(url);
        let mut options = options_by_store().lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned().unwrap_or_default().0;
        options.extend(config.raw.iter().map(|(k, v)| (k.clone(), v.clone())));
        let cache_key = format!("{key}\n{options:?}");
        let path = Path::from_url_path(url.path()).map_err(|e| deltalake::DeltaTableError::InvalidTableLocation(format!("{url}: {e}")))?;
        if let Some(s) = s3_clients().lock().unwrap_or_else(|e| e.into_inner()).get(&cache_key) {
            return Ok((s.clone(), path));
        }
        let mut builder = AmazonS3Builder::from_env().with_url(key.clone());
        for (k, v) in &options {
            let k: AmazonS3ConfigKey = k.to_ascii_lowercase().parse().map_err(|_| deltalake::DeltaTableError::Generic(format!("[lake] storage_options: {k:?} is not an S3 setting (see object_store's AmazonS3ConfigKey: aws_endpoint, aws_region, aws_allow_http, …)")))?;
            builder = builder.with_config(k, v);
        }
        let store: ObjectStoreRef = Arc::new(builder.build().map_err(|e| deltalake::DeltaTableError::InvalidTableLocation(format!("{key}: {e}")))?);
        s3_clients().lock().unwrap_or_else(|e| e.into_inner()).insert(cache_key, store.clone());
        Ok((store, path))
    }
}

/// Delta's default log store (commits by put-if-absent) for the schemes registered here.
struct PutIfAbsentLogStore;

impl LogStoreFactory for PutIfAbsentLogStore {
    fn with_options(&self, prefixed: ObjectStoreRef, root: ObjectStoreRef, location: &Url, options: &StorageConfig) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(prefixed, root, location, options))
    }
}

/// Registers the stores of this module (once per process): `file://` as
/// [`crate::local::DurableLocal`], `s3://` and `s3a://` as `AmazonS3` with put-if-absent
/// commits, and `hdfs://` with the `hdfs` feature.
pub fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        crate::local::register();
        for scheme in ["s3://", "s3a://"] {
            if let Ok(url) = Url::parse(scheme) {
                deltalake::logstore::object_store_factories().insert(url.clone(), Arc::new(S3Factory));
                deltalake::logstore::logstore_factories().insert(url, Arc::new(PutIfAbsentLogStore));
            }
        }
        #[cfg(feature = "hdfs")]
        deltalake::hdfs::register_handlers(None);
    });
}

/// The lake's root: where its tables are, and the store that holds them.
#[derive(Clone)]
pub struct Root {
    /// The root as a URL ending in `/` (`file:///…/lake/`, `s3://bucket/prefix/`).
    url: Url,
    /// The local folder, for `file://` roots.
    local: Option<PathBuf>,
    /// The store, rooted at `scheme://authority/`.
    store: ObjectStoreRef,
    /// The root's path within the store.
    prefix: Path,
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.url)
    }
}

impl Root {
    /// Opens `location`: a local path (created if missing) or a URL with a registered
    /// scheme (`s3://bucket/prefix`). `options` configure the store (see the module docs).
    ///
    /// Errors: a URL of an unknown scheme, or settings the store refuses (they are named).
    pub fn open(location: &str, options: &StorageOptions) -> Result<Root, LakeError> {
        register();
        let bad = |reason: String| LakeError::Location { location: location.to_string(), reason };
        let url = match Url::parse(location) {
            Ok(u) if u.scheme().len() > 1 && u.scheme() != "file" => u,
            Ok(u) if u.scheme() == "file" => return Root::local(&u.to_file_path().map_err(|_| bad("not a local path".into()))?),
            _ => return Root::local(FsPath::new(location)),
        };
        let mut url = url;
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        options_by_store().lock().unwrap_or_else(|e| e.into_inner()).insert(store_key(&url), options.clone());
        let factory = deltalake::logstore::object_store_factories().iter().find(|f| f.key().scheme() == url.scheme()).map(|f| f.value().clone());
        let Some(factory) = factory else {
            return Err(bad(format!("no store for {:?} URLs in this build: use a local path or s3://bucket/prefix (hdfs:// needs the `hdfs` cargo feature)", url.scheme())));
        };
        let (store, prefix) = factory.parse_url_opts(&url, &StorageConfig::default()).map_err(|e| bad(e.to_string()))?;
        Ok(Root { url, local: None, store, prefix })
    }

    /// A local folder (created if missing).
    pub fn local(dir: &FsPath) -> Result<Root, LakeError> {
        register();
        std::fs::create_dir_all(dir).map_err(crate::io(dir))?;
        let dir = std::path::absolute(dir).map_err(crate::io(dir))?;
        let url = Url::from_directory_path(&dir).map_err(|_| LakeError::Location { location: dir.display().to_string(), reason: "not an absolute path".into() })?;
        let prefix = Path::from_absolute_path(&dir).map_err(|e| LakeError::Location { location: dir.display().to_string(), reason: e.to_string() })?;
        Ok(Root { url, local: Some(dir), store: Arc::new(crate::local::DurableLocal::new()), prefix })
    }

    /// The root URL (ends in `/`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The local folder of a `file://` root.
    pub fn local_dir(&self) -> Option<&FsPath> {
        self.local.as_deref()
    }

    /// The store, rooted at `scheme://authority/` (see [`Root::store_url`]).
    pub fn store(&self) -> ObjectStoreRef {
        self.store.clone()
    }

    /// `scheme://authority/`, the URL of [`Root::store`].
    pub fn store_url(&self) -> String {
        format!("{}/", store_key(&self.url))
    }

    /// A table's URL (ends in `/`).
    pub fn table_url(&self, table: &str) -> Result<Url, LakeError> {
        self.url.join(&format!("{table}/")).map_err(|e| LakeError::Location { location: self.url.to_string(), reason: format!("table {table:?}: {e}") })
    }

    /// The store path of `rel` (a path relative to the table folder, not %-encoded).
    pub fn path_in_table(&self, table: &str, rel: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in std::iter::once(table).chain(rel.split('/')).filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    /// Whether `table` has a Delta log.
    pub async fn has_log(&self, table: &str) -> Result<bool, LakeError> {
        if let Some(dir) = &self.local {
            return Ok(dir.join(table).join("_delta_log").is_dir());
        }
        let log = self.path_in_table(table, "_delta_log");
        match self.store.list(Some(&log)).next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(self.store_err(&log, e)),
        }
    }

    /// Names of the folders right under the root, not starting with `_` or `.`, sorted.
    pub async fn folders(&self) -> Result<Vec<String>, LakeError> {
        let mut out = Vec::new();
        if let Some(dir) = &self.local {
            for entry in std::fs::read_dir(dir).map_err(crate::io(dir))? {
                let entry = entry.map_err(crate::io(dir))?;
                if entry.path().is_dir() {
                    out.push(entry.file_name().to_string_lossy().to_string());
                }
            }
        } else {
            let listed = self.store.list_with_delimiter(Some(&self.prefix)).await.map_err(|e| self.store_err(&self.prefix, e))?;
            out.extend(listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)));
        }
        out.retain(|n| !n.starts_with(['_', '.']));
        out.sort();
        Ok(out)
    }

    /// Names of the tables (folders with a Delta log), sorted.
    pub async fn table_names(&self) -> Result<Vec<String>, LakeError> {
        let mut out = Vec::new();
        for name in self.folders().await? {
            if self.has_log(&name).await? {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Whether a file of a table exists (`rel` relative to the table folder, not %-encoded).
    pub async fn exists(&self, table: &str, rel: &str) -> Result<bool, LakeError> {
        let path = self.path_in_table(table, rel);
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(deltalake::logstore::object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.store_err(&path, e)),
        }
    }

    /// The bytes of a file of a table (`rel` relative to the table folder, not %-encoded).
    pub async fn get(&self, table: &str, rel: &str) -> Result<Bytes, LakeError> {
        let path = self.path_in_table(table, rel);
        let got = self.store.get(&path).await.map_err(|e| self.store_err(&path, e))?;
        got.bytes().await.map_err(|e| self.store_err(&path, e))
    }

    fn store_err(&self, path: &Path, e: deltalake::logstore::object_store::Error) -> LakeError {
        LakeError::Store { path: format!("{}{}", self.store_url(), path), source: e }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_never_show_their_values() {
        let o = StorageOptions([("aws_secret_access_key".to_string(), "hunter2".to_string())].into_iter().collect());
        assert_eq!(format!("{o:?}"), "{\"aws_secret_access_key\"}");
        let mut o = o;
        o.0.insert("aws_region".into(), "eu-west-1".into());
        assert_eq!(serde_json::to_string(&o).unwrap(), r#"{"aws_region":"eu-west-1","aws_secret_access_key":"<redacted>"}"#);
    }

    #[test]
    fn options_take_scalars_as_text() {
        let o: StorageOptions = serde_json::from_str(r#"{"aws_allow_http": true, "aws_endpoint": "http://h:1", "n": 3}"#).unwrap();
        assert_eq!(o.0["aws_allow_http"], "true");
        assert_eq!(o.0["n"], "3");
        assert_eq!(o.0["aws_endpoint"], "http://h:1");
    }

    #[test]
    fn local_paths_and_urls_name_the_same_tables() {
        let dir = tempfile::tempdir().unwrap();
        let a = Root::open(dir.path().to_str().unwrap(), &StorageOptions::default()).unwrap();
        let b = Root::open(Url::from_directory_path(dir.path()).unwrap().as_str(), &StorageOptions::default()).unwrap();
        assert_eq!(a.table_url("t").unwrap(), b.table_url("t").unwrap());
        assert_eq!(a.path_in_table("t", "date=2026-01-01/x.parquet").to_string(), format!("{}/t/date=2026-01-01/x.parquet", a.prefix));
    }

    #[test]
    fn unknown_schemes_are_refused_with_what_to_use() {
        let e = Root::open("gopher://host/lake", &StorageOptions::default()).unwrap_err().to_string();
        assert!(e.contains("gopher") && e.contains("s3://"), "{e}");
    }

    #[test]
    fn s3_settings_are_checked_by_name() {
        let e = Root::open("s3://bucket/lake", &StorageOptions([("aws_no_such_key".into(), "1".into())].into_iter().collect())).unwrap_err().to_string();
        assert!(e.contains("aws_no_such_key"), "{e}");
    }
}
