//! The local-disk object store of the lake: `object_store`'s `LocalFileSystem`, with two
//! changes that a Delta table written every second needs.
//!
//! - **Durable writes.** Every put (data files, Delta commits, log checkpoints) is fsync'd
//!   with its directory before it returns, so a Delta commit that returned survives a
//!   power loss, as the log's records do. `LocalFileSystem` alone leaves them in the page
//!   cache.
//! - **Listing from an offset without a `stat` per file.** Opening or updating a table lists
//!   `_delta_log/` from the last checkpoint on. `LocalFileSystem` stats every file of the
//!   folder to do that (its directory walk follows links), so each commit cost grew with the
//!   table's history; here only the entries past the offset are stat'ed.
//!
//! Registered for `file://` URLs in the `deltalake` crate's object-store registry by
//! [`register`].

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use deltalake::logstore::object_store::local::LocalFileSystem;
use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::logstore::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions, Result,
};
use deltalake::logstore::{ObjectStoreFactory, ObjectStoreRef, StorageConfig};
use deltalake::DeltaResult;
use futures_util::stream::{BoxStream, StreamExt};

/// `LocalFileSystem` rooted at `/`, with durable puts and cheap offset listings.
#[derive(Debug)]
pub struct DurableLocal {
    inner: LocalFileSystem,
}

impl fmt::Display for DurableLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DurableLocal({})", self.inner)
    }
}

fn fs_path(location: &Path) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/{location}"))
}

/// fsyncs a file and the folder that holds it.
fn sync(location: &Path) -> Result<()> {
    let path = fs_path(location);
    let err = |source: std::io::Error| deltalake::logstore::object_store::Error::Generic { store: "DurableLocal", source: Box::new(source) };
    std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    }
    Ok(())
}

impl DurableLocal {
    pub fn new() -> DurableLocal {
        DurableLocal { inner: LocalFileSystem::new() }
    }
}

impl Default for DurableLocal {
    fn default() -> Self {
        DurableLocal::new()
    }
}

/// Whether `name` is an unfinished put of `LocalFileSystem` (`<name>#<n>`, left behind by a
/// crash): its own listings skip those, and so must ours.
fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Every file under `dir` (recursively, links not followed), as object paths, with no
/// `stat`: names only; unfinished puts are skipped.
fn names_under(dir: &std::path::Path, out: &mut Vec<Path>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            names_under(&entry.path(), out)?;
        } else if kind.is_file() && !is_staging_name(&entry.file_name().to_string_lossy()) {
            if let Ok(p) = Path::from_absolute_path(entry.path()) {
                out.push(p);
            }
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl ObjectStore for DurableLocal {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await?;
        let loc = location.clone();
        tokio::task::spawn_blocking(move || sync(&loc)).await.map_err(|e| deltalake::logstore::object_store::Error::Generic { store: "DurableLocal", source: Box::new(e) })??;
        Ok(r)
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        // Multipart uploads (large files) are completed by renaming into place; the data file
        // they make is fsync'd by `Lake` through `sync_files` before its commit.
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        let dir = prefix.map_or_else(|| std::path::PathBuf::from("/"), fs_path);
        let offset = offset.clone();
        let inner = Arc::new(LocalFileSystem::new());
        let names = futures_util::stream::once(async move {
            tokio::task::spawn_blocking(move || {
                let mut names = Vec::new();
                names_under(&dir, &mut names).map(|()| names)
            })
            .await
        });
        names
            .flat_map(move |r| {
                let paths: Vec<Result<Path>> = match r {
                    Ok(Ok(mut names)) => {
                        names.retain(|p| *p > offset);
                        names.sort();
                        names.into_iter().map(Ok).collect()
                    }
                    Ok(Err(e)) => vec![Err(deltalake::logstore::object_store::Error::Generic { store: "DurableLocal", source: Box::new(e) })],
                    Err(e) => vec![Err(deltalake::logstore::object_store::Error::Generic { store: "DurableLocal", source: Box::new(e) })],
                };
                futures_util::stream::iter(paths)
            })
            .then(move |p| {
                let inner = inner.clone();
                async move {
                    match p {
                        Ok(p) => inner.head(&p).await,
                        Err(e) => Err(e),
                    }
                }
            })
            // A file deleted between the listing and its head (vacuum) is not listed.
            .filter(|r| std::future::ready(!matches!(r, Err(deltalake::logstore::object_store::Error::NotFound { .. }))))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        let to = to.clone();
        tokio::task::spawn_blocking(move || sync(&to)).await.map_err(|e| deltalake::logstore::object_store::Error::Generic { store: "DurableLocal", source: Box::new(e) })?
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await?;
        let to = to.clone();
        tokio::task::spawn_blocking(move || sync(&to)).await.map_err(|e| deltalake::logstore::object_store::Error::Generic { store: "DurableLocal", source: Box::new(e) })?
    }
}

/// Builds [`DurableLocal`] stores for `file://` table URLs.
struct Factory;

impl ObjectStoreFactory for Factory {
    fn parse_url_opts(&self, url: &url::Url, _config: &StorageConfig) -> DeltaResult<(ObjectStoreRef, Path)> {
        let path = Path::from_url_path(url.path()).map_err(|e| deltalake::DeltaTableError::InvalidTableLocation(format!("{url}: {e}")))?;
        Ok((Arc::new(DurableLocal::new()), path))
    }
}

/// Makes every `file://` Delta table of this process use [`DurableLocal`].
pub fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(url) = url::Url::parse("file://") {
            deltalake::logstore::object_store_factories().insert(url, Arc::new(Factory));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;


    #[tokio::test]
    async fn offset_listing_equals_the_local_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let store = DurableLocal::new();
        let base = Path::from_filesystem_path(dir.path()).unwrap();
        for name in ["a/00.json", "a/01.json", "a/02.json", "a/sub/03.json", "b.json"] {
            store.put(&Path::from(format!("{base}/{name}")), PutPayload::from_static(b"x")).await.unwrap();
        }
        // A put killed half way leaves its staging file: listed by neither.
        std::fs::write(dir.path().join("a/04.json#1"), b"partial").unwrap();
        let prefix = Path::from(format!("{base}/a"));
        let offset = Path::from(format!("{base}/a/00.json"));
        let ours: Vec<ObjectMeta> = store.list_with_offset(Some(&prefix), &offset).map(|r| r.unwrap()).collect().await;
        let mut theirs: Vec<ObjectMeta> = LocalFileSystem::new().list_with_offset(Some(&prefix), &offset).map(|r| r.unwrap()).collect().await;
        theirs.sort_by(|a, b| a.location.cmp(&b.location));
        assert_eq!(ours.iter().map(|m| m.location.to_string()).collect::<Vec<_>>(), theirs.iter().map(|m| m.location.to_string()).collect::<Vec<_>>());
        assert_eq!(ours.len(), 3);
        assert_eq!(ours[0].e_tag, theirs[0].e_tag);
    }
}
