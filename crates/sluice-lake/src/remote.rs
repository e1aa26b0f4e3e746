//! A folder of files that must outlive any one process: the checkpoints of `sluice worker`
//! (`--state s3://bucket/state` or a local path), in the same stores as the lake
//! ([`crate::store`]: `s3://`, `file://`, and `hdfs://` with that feature).
//!
//! Files are named by paths relative to the folder (`tasks/readings-3/manifest-….json`).
//! [`StateDir::put_if_absent`] is the one conditional write: `object_store`'s
//! `PutMode::Create`, on S3 a PUT with `If-None-Match: *`, which the store refuses with
//! 412 Precondition Failed when the object exists; on a local folder, a create that fails
//! when the file exists. Two writers racing for one name: exactly one wins.

use bytes::Bytes;
use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::object_store::{self, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use futures_util::StreamExt;

use crate::{LakeError, Root, StorageOptions};

/// A folder in an object store or on the local disk.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: Root,
}

fn store_err(path: &Path) -> impl FnOnce(object_store::Error) -> LakeError + '_ {
    move |source| LakeError::Store { path: path.to_string(), source }
}

impl StateDir {
    /// Opens `location`: a local path (created if missing) or `s3://bucket/prefix`, with
    /// `options` as for the lake. Errors: as [`Root::open`].
    pub fn open(location: &str, options: &StorageOptions) -> Result<StateDir, LakeError> {
        Ok(StateDir { root: Root::open(location, options)? })
    }

    /// The folder's URL (ends in `/`).
    pub fn url(&self) -> String {
        self.root.url().to_string()
    }

    fn path(&self, rel: &str) -> Path {
        self.root.path_in_table("", rel)
    }

    /// Writes `rel`, replacing it.
    pub async fn put(&self, rel: &str, body: Bytes) -> Result<(), LakeError> {
        let p = self.path(rel);
        self.root.store().put(&p, PutPayload::from(body)).await.map_err(store_err(&p))?;
        Ok(())
    }

    /// Writes `rel` only if it does not exist. Returns false (and writes nothing) if it does.
    pub async fn put_if_absent(&self, rel: &str, body: Bytes) -> Result<bool, LakeError> {
        let p = self.path(rel);
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.root.store().put_opts(&p, PutPayload::from(body), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(source) => Err(LakeError::Store { path: p.to_string(), source }),
        }
    }

    /// The contents of `rel`, or None if it does not exist.
    pub async fn get(&self, rel: &str) -> Result<Option<Bytes>, LakeError> {
        let p = self.path(rel);
        match self.root.store().get(&p).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(store_err(&p))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(LakeError::Store { path: p.to_string(), source }),
        }
    }

    /// The files under `rel_dir`, as paths relative to the folder, sorted.
    pub async fn list(&self, rel_dir: &str) -> Result<Vec<String>, LakeError> {
        let dir = self.path(rel_dir);
        let base = self.path("");
        let mut out = Vec::new();
        let mut s = self.root.store().list(Some(&dir));
        while let Some(m) = s.next().await {
            let m = match m {
                Ok(m) => m,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(source) => return Err(LakeError::Store { path: dir.to_string(), source }),
            };
            let rel: Vec<String> = m.location.prefix_match(&base).map(|parts| parts.map(|p| p.as_ref().to_string()).collect()).unwrap_or_default();
            out.push(rel.join("/"));
        }
        out.sort();
        Ok(out)
    }

    /// Deletes `rel`; one that does not exist is no error.
    pub async fn delete(&self, rel: &str) -> Result<(), LakeError> {
        let p = self.path(rel);
        match self.root.store().delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(LakeError::Store { path: p.to_string(), source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_if_absent_has_one_winner() {
        let tmp = tempfile::tempdir().unwrap();
        let d = StateDir::open(tmp.path().to_str().unwrap(), &StorageOptions::default()).unwrap();
        assert!(d.put_if_absent("t/p-1/manifest-1.json", Bytes::from_static(b"a")).await.unwrap());
        assert!(!d.put_if_absent("t/p-1/manifest-1.json", Bytes::from_static(b"b")).await.unwrap(), "the second writer of a name loses");
        assert_eq!(d.get("t/p-1/manifest-1.json").await.unwrap().unwrap(), Bytes::from_static(b"a"));
        d.put("t/p-1/state/x", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(d.list("t/p-1").await.unwrap(), ["t/p-1/manifest-1.json", "t/p-1/state/x"]);
        assert!(d.list("t/none").await.unwrap().is_empty());
        d.delete("t/p-1/state/x").await.unwrap();
        d.delete("t/p-1/state/x").await.unwrap();
        assert!(d.get("t/p-1/state/x").await.unwrap().is_none());
    }
}
