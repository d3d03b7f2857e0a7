//! An append-only log of telemetry records split into segment files.
//!
//! Every record is a frame `[len u32][crc32 u32][seq u64][time_ms i64][function len u16]
//! [function][payload]`, where `len` counts everything after itself and the checksum covers
//! everything after the checksum. Records are appended to the newest (active) segment in
//! batches by one writer, without waiting for the disk; `sync` makes them durable. A segment
//! that reaches its size is sealed: a sidecar index (`.idx`) is written beside it with its
//! bounds and, per function, the sequence numbers and offsets of its records, and a new segment
//! begins. Readers load a sealed segment's index only when a query reaches it.
//!
//! Retention drops whole segments, oldest first, so the space a log takes is bounded by its byte
//! budget plus one segment, whatever the load, and dropping costs one `unlink`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{Error, Result, io_err};

/// Bytes before the payload besides the function name: len, crc, seq, time, name length.
const HEAD: usize = 4 + 4 + 8 + 8 + 2;
const INDEX_MAGIC: &[u8; 8] = b"NMBIDX01";

/// One record as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub seq: u64,
    pub time_ms: i64,
    pub function: String,
    pub payload: Vec<u8>,
}

/// Where one function's records lie in a segment: (sequence, offset of the frame).
type Positions = Vec<(u64, u32)>;

/// What is known about a segment without reading its records.
#[derive(Debug, Clone, Default)]
struct Bounds {
    first_seq: u64,
    last_seq: u64,
    max_time_ms: i64,
    records: u64,
    bytes: u64,
}

struct Sealed {
    path: PathBuf,
    bounds: Bounds,
}

struct Active {
    path: PathBuf,
    file: BufWriter<File>,
    /// A second handle for positioned reads of what has been written.
    reader: File,
    bounds: Bounds,
    index: HashMap<String, Positions>,
    /// Whether something was written since the last `sync`.
    dirty: bool,
}

struct Inner {
    sealed: Vec<Sealed>,
    active: Active,
    /// Sealed segments whose contents are written but not yet made durable.
    unsynced: Vec<File>,
}

/// The segments of one record stream (logs, or usage records) in one directory.
pub struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    inner: Mutex<Inner>,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

fn poisoned() -> Error {
    Error::Telemetry("the telemetry log's lock was poisoned by a panic".into())
}

/// Encodes one frame onto `out`.
fn encode(out: &mut Vec<u8>, seq: u64, time_ms: i64, function: &str, payload: &[&[u8]]) {
    let name = &function.as_bytes()[..function.len().min(u16::MAX as usize)];
    let body_len: usize = 8 + 8 + 2 + name.len() + payload.iter().map(|p| p.len()).sum::<usize>();
    let start = out.len();
    out.extend_from_slice(&((body_len + 4) as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&time_ms.to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name);
    for p in payload {
        out.extend_from_slice(p);
    }
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the frame body after `len`: checks the checksum and splits the fields.
fn decode(body: &[u8]) -> Option<Frame> {
    if body.len() < HEAD - 4 {
        return None;
    }
    let crc = u32::from_le_bytes(body[0..4].try_into().ok()?);
    if crc32fast::hash(&body[4..]) != crc {
        return None;
    }
    let seq = u64::from_le_bytes(body[4..12].try_into().ok()?);
    let time_ms = i64::from_le_bytes(body[12..20].try_into().ok()?);
    let name_len = u16::from_le_bytes(body[20..22].try_into().ok()?) as usize;
    let name = body.get(22..22 + name_len)?;
    Some(Frame {
        seq,
        time_ms,
        function: String::from_utf8(name.to_vec()).ok()?,
        payload: body[22 + name_len..].to_vec(),
    })
}

/// Reads the frame at `offset`, or None if it is torn or corrupt.
fn read_frame(file: &File, offset: u64) -> Option<Frame> {
    let mut len = [0u8; 4];
    file.read_exact_at(&mut len, offset).ok()?;
    let len = u32::from_le_bytes(len) as usize;
    if !(HEAD - 4..=64 << 20).contains(&len) {
        return None;
    }
    let mut body = vec![0u8; len];
    file.read_exact_at(&mut body, offset + 4).ok()?;
    decode(&body)
}

/// Reads a whole segment from its start: its valid frames with their offsets, and where the
/// valid part ends (a torn or corrupt tail is not part of it).
fn scan(path: &Path) -> Result<(Vec<(u32, Frame)>, u64)> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err(path))?;
    let mut frames = Vec::new();
    let mut at = 0usize;
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let end = at + 4 + len as usize;
        let Some(frame) = bytes.get(at + 4..end).and_then(decode) else {
            break;
        };
        frames.push((at as u32, frame));
        at = end;
    }
    Ok((frames, at as u64))
}

