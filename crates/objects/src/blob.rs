//! Bodies on their way in and out. A body arrives as a stream of chunks; it is hashed as it
//! comes and kept in memory while small, or written to a blob file of its own (made durable
//! before the write that refers to it commits). Bodies go out as a stream read from the blob
//! files that were open when the object was looked up, so a later overwrite or delete does
//! not cut a download short.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};

use crate::Error;
use crate::db::Extent;
use crate::digest::{Digests, Hasher, Wanted};

/// Bodies up to this size are kept in the metadata file rather than in a file of their own.
pub const INLINE_MAX: u64 = 64 * 1024;
/// Bytes gathered before each batch written to a blob file.
const WRITE_CHUNK: usize = 4 << 20;
/// Bytes read from a blob file per chunk of a download.
const READ_CHUNK: u64 = 512 * 1024;

/// Where blob files live: `DIR/xx/<32 hex digits>`, `xx` the id's low byte.
#[derive(Debug, Clone)]
pub(crate) struct BlobDir {
    pub root: PathBuf,
}

impl BlobDir {
    pub(crate) fn path(&self, blob: u128) -> PathBuf {
        self.root
            .join(format!("{:02x}", blob & 0xff))
            .join(format!("{blob:032x}"))
    }

    /// Every blob file there, by id (other names are ignored).
    pub(crate) fn scan(&self) -> std::io::Result<Vec<u128>> {
        let mut out = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&self.root) else {
            return Ok(out);
        };
        for dir in dirs.flatten() {
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for f in files.flatten() {
                if let Some(id) = f
                    .file_name()
                    .to_str()
                    .and_then(|n| u128::from_str_radix(n, 16).ok())
                {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }
}

pub(crate) fn new_blob_id() -> u128 {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Unique within the process is enough for a file name; the clock and a counter give it.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return t ^ ((n as u128) << 64);
    }
    u128::from_le_bytes(bytes)
}

/// A body that arrived whole and is ready to be committed. Dropped without being committed,
/// its file (if it has one) is removed.
pub struct Staged {
    pub digests: Digests,
    pub(crate) storage: Storage,
}

pub(crate) enum Storage {
    Inline(Bytes),
    File {
        blob: u128,
        path: PathBuf,
    },
    /// Taken by a commit.
    Moved,
}

impl Staged {
    pub fn len(&self) -> u64 {
        self.digests.len
    }

    pub fn is_empty(&self) -> bool {
        self.digests.len == 0
    }

    /// Hands the body to a commit: the extent it becomes, its inline bytes if it has any, and
    /// the file to remove if the commit fails.
    pub(crate) fn take(&mut self) -> (Extent, Option<Bytes>, Option<PathBuf>) {
        let len = self.digests.len;
        match std::mem::replace(&mut self.storage, Storage::Moved) {
            Storage::Inline(bytes) => (
                Extent {
                    blob: new_blob_id(),
                    len,
                    inline: true,
                },
                Some(bytes),
                None,
            ),
            Storage::File { blob, path } => (
                Extent {
                    blob,
                    len,
                    inline: false,
                },
                None,
                Some(path),
            ),
            Storage::Moved => (
                Extent {
                    blob: 0,
                    len: 0,
                    inline: true,
                },
                Some(Bytes::new()),
                None,
            ),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Storage::File { path, .. } = &self.storage {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Reads `body` to its end, hashing it, in memory or into a new blob file under `dir`. Refuses
/// a body longer than `max` without reading the rest. `expected_len` (when the client declared
/// one) decides early whether the body goes to a file.
pub(crate) async fn stage<S, E>(
    dir: &BlobDir,
    mut body: S,
    wanted: Wanted,
    expected_len: Option<u64>,
    max: u64,
) -> Result<Staged, Error>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if expected_len.is_some_and(|l| l > max) {
        return Err(Error::EntityTooLarge(max));
    }
    let to_file = |len: u64| len > INLINE_MAX;
    // Chunks not yet hashed and written, and their length.
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_len = 0usize;
    let mut total = 0u64;
    let mut writer = if expected_len.is_some_and(to_file) {
        Some(Writer::create(dir, wanted).await?)
    } else {
        None
    };
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::Body(Arc::from(e.into())))?;
        total += chunk.len() as u64;
        if total > max {
            return Err(Error::EntityTooLarge(max));
        }
        pending_len += chunk.len();
        pending.push(chunk);
        if writer.is_none() && to_file(total) {
            writer = Some(Writer::create(dir, wanted).await?);
        }
        if let Some(w) = &mut writer
            && pending_len >= WRITE_CHUNK
        {
            w.write(std::mem::take(&mut pending)).await?;
            pending_len = 0;
        }
    }
    let (digests, storage) = match writer {
        None => {
            let mut hasher = Hasher::new(wanted);
            let mut bytes = BytesMut::with_capacity(pending_len);
            for chunk in &pending {
                hasher.update(chunk);
                bytes.extend_from_slice(chunk);
            }
            (hasher.finish(), Storage::Inline(bytes.freeze()))
        }
        Some(w) => w.finish(pending).await?,
    };
    Ok(Staged { digests, storage })
}

/// A body on its way into a blob file: batches are hashed and written on a blocking thread,
/// one batch at a time while the next arrives.
struct Writer {
    blob: u128,
    path: PathBuf,
    /// The file and the hasher, here between batches or with the batch in flight.
    state: Option<(File, Hasher)>,
    in_flight: Option<tokio::task::JoinHandle<std::io::Result<(File, Hasher)>>>,
    /// Removes the file if staging stops before the end.
    guard: FileGuard,
}

impl Writer {
    async fn create(dir: &BlobDir, wanted: Wanted) -> Result<Self, Error> {
        let (file, blob, path) = create_blob(dir).await?;
        Ok(Self {
            blob,
            guard: FileGuard(Some(path.clone())),
            path,
            state: Some((file, Hasher::new(wanted))),
            in_flight: None,
        })
    }

