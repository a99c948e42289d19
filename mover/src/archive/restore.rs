//! Restoring an image from a chain of archives in one sequential read.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use chunker::crypto::Password;
use chunker::format::{Manifest, ObjectId};
use chunker::{ChunkId, Decoder, Frame};
use targets::archive::{ArchiveHeader, ArchiveReader, Damage, Event, ReaderOptions, Trailer};

use super::map::{decode_map, Placed};
use super::spool::Spool;
use crate::restore::{with_destination, Sink, ZEROS};
use crate::{Destination, Error, Progress, Result};

/// Where an archive comes from: one stream (a file, a pipe, stdin, a tape) or numbered volume
/// files.
pub enum ArchiveInput {
    /// A stream.
    Stream(Box<dyn Read + Send>),
    /// `NAME.000`, `NAME.001`, …
    Volumes(targets::archive::FileVolumeSet),
}

impl ArchiveInput {
    pub(super) fn reader<'a>(self, strict: bool, password: Option<&Password>) -> ArchiveReader<'a> {
        let options = ReaderOptions {
            strict,
            decode: false,
            password: password.cloned(),
        };
        match self {
            ArchiveInput::Stream(r) => ArchiveReader::new(r, options),
            ArchiveInput::Volumes(v) => ArchiveReader::from_volumes(v, options),
        }
    }
}

/// Settings of an archive restore.
#[derive(Clone, Debug, Default)]
pub struct ArchiveRestoreOptions {
    /// The disk to restore, for an archive of several.
    pub disk: Option<String>,
    /// Stop at the first damage (exit 1) instead of restoring what is intact.
    pub strict: bool,
    /// Replace an existing regular file.
    pub force: bool,
    /// fsync before reporting success.
    pub sync: bool,
    /// The password of encrypted archives.
    pub password: Option<Password>,
}

/// What an archive restore did.
#[derive(Clone, Debug, Default)]
pub struct ArchiveRestoreReport {
    /// The restored disk.
    pub disk: String,
    /// Its length.
    pub bytes_total: u64,
    /// Bytes written (holes in files not counted).
    pub bytes_written: u64,
    /// Chunks read from the archives.
    pub chunks_read: u64,
    /// The snapshot id of the restored archive's manifest, when it was read.
    pub snapshot: Option<ObjectId>,
    /// Damage found, one line each.
    pub damage: Vec<String>,
    /// Byte ranges of the disk that could not be restored (zeros were left there).
    pub lost: Vec<(u64, u64)>,
    /// The trailer checked out (every frame read, totals and archive hash match).
    pub verified: bool,
}