fn bounds_and_index(
    first_seq: u64,
    frames: &[(u32, Frame)],
    bytes: u64,
) -> (Bounds, HashMap<String, Positions>) {
    let mut bounds = Bounds {
        first_seq,
        last_seq: first_seq.saturating_sub(1),
        max_time_ms: i64::MIN,
        records: 0,
        bytes,
    };
    let mut index: HashMap<String, Positions> = HashMap::new();
    for (offset, frame) in frames {
        bounds.last_seq = bounds.last_seq.max(frame.seq);
        bounds.max_time_ms = bounds.max_time_ms.max(frame.time_ms);
        bounds.records += 1;
        index
            .entry(frame.function.clone())
            .or_default()
            .push((frame.seq, *offset));
    }
    (bounds, index)
}

fn write_index(segment: &Path, bounds: &Bounds, index: &HashMap<String, Positions>) -> Result<()> {
    let mut out = Vec::with_capacity(64 + index.values().map(|p| p.len() * 12 + 32).sum::<usize>());
    out.extend_from_slice(INDEX_MAGIC);
    for v in [
        bounds.first_seq,
        bounds.last_seq,
        bounds.max_time_ms as u64,
        bounds.records,
        bounds.bytes,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (function, positions) in index {
        let name = &function.as_bytes()[..function.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&(positions.len() as u32).to_le_bytes());
        for (seq, offset) in positions {
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let path = index_path(segment);
    let tmp = path.with_extension("idx.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(io_err(&path))
}

/// Reads a sidecar index: the bounds, and the positions of `function` if asked for.
fn read_index(segment: &Path, function: Option<&str>) -> Option<(Bounds, Positions)> {
    let bytes = std::fs::read(index_path(segment)).ok()?;
    let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?)
        || !body.starts_with(INDEX_MAGIC)
    {
        return None;
    }
    let u64_at = |at: usize| {
        body.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let bounds = Bounds {
        first_seq: u64_at(8)?,
        last_seq: u64_at(16)?,
        max_time_ms: u64_at(24)? as i64,
        records: u64_at(32)?,
        bytes: u64_at(40)?,
    };
    let mut positions = Vec::new();
    if let Some(wanted) = function {
        let mut at = 48;
        while at < body.len() {
            let name_len = u16::from_le_bytes(body.get(at..at + 2)?.try_into().ok()?) as usize;
            let name = body.get(at + 2..at + 2 + name_len)?;
            at += 2 + name_len;
            let count = u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?) as usize;
            at += 4;
            let end = at.checked_add(count.checked_mul(12)?)?;
            if name == wanted.as_bytes() {
                for chunk in body.get(at..end)?.chunks_exact(12) {
                    positions.push((
                        u64::from_le_bytes(chunk[..8].try_into().ok()?),
                        u32::from_le_bytes(chunk[8..].try_into().ok()?),
                    ));
                }
                break;
            }
            at = end;
        }
    }
    Some((bounds, positions))
}

fn open_active(path: PathBuf, first_seq: u64) -> Result<Active> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let reader = File::open(&path).map_err(io_err(&path))?;
    Ok(Active {
        file: BufWriter::with_capacity(256 << 10, file),
        reader,
        bounds: Bounds {
            first_seq,
            last_seq: first_seq.saturating_sub(1),
            max_time_ms: i64::MIN,
            records: 0,
            bytes: 0,
        },
        index: HashMap::new(),
        path,
        dirty: false,
    })
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir`. The newest segment is read back to rebuild its index
    /// and cut off a torn tail; sealed segments are only looked at through their sidecars.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut firsts: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                firsts.push(n);
            } else if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        firsts.sort_unstable();
        let mut sealed = Vec::new();
        let newest = firsts.pop();
        for first in firsts {
            let path = segment_path(dir, first);
            let bounds = match read_index(&path, None) {
                Some((b, _)) => b,
                None => {
                    // Sealed but its sidecar never made it to disk: rebuild it.
                    let (frames, end) = scan(&path)?;
                    let (bounds, index) = bounds_and_index(first, &frames, end);
                    write_index(&path, &bounds, &index)?;
                    bounds
                }
            };
            sealed.push(Sealed { path, bounds });
        }
        let active = match newest {
            Some(first) => {
                let path = segment_path(dir, first);
                let (frames, end) = scan(&path)?;
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                // What follows the last valid frame was never acknowledged as durable.
                file.set_len(end).map_err(io_err(&path))?;
                drop(file);
                let mut active = open_active(path, first)?;
                let (bounds, index) = bounds_and_index(first, &frames, end);
                active.bounds = bounds;
                active.index = index;
                active
            }
            None => open_active(segment_path(dir, 1), 1)?,
        };
        Ok(Self {
            dir: dir.to_owned(),
            segment_bytes,
            inner: Mutex::new(Inner {
                sealed,
                active,
                unsynced: Vec::new(),
            }),
        })
    }

    /// The highest sequence number stored.
    pub fn last_seq(&self) -> u64 {
        self.inner
            .lock()
            .map(|i| {
                i.active
                    .bounds
                    .last_seq
                    .max(i.sealed.last().map_or(0, |s| s.bounds.last_seq))
            })
            .unwrap_or(0)
    }

    /// Appends records in sequence order. They can be read at once, and are durable after the
    /// next [`Self::sync`].
    pub fn append<'a>(
        &self,
        records: impl IntoIterator<Item = (u64, i64, &'a str, [&'a [u8]; 2])>,
    ) -> Result<()> {
        let mut inner = self.inner.lock().map_err(|_| poisoned())?;
        let mut buf = Vec::with_capacity(64 << 10);
        for (seq, time_ms, function, payload) in records {
            if inner.active.bounds.bytes >= self.segment_bytes {
                self.seal(&mut inner)?;
            }
            buf.clear();
            encode(&mut buf, seq, time_ms, function, &payload);
            let active = &mut inner.active;
            let offset = active.bounds.bytes;
            active.file.write_all(&buf).map_err(io_err(&active.path))?;
            active.bounds.bytes += buf.len() as u64;
            if active.bounds.records == 0 {
                active.bounds.first_seq = active.bounds.first_seq.min(seq);
            }
            active.bounds.records += 1;
            active.bounds.last_seq = seq;
            active.bounds.max_time_ms = active.bounds.max_time_ms.max(time_ms);
            match active.index.get_mut(function) {
                Some(p) => p.push((seq, offset as u32)),
                None => {
                    active
                        .index
                        .insert(function.to_owned(), vec![(seq, offset as u32)]);
                }
            }
            active.dirty = true;
        }
        let active = &mut inner.active;
        active.file.flush().map_err(io_err(&active.path))
    }

    /// Seals the active segment (writes its sidecar) and starts a new one.
    fn seal(&self, inner: &mut Inner) -> Result<()> {
        let next_first = inner.active.bounds.last_seq + 1;
        let new = open_active(segment_path(&self.dir, next_first), next_first)?;
        let mut old = std::mem::replace(&mut inner.active, new);
        old.file.flush().map_err(io_err(&old.path))?;
        write_index(&old.path, &old.bounds, &old.index)?;
        let file = old.file.into_inner().map_err(|e| Error::Io {
            path: old.path.clone(),
            source: e.into_error(),
        })?;
        inner.unsynced.push(file);
        inner.sealed.push(Sealed {
            path: old.path,
            bounds: old.bounds,
        });
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<()> {
        let (unsynced, active) = {
            let mut inner = self.inner.lock().map_err(|_| poisoned())?;
            let dirty = std::mem::take(&mut inner.active.dirty);
            let active = match dirty {
                true => Some((inner.active.reader.try_clone(), inner.active.path.clone())),
                false => None,
            };
            (std::mem::take(&mut inner.unsynced), active)
        };
        // The disk is waited for outside the lock: readers and the next batch go on meanwhile.
        for file in unsynced {
            file.sync_data().map_err(io_err(&self.dir))?;
        }
        if let Some((file, path)) = active {
            file.and_then(|f| f.sync_data()).map_err(io_err(&path))?;
        }
        Ok(())
    }

    /// Records of `function` with a sequence number above `after`, oldest first, at most
    /// `limit`, skipping segments that hold nothing newer than `min_time_ms`.
    pub fn read(
        &self,
        function: &str,
        after: u64,
        min_time_ms: i64,
        limit: usize,
    ) -> Result<Vec<Frame>> {
        // Which segments to look at, decided under the lock; their files are read outside it.
        let (sealed, active): (Vec<PathBuf>, Vec<(u64, u32)>) = {
            let inner = self.inner.lock().map_err(|_| poisoned())?;
            let sealed = inner
                .sealed
                .iter()
                .filter(|s| s.bounds.last_seq > after && s.bounds.max_time_ms >= min_time_ms)
                .map(|s| s.path.clone())
                .collect();
            let active = inner
                .active
                .index
                .get(function)
                .map(|p| p.iter().copied().filter(|(seq, _)| *seq > after).collect())
                .unwrap_or_default();
            (sealed, active)
        };
        let mut out = Vec::new();
        for path in sealed {
            let positions = match read_index(&path, Some(function)) {
                Some((_, p)) => p,
                None => {
                    let Ok((frames, end)) = scan(&path) else {
                        continue;
                    };
                    let first = frames.first().map_or(0, |(_, f)| f.seq);
                    bounds_and_index(first, &frames, end)
                        .1
                        .remove(function)
                        .unwrap_or_default()
                }
            };
            // A segment dropped by retention meanwhile simply contributes nothing.
            let Ok(file) = File::open(&path) else {
                continue;
            };
            for (seq, offset) in positions {
                if seq <= after {
                    continue;
                }
                if let Some(frame) = read_frame(&file, offset as u64)
                    && frame.time_ms >= min_time_ms
                {
                    out.push(frame);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        if !active.is_empty() {
            let inner = self.inner.lock().map_err(|_| poisoned())?;
            let file = &inner.active.reader;
            for (seq, offset) in active {
                if let Some(frame) = read_frame(file, offset as u64)
                    && frame.seq == seq
                    && frame.time_ms >= min_time_ms
                {
                    out.push(frame);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every record with a sequence number above `after`, in order (used to catch up derived
    /// state after a restart).
    pub fn read_all_after(&self, after: u64) -> Result<Vec<Frame>> {
        let paths: Vec<PathBuf> = {
            let inner = self.inner.lock().map_err(|_| poisoned())?;
            inner
                .sealed
                .iter()
                .filter(|s| s.bounds.last_seq > after)
                .map(|s| s.path.clone())
                .chain(std::iter::once(inner.active.path.clone()))
                .collect()
        };
        let mut out = Vec::new();
        for path in paths {
            let (frames, _) = scan(&path)?;
            out.extend(frames.into_iter().map(|(_, f)| f).filter(|f| f.seq > after));
        }
        Ok(out)
    }

    /// Drops sealed segments, oldest first, while the log holds more than `max_bytes` or the
    /// segment's newest record is older than `min_time_ms`, but never one holding a record above
    /// `keep_above` (whose contents something derived has not taken in yet). Returns how many.
    pub fn drop_oldest(&self, max_bytes: u64, min_time_ms: i64, keep_above: u64) -> Result<usize> {
        let doomed: Vec<PathBuf> = {
            let mut inner = self.inner.lock().map_err(|_| poisoned())?;
            let mut total: u64 = inner.sealed.iter().map(|s| s.bounds.bytes).sum::<u64>()
                + inner.active.bounds.bytes;
            let mut n = 0;
            for s in &inner.sealed {
                let over = total > max_bytes || s.bounds.max_time_ms < min_time_ms;
                if !over || s.bounds.last_seq > keep_above {
                    break;
                }
                total -= s.bounds.bytes;
                n += 1;
            }
            inner.sealed.drain(..n).map(|s| s.path).collect()
        };
        for path in &doomed {
            let _ = std::fs::remove_file(index_path(path));
            std::fs::remove_file(path).map_err(io_err(path))?;
        }
        Ok(doomed.len())
    }

    /// Bytes on disk in segments (sidecars aside).
    pub fn bytes(&self) -> u64 {
        self.inner
            .lock()
            .map(|i| i.sealed.iter().map(|s| s.bounds.bytes).sum::<u64>() + i.active.bounds.bytes)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(log: &SegmentLog, seq: u64, function: &str, text: &str) {
        log.append([(seq, seq as i64, function, [text.as_bytes(), &[][..]])])
            .unwrap();
    }

    fn texts(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| String::from_utf8(f.payload.clone()).unwrap())
            .collect()
    }

    #[test]
    fn records_are_found_per_function_across_sealed_segments_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path(), 200).unwrap();
        for seq in 1..=40 {
            let function = if seq % 3 == 0 { "b" } else { "a" };
            append(&log, seq, function, &format!("{function}{seq}"));
        }
        log.sync().unwrap();
        let segments = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "seg")
            .count();
        assert!(segments > 3, "only {segments} segments");
        let b = log.read("b", 0, i64::MIN, 100).unwrap();
        assert_eq!(texts(&b).len(), 13);
        assert!(b.windows(2).all(|w| w[0].seq < w[1].seq));
        let after = log.read("a", 30, i64::MIN, 3).unwrap();
        assert_eq!(texts(&after), ["a31", "a32", "a34"]);
        assert!(log.read("c", 0, i64::MIN, 10).unwrap().is_empty());
        // Time filter: only records at or after time 35.
        assert_eq!(
            texts(&log.read("a", 0, 35, 100).unwrap()),
            ["a35", "a37", "a38", "a40"]
        );
        drop(log);
        let log = SegmentLog::open(dir.path(), 200).unwrap();
        assert_eq!(log.last_seq(), 40);
        assert_eq!(log.read("b", 0, i64::MIN, 100).unwrap(), b);
        append(&log, 41, "b", "b41");
        assert_eq!(texts(&log.read("b", 39, i64::MIN, 100).unwrap()), ["b41"]);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_writing_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path(), 1 << 20).unwrap();
        append(&log, 1, "f", "one");
        append(&log, 2, "f", "two");
        log.sync().unwrap();
        drop(log);
        let path = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&path).unwrap().len();
        // Half of the second frame reached the disk.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        drop(f);
        let log = SegmentLog::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(texts(&log.read("f", 0, i64::MIN, 10).unwrap()), ["one"]);
        append(&log, 3, "f", "three");
        drop(log);
        let log = SegmentLog::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            texts(&log.read("f", 0, i64::MIN, 10).unwrap()),
            ["one", "three"]
        );
    }

    #[test]
    fn retention_drops_whole_segments_oldest_first_and_bounds_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path(), 300).unwrap();
        for seq in 1..=200 {
            append(&log, seq, "f", "some text of a log line");
        }
        let before = log.bytes();
        assert!(before > 3000);
        // Nothing above seq 50 may go yet: derived state has only taken in that much.
        log.drop_oldest(1000, i64::MIN, 50).unwrap();
        let kept = log.read("f", 0, i64::MIN, 1000).unwrap();
        assert!(
            kept[0].seq <= 51,
            "dropped past the keep mark: {}",
            kept[0].seq
        );
        log.drop_oldest(1000, i64::MIN, u64::MAX).unwrap();
        assert!(log.bytes() <= 1000 + 300, "{} bytes kept", log.bytes());
        let kept = log.read("f", 0, i64::MIN, 1000).unwrap();
        assert_eq!(kept.last().unwrap().seq, 200);
        assert!(
            kept.windows(2).all(|w| w[1].seq == w[0].seq + 1),
            "a hole in what was kept"
        );
        // Age: everything sealed is older than time 500.
        log.drop_oldest(u64::MAX, 500, u64::MAX).unwrap();
        let kept = log.read("f", 0, i64::MIN, 1000).unwrap();
        assert!(kept.len() < 20, "{} kept", kept.len());
        let on_disk = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(on_disk <= 3, "{on_disk} files left");
    }
}