    /// The file and hasher, once the batch in flight is done.
    async fn settle(&mut self) -> Result<(File, Hasher), Error> {
        if let Some(task) = self.in_flight.take() {
            return task
                .await
                .map_err(|e| Error::Storage(e.to_string()))?
                .map_err(io);
        }
        self.state
            .take()
            .ok_or_else(|| Error::Storage("a blob writer lost its file".into()))
    }

    async fn write(&mut self, batch: Vec<Bytes>) -> Result<(), Error> {
        let (mut file, mut hasher) = self.settle().await?;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            for chunk in &batch {
                hasher.update(chunk);
                file.write_all(chunk)?;
            }
            Ok((file, hasher))
        }));
        Ok(())
    }

    /// Writes the last batch, makes the file and its directory entry durable.
    async fn finish(mut self, last: Vec<Bytes>) -> Result<(Digests, Storage), Error> {
        let (mut file, mut hasher) = self.settle().await?;
        let parent = self.path.parent().map(Path::to_path_buf);
        let hasher = tokio::task::spawn_blocking(move || -> std::io::Result<Hasher> {
            for chunk in &last {
                hasher.update(chunk);
                file.write_all(chunk)?;
            }
            file.sync_data()?;
            if let Some(parent) = parent {
                File::open(parent)?.sync_all()?;
            }
            Ok(hasher)
        })
        .await
        .map_err(|e| Error::Storage(e.to_string()))?
        .map_err(io)?;
        self.guard.0 = None;
        Ok((
            hasher.finish(),
            Storage::File {
                blob: self.blob,
                path: std::mem::take(&mut self.path),
            },
        ))
    }
}

/// Removes a half-written blob file when staging stops early.
struct FileGuard(Option<PathBuf>);

impl Drop for FileGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub(crate) fn io(e: std::io::Error) -> Error {
    Error::Storage(e.to_string())
}

async fn create_blob(dir: &BlobDir) -> Result<(File, u128, PathBuf), Error> {
    let blob = new_blob_id();
    let path = dir.path(blob);
    let p = path.clone();
    let file = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        File::options().write(true).create_new(true).open(&p)
    })
    .await
    .map_err(|e| Error::Storage(e.to_string()))?
    .map_err(io)?;
    Ok((file, blob, path))
}

/// A piece of a body on its way out.
pub(crate) enum Segment {
    Inline(Bytes),
    File {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
}

/// An object's bytes (or a range of them), from sources opened when it was looked up.
pub struct BodyReader {
    segments: std::collections::VecDeque<Segment>,
    pub(crate) len: u64,
}

impl BodyReader {
    pub(crate) fn new(segments: Vec<Segment>) -> Self {
        let len = segments
            .iter()
            .map(|s| match s {
                Segment::Inline(b) => b.len() as u64,
                Segment::File { len, .. } => *len,
            })
            .sum();
        Self {
            segments: segments.into(),
            len,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next chunk, or `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            match self.segments.pop_front()? {
                Segment::Inline(b) if b.is_empty() => continue,
                Segment::Inline(b) => return Some(Ok(b)),
                Segment::File { len: 0, .. } => continue,
                Segment::File { file, offset, len } => {
                    let n = len.min(READ_CHUNK);
                    let f = file.clone();
                    let read = tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; n as usize];
                        f.read_exact_at(&mut buf, offset).map(|()| Bytes::from(buf))
                    })
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                    if len > n {
                        self.segments.push_front(Segment::File {
                            file,
                            offset: offset + n,
                            len: len - n,
                        });
                    }
                    return Some(read);
                }
            }
        }
    }

    /// The whole body at once when it is in memory already (an inline body), so that it can be
    /// sent with its length in one write; otherwise the reader back.
    pub fn into_bytes(mut self) -> Result<Bytes, Self> {
        match self.segments.len() {
            0 => Ok(Bytes::new()),
            1 if matches!(self.segments[0], Segment::Inline(_)) => {
                match self.segments.pop_front() {
                    Some(Segment::Inline(b)) => Ok(b),
                    _ => Err(self),
                }
            }
            _ => Err(self),
        }
    }

    /// The body as a stream of chunks.
    pub fn into_stream(self) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold(self, |mut reader| async move {
            let chunk = reader.next_chunk().await?;
            Some((chunk, reader))
        })
    }
}