/// Restores one disk from a chain of archives (the full first, the incremental to restore
/// last), reading each once, in order. Chunks of the earlier archives, and chunks that a later
/// entry may need again, are kept aside in a spool in `$TMPDIR`; the last archive's chunks are
/// written as they arrive (positionally, or in order to a stream).
///
/// Damage is skipped and reported (`report.damage`, `report.lost`); with `strict` the first
/// damage is an error. Wrong data is never written: every chunk is checked against its id.
pub fn restore_archive(
    inputs: Vec<ArchiveInput>,
    dest: &Destination,
    opts: &ArchiveRestoreOptions,
    progress: &Progress,
) -> Result<ArchiveRestoreReport> {
    let mut spool = Spool::new();
    let mut decoder = Decoder::new();
    let mut report = ArchiveRestoreReport::default();
    let count = inputs.len();
    let mut inputs = inputs.into_iter();
    let mut chain: Vec<ArchiveHeader> = Vec::new();
    for _ in 1..count {
        let input = inputs.next().expect("count");
        for event in input.reader(opts.strict, opts.password.as_ref()) {
            match event? {
                Event::Keyed(k, _) => decoder = Decoder::with_id_key(k),
                Event::Header(h) => chain.push(h),
                Event::ChunkFrame { id, frame } => {
                    let mut out = Vec::new();
                    decoder.decode_into(&frame, &id, &mut out)?;
                    spool.put(&id, &frame)?;
                    report.chunks_read += 1;
                }
                Event::Damage(d) => report.damage.push(damage_line(&d)),
                _ => {}
            }
        }
    }
    let last = inputs.next().ok_or_else(|| {
        Error::Incremental("no archive given; name one with --from-archive".into())
    })?;
    let mut reader = last.reader(opts.strict, opts.password.as_ref());
    // Everything before the header (volume frames, damage) is noted; the header picks the disk.
    let header =
        loop {
            match reader.next().transpose()? {
                Some(Event::Header(h)) => break h,
                Some(Event::Keyed(k, _)) => decoder = Decoder::with_id_key(k),
                Some(Event::Damage(d)) => report.damage.push(damage_line(&d)),
                Some(_) => {}
                None => return Err(Error::Incremental(
                    "the archive holds no header: it is not a mover archive, or its start is lost"
                        .into(),
                )),
            }
        };
    check_chain(&header, &chain, &mut report)?;
    let names: Vec<&str> = header.disks.iter().map(|d| d.name.as_str()).collect();
    let disk = match (&opts.disk, header.disks.len()) {
        (Some(n), _) => names.iter().position(|x| x == n).ok_or_else(|| {
            Error::Incremental(format!(
                "the archive has no disk {n}; its disks are {}",
                names.join(", ")
            ))
        })?,
        (None, 1) => 0,
        (None, _) => {
            return Err(Error::Incremental(format!(
                "the archive holds several disks ({}); pick one with --disk NAME",
                names.join(", ")
            )))
        }
    };
    report.disk = names[disk].to_string();
    let size = header.disks[disk].size;
    progress.set_total(size);
    // One thread decodes and writes in archive order: writes through the page cache let the
    // kernel's writeback overlap the decoding, where direct writes would wait in turn.
    with_destination(dest, size, opts.force, opts.sync, false, |sink, label| {
        let mut r = Restorer {
            sink,
            label,
            disk: disk as u32,
            spool,
            decoder,
            out: Vec::new(),
            placed: HashMap::new(),
            waiting: HashMap::new(),
            queue: std::collections::VecDeque::new(),
            written_at: HashMap::new(),
            next_offset: 0,
            covered: Vec::new(),
            size,
            report,
            progress,
        };
        r.run(&mut reader, opts.strict)?;
        Ok(r.report)
    })
}

/// Checks the archives given before the last against the last one's header (issue 14, item
/// 10): every archive it is an incremental of must be there; an archive that is an
/// incremental of the last one means the chain was given out of order (refused: the newest
/// goes last); one outside the chain is not used, and said so.
fn check_chain(
    header: &ArchiveHeader,
    chain: &[ArchiveHeader],
    report: &mut ArchiveRestoreReport,
) -> Result<()> {
    let order = "give the chain in order, the full archive first and the one to restore last: \
                 --from-archive FULL --from-archive … --from-archive NEWEST";
    if let Some(newer) = chain.iter().find(|e| e.parents.contains(&header.id)) {
        return Err(Error::Incremental(format!(
            "archive {} is an incremental of archive {}, which was given after it; {order}",
            newer.id, header.id
        )));
    }
    if let Some(missing) = header
        .parents
        .iter()
        .find(|p| !chain.iter().any(|e| e.id == **p))
    {
        return Err(Error::Incremental(format!(
            "archive {} is an incremental of archive {missing}, which was not given; {order}",
            header.id
        )));
    }
    for e in chain.iter().filter(|e| !header.parents.contains(&e.id)) {
        report.damage.push(format!(
            "archive {} is not in the chain of archive {} (not one of its parents): it was \
             read but not used",
            e.id, header.id
        ));
    }
    Ok(())
}

pub(super) fn damage_line(d: &Damage) -> String {
    d.to_string()
}

struct Restorer<'a> {
    sink: Sink,
    label: &'a str,
    disk: u32,
    spool: Spool,
    decoder: Decoder,
    out: Vec<u8>,
    /// Positional: which entries are in place (by index).
    placed: HashMap<u64, Option<ChunkId>>,
    /// Positional: entries waiting for their chunk frame.
    waiting: HashMap<ChunkId, Vec<Placed>>,
    /// Stream: entries in order, waiting for their data.
    queue: std::collections::VecDeque<Placed>,
    /// Positional: where a chunk was written first (to copy it again from there).
    written_at: HashMap<ChunkId, (u64, u32)>,
    /// Stream: bytes written so far.
    next_offset: u64,
    /// Positional: the byte ranges the maps placed (to find what no map reached).
    covered: Vec<(u64, u64)>,
    /// The disk's size from the archive header (0 when the source was a stream).
    size: u64,
    report: ArchiveRestoreReport,
    progress: &'a Progress,
}

impl Restorer<'_> {
    fn positional(&self) -> Option<(&File, bool)> {
        match &self.sink {
            Sink::Positional { file, zeros, .. } => Some((file, *zeros)),
            Sink::Stream(_) => None,
        }
    }

    fn dest_err(&self, e: std::io::Error) -> Error {
        Error::destination(self.label, e)
    }

    fn run(&mut self, reader: &mut ArchiveReader<'_>, strict: bool) -> Result<()> {
        let mut manifest = None;
        let mut trailer: Option<Trailer> = None;
        let mut more = false;
        for event in reader {
            if crate::sys::interrupted() {
                return Err(Error::Interrupted);
            }
            let event = event?;
            if trailer.is_some() {
                // Read on to the end, so that the writer of a pipe is not cut off while it
                // writes its last padding; what follows the trailer is not this archive.
                if let (Event::Header(h), false) = (&event, more) {
                    more = true;
                    self.report.damage.push(format!(
                        "the input holds another archive ({}) after the one restored; it was \
                         not used (to restore it, give it on its own, or last after the \
                         archives of its chain)",
                        h.id
                    ));
                }
                continue;
            }
            match event {
                Event::Map(bytes) => {
                    let Some(entries) = decode_map(&bytes) else {
                        self.report
                            .damage
                            .push("a map frame of an unknown layout was skipped".into());
                        continue;
                    };
                    let disk = self.disk;
                    for e in entries.into_iter().filter(|e| e.disk == disk) {
                        self.entry(e)?;
                    }
                }
                Event::ChunkFrame { id, frame } => {
                    self.decoder.decode_into(&frame, &id, &mut self.out)?;
                    self.report.chunks_read += 1;
                    self.chunk(&id, &frame)?;
                }
                Event::Manifest(bytes) => match Manifest::decode(&bytes) {
                    Ok(m) => {
                        self.report.snapshot = Some(ObjectId::of(&bytes));
                        manifest = Some(m);
                    }
                    Err(e) => self
                        .report
                        .damage
                        .push(format!("the manifest is damaged: {e}")),
                },
                Event::Damage(d) => {
                    if strict {
                        return Err(Error::Incremental(format!("archive damaged: {d}")));
                    }
                    self.report.damage.push(damage_line(&d));
                    if self.positional().is_none() {
                        self.give_up_queue()?;
                    }
                }
                Event::Trailer(t) => {
                    trailer = Some(t);
                }
                _ => {}
            }
        }
        self.finish(manifest, trailer)
    }

    /// A map entry of the disk being restored.
    fn entry(&mut self, e: Placed) -> Result<()> {
        if self.positional().is_some() {
            let waiting = e.id.is_some_and(|id| {
                self.waiting
                    .get(&id)
                    .is_some_and(|w| w.iter().any(|x| x.index == e.index))
            });
            if self.placed.contains_key(&e.index) || waiting {
                return Ok(()); // a repeated entry (see WriteState::last_entry)
            }
            self.covered.push((e.offset, u64::from(e.len)));
            let Some(id) = e.id else {
                self.zero(e.offset, u64::from(e.len))?;
                self.placed.insert(e.index, None);
                return Ok(());
            };
            if self.copy_known(&id, e.offset)? {
                self.placed.insert(e.index, Some(id));
            } else {
                self.waiting.entry(id).or_default().push(e);
            }
            return Ok(());
        }
        let expected = self.queued_end();
        if e.offset < expected {
            return Ok(()); // a repeated entry, already queued or written
        }
        if e.offset > expected {
            // Entries went missing with a damaged map frame: those bytes are lost. What is
            // queued before them goes out first (or is lost too), then zeros for the gap.
            self.give_up_queue()?;
            let gap = e.offset - self.next_offset;
            self.report.lost.push((self.next_offset, gap));
            self.stream_zeros(gap)?;
        }
        self.queue.push_back(e);
        self.drain()
    }

    /// Stream: where the next entry should start (after everything written and queued).
    fn queued_end(&self) -> u64 {
        self.queue
            .back()
            .map_or(self.next_offset, |e| e.offset + u64::from(e.len))
    }

    /// Stream, after damage: a queued entry whose chunk has not arrived never will (a new
    /// chunk's frame follows its map entry at once), so queued entries go out now, with zeros
    /// for the lost ones, and the stream stays aligned.
    fn give_up_queue(&mut self) -> Result<()> {
        while let Some(e) = self.queue.pop_front() {
            if let Some(id) = e.id {
                let mut data = std::mem::take(&mut self.out);
                let found = self.spool.get(&id, &mut self.decoder, &mut data)?;
                if found {
                    self.stream_write(&data)?;
                }
                self.out = data;
                if found {
                    continue;
                }
                self.report.lost.push((e.offset, u64::from(e.len)));
            }
            self.stream_zeros(u64::from(e.len))?;
        }
        Ok(())
    }

    /// Writes `len` zeros at `offset` (positional): a hole in a file, zeros on a device.
    fn zero(&mut self, offset: u64, len: u64) -> Result<()> {
        self.progress.add(len);
        let Some((file, zeros)) = self.positional() else {
            return Ok(());
        };
        if !zeros {
            return Ok(());
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len() as u64) as usize;
            file.write_all_at(&ZEROS[..n], offset + done)
                .map_err(|e| self.dest_err(e))?;
            done += n as u64;
        }
        self.report.bytes_written += len;
        Ok(())
    }

    /// Positional: writes chunk `id` at `offset` if its bytes are known (written earlier or
    /// spooled).
    fn copy_known(&mut self, id: &ChunkId, offset: u64) -> Result<bool> {
        let mut data = std::mem::take(&mut self.out);
        let found = if let Some(&(at, len)) = self.written_at.get(id) {
            let (file, _) = self.positional().expect("positional");
            data.resize(len as usize, 0);
            file.read_exact_at(&mut data, at)
                .map_err(|e| self.dest_err(e))?;
            true
        } else {
            self.spool.get(id, &mut self.decoder, &mut data)?
        };
        if found {
            self.write_at(offset, &data)?;
        }
        self.out = data;
        Ok(found)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let (file, _) = self.positional().expect("positional");
        file.write_all_at(data, offset)
            .map_err(|e| self.dest_err(e))?;
        self.report.bytes_written += data.len() as u64;
        self.progress.add(data.len() as u64);
        Ok(())
    }

    /// A chunk frame (decoded into `self.out`).
    fn chunk(&mut self, id: &ChunkId, frame: &Frame) -> Result<()> {
        if self.positional().is_some() {
            match self.waiting.remove(id) {
                Some(entries) => {
                    let data = std::mem::take(&mut self.out);
                    for e in &entries {
                        self.write_at(e.offset, &data)?;
                        self.placed.insert(e.index, Some(*id));
                    }
                    self.written_at
                        .insert(*id, (entries[0].offset, data.len() as u32));
                    self.out = data;
                }
                // Not (yet) placed on this disk: another disk's, or a later entry's.
                None => self.spool.put(id, frame)?,
            }
            return Ok(());
        }
        self.spool.put(id, frame)?;
        self.drain()
    }

    /// Stream: writes queued entries, in order, while their data is at hand.
    fn drain(&mut self) -> Result<()> {
        while let Some(e) = self.queue.front().copied() {
            match e.id {
                None => self.stream_zeros(u64::from(e.len))?,
                Some(id) => {
                    let mut data = std::mem::take(&mut self.out);
                    let found = self.spool.get(&id, &mut self.decoder, &mut data)?;
                    if found {
                        self.stream_write(&data)?;
                    }
                    self.out = data;
                    if !found {
                        return Ok(());
                    }
                }
            }
            self.queue.pop_front();
        }
        Ok(())
    }

    fn stream_write(&mut self, data: &[u8]) -> Result<()> {
        let Sink::Stream(file) = &self.sink else {
            unreachable!("stream writes go to a stream");
        };
        let mut f: &File = file;
        f.write_all(data).map_err(|e| self.dest_err(e))?;
        self.next_offset += data.len() as u64;
        self.report.bytes_written += data.len() as u64;
        self.progress.add(data.len() as u64);
        Ok(())
    }

    fn stream_zeros(&mut self, mut len: u64) -> Result<()> {
        while len > 0 {
            let n = len.min(ZEROS.len() as u64) as usize;
            self.stream_write(&ZEROS[..n])?;
            len -= n as u64;
        }
        Ok(())
    }

    /// After the last frame: places what the manifest says and the maps missed, reports what
    /// is lost, and makes the destination durable.
    fn finish(&mut self, manifest: Option<Manifest>, trailer: Option<Trailer>) -> Result<()> {
        self.report.verified = trailer.is_some_and(|t| t.verified);
        match trailer {
            None => self
                .report
                .damage
                .push("the archive ends without its trailer (truncated)".into()),
            Some(t) if t.incomplete => self
                .report
                .damage
                .push("the archive was sealed incomplete (its backup was interrupted)".into()),
            _ => {}
        }
        let disk = manifest
            .as_ref()
            .and_then(|m| m.disks.get(self.disk as usize));
        let mut lost = std::mem::take(&mut self.report.lost);
        if disk.is_none() {
            self.report
                .damage
                .push("the manifest is missing; what the maps placed was restored".into());
            // Whatever no map frame reached is lost.
            if self.positional().is_some() {
                let mut at = 0;
                for (off, len) in crate::merge_ranges(std::mem::take(&mut self.covered)) {
                    if off > at {
                        lost.push((at, off - at));
                    }
                    at = at.max(off + len);
                }
                if self.size > at {
                    lost.push((at, self.size - at));
                }
            }
        }
        if let Some(disk) = disk {
            self.report.bytes_total = disk.source_len;
            let mut offset = 0u64;
            for (index, entry) in disk.entries.iter().enumerate() {
                let index = index as u64;
                let len = u64::from(entry.len);
                if self.positional().is_some() {
                    match self.placed.get(&index) {
                        Some(id) if *id == entry.id => {}
                        Some(_) => {
                            return Err(Error::Incremental(format!(
                                "the archive's map and manifest disagree about the chunk at offset {offset}; the archive is not trustworthy"
                            )))
                        }
                        None => match entry.id {
                            None => self.zero(offset, len)?,
                            Some(id) => {
                                if !self.copy_known(&id, offset)? {
                                    lost.push((offset, len));
                                }
                            }
                        },
                    }
                }
                offset += len;
            }
            // A file's length comes from the manifest (a stream disk's size was unknown at
            // the start); a device keeps its own.
            if let Some((file, false)) = self.positional() {
                file.set_len(disk.source_len)
                    .map_err(|e| self.dest_err(e))?;
            }
        }
        if self.positional().is_none() {
            // Whatever is still queued never arrived: zeros, reported.
            while let Some(e) = self.queue.pop_front() {
                if let Some(id) = e.id {
                    let mut data = std::mem::take(&mut self.out);
                    let found = self.spool.get(&id, &mut self.decoder, &mut data)?;
                    if found {
                        self.stream_write(&data)?;
                        self.out = data;
                        continue;
                    }
                    self.out = data;
                    lost.push((e.offset, u64::from(e.len)));
                }
                self.stream_zeros(u64::from(e.len))?;
            }
            let end = disk.map_or(self.size, |d| d.source_len);
            if self.next_offset < end {
                let gap = end - self.next_offset;
                lost.push((self.next_offset, gap));
                self.stream_zeros(gap)?;
            }
        } else {
            for entries in self.waiting.values() {
                for e in entries {
                    if !lost.iter().any(|&(o, _)| o == e.offset) {
                        lost.push((e.offset, u64::from(e.len)));
                    }
                }
            }
        }
        lost.sort_unstable();
        lost.dedup();
        self.report.lost = crate::merge_ranges(lost);
        if self.report.bytes_total == 0 {
            self.report.bytes_total = self.next_offset.max(self.report.bytes_written);
        }
        match &self.sink {
            Sink::Positional { file, .. } => file.sync_all().map_err(|e| self.dest_err(e))?,
            Sink::Stream(file) => {
                let mut f: &File = file;
                f.flush().map_err(|e| self.dest_err(e))?;
            }
        }
        Ok(())
    }
}
