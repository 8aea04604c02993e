//! A simulated disk for deterministic, seeded fault-injection tests (TigerBeetle's
//! `testing/storage.zig` idea): in-memory files and directories behind the [`Storage`]
//! trait, with a model of what is durable and what is only in the page cache.
//!
//! # The model
//! - A file has `cached` bytes (what reads see) and `durable` bytes (what survives a power
//!   loss), tracked per 512-byte sector. A write dirties sectors; `sync_data` makes the
//!   dirty sectors and the size durable. A *failed* `sync_data` persists a random part of
//!   them and marks the rest clean anyway (Linux after `EIO`: the "fsyncgate" pages stay
//!   readable in the cache, and a later successful fsync does not write them).
//! - A directory has `cached` and `durable` entries and a list of pending operations
//!   (create, remove, rename; each atomic). `sync_dir` makes them durable.
//! - [`Crash::PowerLoss`]: every file keeps its durable size or takes its cached one (or a
//!   sector boundary between them), every dirty sector independently becomes the new data
//!   or stays the old data, which reads as zeros where the file had no durable data yet (a
//!   torn write; sectors themselves are atomic: a write never damages bytes of its sector
//!   that were already durable, the "power-safe overwrite" that SQLite assumes by default
//!   and the log relies on when it appends to a segment's last sector), every pending
//!   directory operation
//!   independently happens or not; then the cache is the disk. [`Crash::ProcessCrash`]: the
//!   page cache survives, only the process is gone. Both end the current *epoch*: every
//!   handle and [`SimStorage`] of an earlier epoch fails every call from then on (a dead
//!   process does no IO), and locks are released.
//! - A capacity: writes that would grow the files past it write what fits and fail with
//!   `ErrorKind::StorageFull` (`ENOSPC`), as a full tmpfs does. Space is counted as the
//!   cached sizes of linked or open files.
//! - Faults, each a probability per call ([`Faults`]): read errors, short reads, bits
//!   flipped on the way to the caller, write errors after a partial write, failed fsyncs of
//!   files and directories, failed metadata calls. And on request: a power loss after the
//!   next `n` calls (so it lands in the middle of an operation), and bits flipped at rest.
//!
//! Everything is decided by one seeded generator, in call order, so a single-threaded
//! workload replays exactly from its seed. Calls of a dead epoch draw nothing from it.
//!
//! This module does not model: garbage (rather than zeros) in torn sectors, reordering of
//! operations within one directory's history beyond "each independently", or hard links.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::storage::{Storage, StorageFile, StorageLock};

/// The unit of torn writes and of dirty tracking.
pub const SECTOR_BYTES: u64 = 512;

/// A small deterministic generator (SplitMix64): the simulation's only source of chance.
#[derive(Clone, Debug)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: unbiased enough for a simulation, and branch-free.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `low..high` (`low` when the range is empty).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low))
    }

    /// True with probability `per_million` / 1,000,000.
    pub fn chance(&mut self, per_million: u32) -> bool {
        per_million > 0 && self.below(1_000_000) < u64::from(per_million)
    }
}

/// Fault probabilities, each in calls per million (0 = never).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// `read_at` fails with `EIO`.
    pub read_error: u32,
    /// `read_at` returns fewer bytes than it could.
    pub read_short: u32,
    /// `read_at` returns the bytes with one bit flipped (the disk is fine).
    pub read_flip: u32,
    /// `write_all_at` writes a random prefix, then fails with `EIO`.
    pub write_error: u32,
    /// `sync_data` fails (persisting a random part of the dirty sectors).
    pub sync_error: u32,
    /// `sync_dir` fails (persisting a random part of the pending entries).
    pub sync_dir_error: u32,
    /// `open`, `create_dir`, `remove_file`, `remove_dir`, `rename`, `list_dir` fail.
    pub metadata_error: u32,
}

/// How the simulated machine goes down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// The power goes: only durable data survives, torn as described in the module docs.
    PowerLoss,
    /// The process dies (`kill -9`); the page cache and the disk stay.
    ProcessCrash,
}

/// Counts of what the disk did and injected, for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub n_calls: u64,
    pub n_reads: u64,
    pub n_writes: u64,
    pub n_syncs: u64,
    pub n_read_errors: u64,
    pub n_short_reads: u64,
    pub n_read_flips: u64,
    pub n_write_errors: u64,
    pub n_sync_errors: u64,
    pub n_sync_dir_errors: u64,
    pub n_metadata_errors: u64,
    pub n_no_space: u64,
    pub n_power_losses: u64,
    pub n_process_crashes: u64,
    pub n_flips_at_rest: u64,
}

/// A durable file as [`SimDisk::durable_files`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFileInfo {
    pub path: PathBuf,
    pub durable_size_bytes: u64,
    /// Where the newest write that a successful `sync_data` made durable started (`None`
    /// if none): for a WAL segment, the start of its last acknowledged group commit.
    pub last_synced_write_position: Option<u64>,
}

type Ino = u64;
const ROOT_INO: Ino = 0;

#[derive(Default)]
struct FileNode {
    cached: Vec<u8>,
    durable: Vec<u8>,
    /// Sectors written since their last successful fsync.
    dirty: BTreeSet<u64>,
    /// Sectors whose fsync failed: clean in the cache, never reaching the disk.
    lost: BTreeSet<u64>,
    n_links: u32,
    n_handles: u32,
    /// Where the latest writes started whose bytes are still (partly) in the file, oldest
    /// first; the last is where the newest surviving write begins.
    write_positions: Vec<u64>,
    /// `write_positions` as of the last successful `sync_data`.
    synced_write_positions: Vec<u64>,
    flips: Vec<AtRestFlip>,
}

/// Write positions remembered per file.
const WRITE_POSITIONS_MAX: usize = 8;

#[derive(Default)]
struct DirNode {
    cached: BTreeMap<String, Ino>,
    durable: BTreeMap<String, Ino>,
    pending: Vec<DirOp>,
}

/// A directory change; each names the inode it concerns, so that applying it to the
/// durable entries later never moves or removes another inode that had the same name.
#[derive(Clone, Debug)]
enum DirOp {
    Link(String, Ino),
    Unlink(String, Ino),
    Rename(String, String, Ino),
}

enum Inode {
    File(FileNode),
    Dir(DirNode),
}

/// A bit flipped at rest, followed through later writes, syncs and crashes so that it can
/// be repaired exactly where it still is.
#[derive(Clone, Copy, Debug)]
struct AtRestFlip {
    position: u64,
    mask: u8,
    /// The cached byte still carries the flip (no write replaced it).
    in_cached: bool,
    /// The durable byte still carries the flip.
    in_durable: bool,
}

struct DiskState {
    rng: SimRng,
    faults: Faults,
    faults_paused: bool,
    epoch: u64,
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    capacity_bytes: Option<u64>,
    crash_countdown: Option<u64>,
    /// Lock file inode -> id of the live guard holding it.
    locks: BTreeMap<Ino, u64>,
    next_lock_id: u64,
    stats: SimStats,
}

/// The simulated hardware: survives crashes; hands out a [`SimStorage`] per process life.
pub struct SimDisk {
    state: Mutex<DiskState>,
}

/// One process's view of a [`SimDisk`]; dead (every call fails) once its epoch ends.
pub struct SimStorage {
    disk: Arc<SimDisk>,
    epoch: u64,
}

struct SimFile {
    disk: Arc<SimDisk>,
    epoch: u64,
    ino: Ino,
}

struct SimLockGuard {
    disk: Arc<SimDisk>,
    ino: Ino,
    lock_id: u64,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated {what}"))
}

fn no_space() -> io::Error {
    io::Error::from(io::ErrorKind::StorageFull)
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

/// The normal components of an absolute path.
fn components(path: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => names.push(
                name.to_str()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "non-UTF-8 name"))?
                    .to_owned(),
            ),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "simulated paths are absolute and normalized",
                ));
            }
        }
    }
    Ok(names)
}

fn sector_range(position: u64, len: u64) -> std::ops::Range<u64> {
    if len == 0 {
        return 0..0;
    }
    position / SECTOR_BYTES..(position + len).div_ceil(SECTOR_BYTES)
}

impl FileNode {
    fn write(&mut self, position: u64, bytes: &[u8]) {
        let end = position as usize + bytes.len();
        if end > self.cached.len() {
            self.cached.resize(end, 0);
        }
        if let Some(target) = self.cached.get_mut(position as usize..end) {
            target.copy_from_slice(bytes);
        }
        for sector in sector_range(position, bytes.len() as u64) {
            self.dirty.insert(sector);
            self.lost.remove(&sector);
        }
        for flip in &mut self.flips {
            if flip.position >= position && flip.position < end as u64 {
                flip.in_cached = false;
            }
        }
        if self.write_positions.len() == WRITE_POSITIONS_MAX {
            self.write_positions.remove(0);
        }
        self.write_positions.push(position);
    }

    /// Forgets writes that a shorter file no longer holds.
    fn cut_write_positions(positions: &mut Vec<u64>, size_bytes: u64) {
        while positions
            .last()
            .is_some_and(|position| *position >= size_bytes)
        {
            positions.pop();
        }
    }

    /// After the durable bytes changed (sync, crash): forget flips no copy carries.
    fn prune_flips(&mut self) {
        let (cached_len, durable_len) = (self.cached.len() as u64, self.durable.len() as u64);
        for flip in &mut self.flips {
            flip.in_cached &= flip.position < cached_len;
            flip.in_durable &= flip.position < durable_len;
        }
        self.flips.retain(|flip| flip.in_cached || flip.in_durable);
    }

    /// A sector was copied from the cache to the disk: its flips follow the cache.
    fn flips_follow_cache(&mut self, sector: u64) {
        for flip in &mut self.flips {
            if flip.position / SECTOR_BYTES == sector {
                flip.in_durable = flip.in_cached;
            }
        }
    }

    fn set_size(&mut self, size_bytes: u64) {
        let old = self.cached.len() as u64;
        self.cached.resize(size_bytes as usize, 0);
        FileNode::cut_write_positions(&mut self.write_positions, size_bytes);
        for flip in &mut self.flips {
            flip.in_cached &= flip.position < size_bytes;
        }
        let n_sectors = size_bytes.div_ceil(SECTOR_BYTES);
        self.dirty.retain(|sector| *sector < n_sectors);
        self.lost.retain(|sector| *sector < n_sectors);
        // The sector holding the new end, and any the file grew into, differ from disk.
        let (low, high) = (old.min(size_bytes), old.max(size_bytes));
        for sector in (low / SECTOR_BYTES)..high.div_ceil(SECTOR_BYTES).min(n_sectors.max(1)) {
            if sector < n_sectors {
                self.dirty.insert(sector);
            }
        }
    }

    /// Copies sector `sector` of the cache to the disk (the disk already has the cache's
    /// length).
    fn persist_sector(&mut self, sector: u64) {
        let start = (sector * SECTOR_BYTES) as usize;
        let end = (start + SECTOR_BYTES as usize).min(self.cached.len());
        if start >= end {
            return;
        }
        if let (Some(source), Some(target)) = (
            self.cached.get(start..end),
            self.durable.get_mut(start..end),
        ) {
            target.copy_from_slice(source);
        }
        self.flips_follow_cache(sector);
    }

    fn sync(&mut self) {
        self.durable.resize(self.cached.len(), 0);
        let dirty = std::mem::take(&mut self.dirty);
        for sector in dirty {
            self.persist_sector(sector);
        }
        self.synced_write_positions = self.write_positions.clone();
        self.prune_flips();
    }

    fn failed_sync(&mut self, rng: &mut SimRng) {
        if rng.chance(500_000) {
            self.durable.resize(self.cached.len(), 0);
        }
        let dirty = std::mem::take(&mut self.dirty);
        for sector in dirty {
            if rng.chance(500_000) && (sector * SECTOR_BYTES) < self.durable.len() as u64 {
                self.persist_sector(sector);
            } else {
                self.lost.insert(sector);
            }
        }
        self.prune_flips();
    }

    fn power_loss(&mut self, rng: &mut SimRng) {
        let old_len = self.durable.len() as u64;
        let cached_len = self.cached.len() as u64;
        let len = if old_len == cached_len {
            old_len
        } else {
            match rng.below(3) {
                0 => old_len,
                1 => cached_len,
                _ => {
                    let (low, high) = (old_len.min(cached_len), old_len.max(cached_len));
                    let boundary = rng.range(low, high + 1);
                    (boundary / SECTOR_BYTES * SECTOR_BYTES).clamp(low, high)
                }
            }
        };
        let mut bytes = vec![0u8; len as usize];
        for sector in 0..len.div_ceil(SECTOR_BYTES) {
            let start = (sector * SECTOR_BYTES) as usize;
            let end = (start + SECTOR_BYTES as usize).min(len as usize);
            // A sector written since its last sync ends up old or new, never a mix and
            // never damaged where it was already durable ("power-safe overwrite", which the
            // log assumes as SQLite does by default); old bytes past the old size are
            // zeros (an extent allocated, its data never written).
            let take_new = self.dirty.contains(&sector) && rng.chance(500_000);
            let source: &[u8] = if take_new {
                &self.cached
            } else {
                &self.durable
            };
            if let Some(target) = bytes.get_mut(start..end) {
                for (idx, byte) in target.iter_mut().enumerate() {
                    *byte = source.get(start + idx).copied().unwrap_or(0);
                }
            }
            if take_new {
                self.flips_follow_cache(sector);
            }
        }
        self.write_positions = std::mem::take(&mut self.synced_write_positions);
        FileNode::cut_write_positions(&mut self.write_positions, len);
        self.synced_write_positions = self.write_positions.clone();
        self.durable = bytes.clone();
        self.cached = bytes;
        self.dirty.clear();
        self.lost.clear();
        self.n_handles = 0;
        for flip in &mut self.flips {
            flip.in_cached = flip.in_durable;
        }
        self.prune_flips();
    }
}

impl DirNode {
    fn apply_durable(&mut self, op: &DirOp) {
        match op {
            DirOp::Link(name, ino) => {
                self.durable.insert(name.clone(), *ino);
            }
            DirOp::Unlink(name, ino) => {
                if self.durable.get(name) == Some(ino) {
                    self.durable.remove(name);
                }
            }
            DirOp::Rename(from, to, ino) => {
                // Persisting a rename without the link that made `from` is the state after
                // both: the inode under its new name.
                if self.durable.get(from) == Some(ino) {
                    self.durable.remove(from);
                }
                self.durable.insert(to.clone(), *ino);
            }
        }
    }
}

impl DiskState {
    /// The per-call preamble: refuse dead epochs (without drawing from the generator), count
    /// the call, and fire an armed power loss.
    fn begin(&mut self, epoch: u64) -> io::Result<()> {
        if epoch != self.epoch {
            return Err(eio("call from a crashed process"));
        }
        self.stats.n_calls += 1;
        if let Some(countdown) = self.crash_countdown.as_mut() {
            *countdown = countdown.saturating_sub(1);
            if *countdown == 0 {
                self.crash(Crash::PowerLoss);
                return Err(eio("power loss"));
            }
        }
        Ok(())
    }

    /// Draws whether the fault `pick` selects happens on this call.
    fn fault_of(&mut self, pick: impl Fn(&Faults) -> u32) -> bool {
        let per_million = pick(&self.faults);
        !self.faults_paused && self.rng.chance(per_million)
    }

    fn dir(&self, ino: Ino) -> Option<&DirNode> {
        match self.inodes.get(&ino) {
            Some(Inode::Dir(dir)) => Some(dir),
            _ => None,
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Option<&mut DirNode> {
        match self.inodes.get_mut(&ino) {
            Some(Inode::Dir(dir)) => Some(dir),
            _ => None,
        }
    }

    fn file_mut(&mut self, ino: Ino) -> Option<&mut FileNode> {
        match self.inodes.get_mut(&ino) {
            Some(Inode::File(file)) => Some(file),
            _ => None,
        }
    }

    fn resolve(&self, names: &[String]) -> Option<Ino> {
        let mut ino = ROOT_INO;
        for name in names {
            ino = *self.dir(ino)?.cached.get(name)?;
        }
        Some(ino)
    }

    /// The directory holding the last component, and that component.
    fn parent(&self, path: &Path) -> io::Result<(Ino, String)> {
        let mut names = components(path)?;
        let name = names
            .pop()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the root"))?;
        let parent = self.resolve(&names).ok_or_else(not_found)?;
        if self.dir(parent).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        Ok((parent, name))
    }

    fn link(&mut self, parent: Ino, name: &str, inode: Inode) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode);
        if let Some(Inode::File(file)) = self.inodes.get_mut(&ino) {
            file.n_links = 1;
        }
        if let Some(dir) = self.dir_mut(parent) {
            dir.cached.insert(name.to_owned(), ino);
            dir.pending.push(DirOp::Link(name.to_owned(), ino));
        }
        ino
    }

    fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|inode| match inode {
                Inode::File(file) if file.n_links > 0 || file.n_handles > 0 => {
                    file.cached.len() as u64
                }
                _ => 0,
            })
            .sum()
    }

    /// Bytes a file may still grow by.
    fn available_bytes(&self) -> u64 {
        match self.capacity_bytes {
            None => u64::MAX,
            Some(capacity) => capacity.saturating_sub(self.used_bytes()),
        }
    }

    fn crash(&mut self, crash: Crash) {
        self.epoch += 1;
        self.crash_countdown = None;
        self.locks.clear();
        match crash {
            Crash::ProcessCrash => {
                self.stats.n_process_crashes += 1;
                for inode in self.inodes.values_mut() {
                    if let Inode::File(file) = inode {
                        file.n_handles = 0;
                    }
                }
            }
            Crash::PowerLoss => {
                self.stats.n_power_losses += 1;
                let rng = &mut self.rng;
                for inode in self.inodes.values_mut() {
                    match inode {
                        Inode::File(file) => file.power_loss(rng),
                        Inode::Dir(dir) => {
                            let pending = std::mem::take(&mut dir.pending);
                            for op in &pending {
                                if rng.chance(500_000) {
                                    dir.apply_durable(op);
                                }
                            }
                            dir.cached = dir.durable.clone();
                        }
                    }
                }
                self.collect_garbage();
            }
        }
    }

    /// Drops inodes no durable path reaches and recounts links (after a power loss).
    fn collect_garbage(&mut self) {
        let mut reachable = BTreeSet::from([ROOT_INO]);
        let mut links: BTreeMap<Ino, u32> = BTreeMap::new();
        let mut stack = vec![ROOT_INO];
        while let Some(ino) = stack.pop() {
            let children: Vec<Ino> = self
                .dir(ino)
                .map(|dir| dir.cached.values().copied().collect())
                .unwrap_or_default();
            for child in children {
                *links.entry(child).or_default() += 1;
                if reachable.insert(child) {
                    stack.push(child);
                }
            }
        }
        self.inodes.retain(|ino, _| reachable.contains(ino));
        for (ino, inode) in &mut self.inodes {
            if let Inode::File(file) = inode {
                file.n_links = links.get(ino).copied().unwrap_or(0);
            }
        }
    }

    fn walk_files(&self, dir_ino: Ino, path: &Path, out: &mut Vec<(PathBuf, Ino)>) {
        let Some(dir) = self.dir(dir_ino) else {
            return;
        };
        for (name, ino) in &dir.durable {
            let child = path.join(name);
            match self.inodes.get(ino) {
                Some(Inode::File(_)) => out.push((child, *ino)),
                Some(Inode::Dir(_)) => self.walk_files(*ino, &child, out),
                None => {}
            }
        }
    }
}

impl SimDisk {
    /// An empty disk whose chance is decided by `seed`.
    pub fn new(seed: u64) -> Arc<SimDisk> {
        let mut inodes = BTreeMap::new();
        inodes.insert(ROOT_INO, Inode::Dir(DirNode::default()));
        Arc::new(SimDisk {
            state: Mutex::new(DiskState {
                rng: SimRng::new(seed),
                faults: Faults::default(),
                faults_paused: false,
                epoch: 0,
                inodes,
                next_ino: ROOT_INO + 1,
                capacity_bytes: None,
                crash_countdown: None,
                locks: BTreeMap::new(),
                next_lock_id: 0,
                stats: SimStats::default(),
            }),
        })
    }

    /// A [`Storage`] for the current process life (epoch).
    pub fn storage(self: &Arc<Self>) -> Arc<SimStorage> {
        Arc::new(SimStorage {
            disk: Arc::clone(self),
            epoch: self.state.lock().epoch,
        })
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().faults = faults;
    }

    pub fn faults(&self) -> Faults {
        self.state.lock().faults
    }

    /// Stops (or resumes) injecting [`Faults`]; a full disk and armed crashes still apply.
    pub fn pause_faults(&self, paused: bool) {
        self.state.lock().faults_paused = paused;
    }

    /// Limits the bytes all files may hold (`None`: unlimited).
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.state.lock().capacity_bytes = capacity_bytes;
    }

    pub fn capacity(&self) -> Option<u64> {
        self.state.lock().capacity_bytes
    }

    /// Bytes held by linked or open files (what a capacity is measured against).
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().used_bytes()
    }

    /// Crashes now.
    pub fn crash(&self, crash: Crash) {
        self.state.lock().crash(crash);
    }

    /// Loses power during the `n_calls`-th storage call from now (that call fails and has
    /// no effect), so a crash can land in the middle of a write, a checkpoint or a
    /// recovery. `0` disarms.
    pub fn crash_after_calls(&self, n_calls: u64) {
        self.state.lock().crash_countdown = (n_calls > 0).then_some(n_calls);
    }

    /// True while a power loss is armed and has not fired.
    pub fn crash_armed(&self) -> bool {
        self.state.lock().crash_countdown.is_some()
    }

    /// The current process life; it changes with every crash.
    pub fn epoch(&self) -> u64 {
        self.state.lock().epoch
    }

    pub fn stats(&self) -> SimStats {
        self.state.lock().stats
    }

    /// Every file reachable through durable directory entries, by path.
    pub fn durable_files(&self) -> Vec<SimFileInfo> {
        let state = self.state.lock();
        let mut files = Vec::new();
        state.walk_files(ROOT_INO, Path::new("/"), &mut files);
        files
            .into_iter()
            .filter_map(|(path, ino)| match state.inodes.get(&ino) {
                Some(Inode::File(file)) => Some(SimFileInfo {
                    path,
                    durable_size_bytes: file.durable.len() as u64,
                    last_synced_write_position: file.synced_write_positions.last().copied(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Flips bit `bit` of byte `position` of the durable (and cached) data of `path`, as
    /// decay at rest would; remembered until [`SimDisk::undo_flips_at_rest`] or until the
    /// byte is rewritten. False if there is no such byte.
    pub fn flip_at_rest(&self, path: &Path, position: u64, bit: u8) -> bool {
        let mut state = self.state.lock();
        let Some(ino) = components(path)
            .ok()
            .and_then(|names| state.resolve(&names))
        else {
            return false;
        };
        let Some(file) = state.file_mut(ino) else {
            return false;
        };
        let mask = 1u8 << (bit % 8);
        let Some(byte) = file.durable.get_mut(position as usize) else {
            return false;
        };
        *byte ^= mask;
        let in_cached = match file.cached.get_mut(position as usize) {
            Some(byte) => {
                *byte ^= mask;
                true
            }
            None => false,
        };
        file.flips.push(AtRestFlip {
            position,
            mask,
            in_cached,
            in_durable: true,
        });
        state.stats.n_flips_at_rest += 1;
        true
    }

    /// Number of flips at rest not yet undone or overwritten.
    pub fn n_flips_at_rest(&self) -> usize {
        self.state
            .lock()
            .inodes
            .values()
            .map(|inode| match inode {
                Inode::File(file) => file.flips.len(),
                Inode::Dir(_) => 0,
            })
            .sum()
    }

    /// Repairs every flip at rest that is still there (the tests' "restore from a good
    /// copy"), so that what it hid can be checked again.
    pub fn undo_flips_at_rest(&self) {
        let mut state = self.state.lock();
        for inode in state.inodes.values_mut() {
            let Inode::File(file) = inode else {
                continue;
            };
            for flip in std::mem::take(&mut file.flips) {
                let idx = flip.position as usize;
                if flip.in_durable
                    && let Some(byte) = file.durable.get_mut(idx)
                {
                    *byte ^= flip.mask;
                }
                if flip.in_cached
                    && let Some(byte) = file.cached.get_mut(idx)
                {
                    *byte ^= flip.mask;
                }
            }
        }
    }

    /// Creates `path` (and its directories) durably with `bytes` as its content: for
    /// building a directory to recover from (fuzzing).
    pub fn put_durable_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        let mut names = components(path)?;
        let name = names
            .pop()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the root"))?;
        let mut dir_ino = ROOT_INO;
        for dir_name in names {
            let existing = state
                .dir(dir_ino)
                .ok_or_else(not_found)?
                .cached
                .get(&dir_name)
                .copied();
            dir_ino = match existing {
                Some(ino) => ino,
                None => state.link(dir_ino, &dir_name, Inode::Dir(DirNode::default())),
            };
        }
        let existing = state
            .dir(dir_ino)
            .ok_or_else(not_found)?
            .cached
            .get(&name)
            .copied();
        let ino = match existing {
            Some(ino) => ino,
            None => state.link(dir_ino, &name, Inode::File(FileNode::default())),
        };
        let file = state.file_mut(ino).ok_or_else(|| eio("not a file"))?;
        file.cached = bytes.to_vec();
        file.durable = bytes.to_vec();
        file.dirty.clear();
        file.lost.clear();
        for inode in state.inodes.values_mut() {
            if let Inode::Dir(dir) = inode {
                let pending = std::mem::take(&mut dir.pending);
                for op in &pending {
                    dir.apply_durable(op);
                }
            }
        }
        Ok(())
    }

    /// The cached content of `path`, if it is a file.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.lock();
        let ino = state.resolve(&components(path).ok()?)?;
        match state.inodes.get(&ino) {
            Some(Inode::File(file)) => Some(file.cached.clone()),
            _ => None,
        }
    }
}

impl SimStorage {
    /// The metadata-call preamble: epoch, crash countdown, injected metadata failure.
    fn begin_metadata(&self, state: &mut DiskState, what: &str) -> io::Result<()> {
        state.begin(self.epoch)?;
        if state.fault_of(|faults| faults.metadata_error) {
            state.stats.n_metadata_errors += 1;
            return Err(eio(what));
        }
        Ok(())
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.disk.state.lock();
        self.begin_metadata(&mut state, "open failure")?;
        let (parent, name) = state.parent(path)?;
        let existing = state
            .dir(parent)
            .and_then(|dir| dir.cached.get(&name))
            .copied();
        let ino = match existing {
            Some(ino) => ino,
            None if create => state.link(parent, &name, Inode::File(FileNode::default())),
            None => return Err(not_found()),
        };
        let file = state
            .file_mut(ino)
            .ok_or_else(|| io::Error::new(io::ErrorKind::IsADirectory, "is a directory"))?;
        file.n_handles += 1;
        Ok(Arc::new(SimFile {
            disk: Arc::clone(&self.disk),
            epoch: self.epoch,
            ino,
        }))
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.disk.state.lock();
        self.begin_metadata(&mut state, "mkdir failure")?;
        let mut dir_ino = ROOT_INO;
        for name in components(path)? {
            let existing = state
                .dir(dir_ino)
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotADirectory, "not a directory"))?
                .cached
                .get(&name)
                .copied();
            dir_ino = match existing {
                Some(ino) => ino,
                None => state.link(dir_ino, &name, Inode::Dir(DirNode::default())),
            };
        }
        match state.dir(dir_ino) {
            Some(_) => Ok(()),
            None => Err(io::Error::from(io::ErrorKind::AlreadyExists)),
        }
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut state = self.disk.state.lock();
        self.begin_metadata(&mut state, "readdir failure")?;
        let ino = state.resolve(&components(path)?).ok_or_else(not_found)?;
        let dir = state
            .dir(ino)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotADirectory, "not a directory"))?;
        Ok(dir.cached.keys().cloned().collect())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.disk.state.lock();
        self.begin_metadata(&mut state, "unlink failure")?;
        let (parent, name) = state.parent(path)?;
        let ino = state
            .dir(parent)
            .and_then(|dir| dir.cached.get(&name))
            .copied()
            .ok_or_else(not_found)?;
        let file = state
            .file_mut(ino)
            .ok_or_else(|| io::Error::new(io::ErrorKind::IsADirectory, "is a directory"))?;
        file.n_links = file.n_links.saturating_sub(1);
        if let Some(dir) = state.dir_mut(parent) {
            dir.cached.remove(&name);
            dir.pending.push(DirOp::Unlink(name, ino));
        }
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.disk.state.lock();
        self.begin_metadata(&mut state, "rmdir failure")?;
        let (parent, name) = state.parent(path)?;
        let ino = state
            .dir(parent)
            .and_then(|dir| dir.cached.get(&name))
            .copied()
            .ok_or_else(not_found)?;
        let dir = state
            .dir(ino)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotADirectory, "not a directory"))?;
        if !dir.cached.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                "not empty",
            ));
        }
        if let Some(dir) = state.dir_mut(parent) {
            dir.cached.remove(&name);
            dir.pending.push(DirOp::Unlink(name, ino));
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.disk.state.lock();
        self.begin_metadata(&mut state, "rename failure")?;
        let (from_parent, from_name) = state.parent(from)?;
        let (to_parent, to_name) = state.parent(to)?;
        if from_parent != to_parent {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the simulation renames within one directory only",
            ));
        }
        let ino = state
            .dir(from_parent)
            .and_then(|dir| dir.cached.get(&from_name))
            .copied()
            .ok_or_else(not_found)?;
        let replaced = state
            .dir(to_parent)
            .and_then(|dir| dir.cached.get(&to_name))
            .copied();
        if let Some(replaced) = replaced {
            match state.inodes.get_mut(&replaced) {
                Some(Inode::File(file)) => file.n_links = file.n_links.saturating_sub(1),
                Some(Inode::Dir(dir)) if dir.cached.is_empty() => {}
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::DirectoryNotEmpty,
                        "not empty",
                    ));
                }
            }
        }
        if let Some(dir) = state.dir_mut(from_parent) {
            dir.cached.remove(&from_name);
            dir.cached.insert(to_name.clone(), ino);
            dir.pending.push(DirOp::Rename(from_name, to_name, ino));
        }
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.disk.state.lock();
        state.begin(self.epoch)?;
        let ino = state.resolve(&components(path)?).ok_or_else(not_found)?;
        let failed = state.fault_of(|faults| faults.sync_dir_error);
        if failed {
            state.stats.n_sync_dir_errors += 1;
        }
        let mut chances = Vec::new();
        if failed {
            let n_pending = state.dir(ino).map_or(0, |dir| dir.pending.len());
            for _ in 0..n_pending {
                chances.push(state.rng.chance(500_000));
            }
        }
        let dir = state
            .dir_mut(ino)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotADirectory, "not a directory"))?;
        let pending = std::mem::take(&mut dir.pending);
        for (op_idx, op) in pending.into_iter().enumerate() {
            if !failed || chances.get(op_idx).copied().unwrap_or(false) {
                dir.apply_durable(&op);
            } else {
                dir.pending.push(op);
            }
        }
        if failed {
            return Err(eio("directory fsync failure"));
        }
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<StorageLock> {
        // The handle only serves to create the file.
        drop(self.open(path, true)?);
        let mut state = self.disk.state.lock();
        let ino = state.resolve(&components(path)?).ok_or_else(not_found)?;
        if state.locks.contains_key(&ino) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let lock_id = state.next_lock_id;
        state.next_lock_id += 1;
        state.locks.insert(ino, lock_id);
        Ok(Box::new(SimLockGuard {
            disk: Arc::clone(&self.disk),
            ino,
            lock_id,
        }))
    }
}

impl Drop for SimLockGuard {
    fn drop(&mut self) {
        let mut state = self.disk.state.lock();
        if state.locks.get(&self.ino) == Some(&self.lock_id) {
            state.locks.remove(&self.ino);
        }
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut state = self.disk.state.lock();
        if state.epoch == self.epoch
            && let Some(file) = state.file_mut(self.ino)
        {
            file.n_handles = file.n_handles.saturating_sub(1);
        }
    }
}

impl SimFile {
    fn with_file<T>(&self, f: impl FnOnce(&mut DiskState, Ino) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.disk.state.lock();
        state.begin(self.epoch)?;
        if state.file_mut(self.ino).is_none() {
            return Err(eio("file vanished"));
        }
        f(&mut state, self.ino)
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.with_file(|state, ino| {
            state.stats.n_reads += 1;
            if state.fault_of(|faults| faults.read_error) {
                state.stats.n_read_errors += 1;
                return Err(eio("read error"));
            }
            let short = state.fault_of(|faults| faults.read_short);
            let flip = state.fault_of(|faults| faults.read_flip);
            let short_draw = state.rng.next_u64();
            let flip_draw = state.rng.next_u64();
            let file = state.file_mut(ino).ok_or_else(|| eio("file vanished"))?;
            let len = file.cached.len() as u64;
            if position >= len || buf.is_empty() {
                return Ok(0);
            }
            let mut n = (len - position).min(buf.len() as u64) as usize;
            let short = short && n > 1;
            if short {
                n = 1 + (short_draw % (n as u64 - 1)) as usize;
            }
            let start = position as usize;
            if let (Some(target), Some(source)) =
                (buf.get_mut(..n), file.cached.get(start..start + n))
            {
                target.copy_from_slice(source);
            }
            if flip {
                let bit = flip_draw % (n as u64 * 8);
                if let Some(byte) = buf.get_mut((bit / 8) as usize) {
                    *byte ^= 1 << (bit % 8);
                }
                state.stats.n_read_flips += 1;
            }
            if short {
                state.stats.n_short_reads += 1;
            }
            Ok(n)
        })
    }

    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.with_file(|state, ino| {
            state.stats.n_writes += 1;
            let failed = state.fault_of(|faults| faults.write_error);
            let prefix_draw = state.rng.below(buf.len() as u64 + 1);
            let available = state.available_bytes();
            let file = state.file_mut(ino).ok_or_else(|| eio("file vanished"))?;
            let len = file.cached.len() as u64;
            let end = position + buf.len() as u64;
            let growth = end.saturating_sub(len);
            let (n_written, error) = if growth > available {
                // Like a full tmpfs: what fits is written, then ENOSPC.
                let fits = (len + available)
                    .saturating_sub(position)
                    .min(buf.len() as u64);
                (fits, Some(no_space()))
            } else if failed {
                (prefix_draw, Some(eio("write error")))
            } else {
                (buf.len() as u64, None)
            };
            if n_written > 0
                && let Some(written) = buf.get(..n_written as usize)
            {
                file.write(position, written);
            }
            match error {
                None => Ok(()),
                Some(error) => {
                    if error.kind() == io::ErrorKind::StorageFull {
                        state.stats.n_no_space += 1;
                    } else {
                        state.stats.n_write_errors += 1;
                    }
                    Err(error)
                }
            }
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with_file(|state, ino| {
            state.stats.n_syncs += 1;
            let failed = state.fault_of(|faults| faults.sync_error);
            let mut rng = state.rng.clone();
            let file = state.file_mut(ino).ok_or_else(|| eio("file vanished"))?;
            if failed {
                file.failed_sync(&mut rng);
            } else {
                file.sync();
            }
            state.rng = rng;
            if failed {
                state.stats.n_sync_errors += 1;
                return Err(eio("fsync failure"));
            }
            Ok(())
        })
    }

    fn size_bytes(&self) -> io::Result<u64> {
        self.with_file(|state, ino| {
            let file = state.file_mut(ino).ok_or_else(|| eio("file vanished"))?;
            Ok(file.cached.len() as u64)
        })
    }

    fn set_size_bytes(&self, size_bytes: u64) -> io::Result<()> {
        self.with_file(|state, ino| {
            let available = state.available_bytes();
            let file = state.file_mut(ino).ok_or_else(|| eio("file vanished"))?;
            let growth = size_bytes.saturating_sub(file.cached.len() as u64);
            if growth > available {
                state.stats.n_no_space += 1;
                return Err(no_space());
            }
            file.set_size(size_bytes);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn synced_data_and_entries_survive_a_power_loss_and_unsynced_may_not() {
        let disk = SimDisk::new(7);
        let storage = disk.storage();
        storage.create_dir(&path("/d")).expect("mkdir");
        storage.sync_dir(&path("/")).expect("sync root");
        let file = storage.open(&path("/d/f"), true).expect("open");
        file.write_all_at(b"durable", 0).expect("write");
        file.sync_data().expect("sync");
        storage.sync_dir(&path("/d")).expect("sync dir");
        file.write_all_at(b"maybe", 7).expect("write");
        disk.crash(Crash::PowerLoss);
        assert!(
            file.read_at(&mut [0; 4], 0).is_err(),
            "dead epoch refuses IO"
        );
        let storage = disk.storage();
        let file = storage.open(&path("/d/f"), false).expect("durable entry");
        let mut buf = vec![0u8; 64];
        let n = crate::storage::read_fully_at(file.as_ref(), &mut buf, 0).expect("read");
        assert!(n >= 7);
        assert_eq!(buf.get(..7), Some(&b"durable"[..]));
    }

    #[test]
    fn unsynced_entries_can_vanish_and_renames_are_atomic() {
        let mut n_vanished = 0;
        for seed in 0..64 {
            let disk = SimDisk::new(seed);
            let storage = disk.storage();
            let old = storage.open(&path("/ckpt"), true).expect("open");
            old.write_all_at(b"old", 0).expect("write");
            old.sync_data().expect("sync");
            storage.sync_dir(&path("/")).expect("sync");
            let new = storage.open(&path("/ckpt.tmp"), true).expect("open");
            new.write_all_at(b"new", 0).expect("write");
            new.sync_data().expect("sync");
            storage
                .rename(&path("/ckpt.tmp"), &path("/ckpt"))
                .expect("rename");
            let other = storage.open(&path("/other"), true).expect("open");
            drop(other);
            disk.crash(Crash::PowerLoss);
            let storage = disk.storage();
            let file = storage.open(&path("/ckpt"), false).expect("never missing");
            let mut buf = [0u8; 3];
            file.read_at(&mut buf, 0).expect("read");
            assert!(&buf == b"old" || &buf == b"new");
            if storage.open(&path("/other"), false).is_err() {
                n_vanished += 1;
            }
        }
        assert!(n_vanished > 0, "an unsynced create never vanished");
    }

    #[test]
    fn failed_fsync_loses_pages_that_a_later_fsync_does_not_save() {
        let mut n_lost = 0;
        for seed in 0..64 {
            let disk = SimDisk::new(seed);
            disk.set_faults(Faults {
                sync_error: 1_000_000,
                ..Faults::default()
            });
            let storage = disk.storage();
            let file = storage.open(&path("/f"), true).expect("open");
            storage.sync_dir(&path("/")).expect("sync dir");
            file.write_all_at(&[1u8; 2048], 0).expect("write");
            assert!(file.sync_data().is_err());
            disk.set_faults(Faults::default());
            file.sync_data().expect("a later fsync succeeds");
            let mut buf = [0u8; 2048];
            crate::storage::read_fully_at(file.as_ref(), &mut buf, 0).expect("read");
            assert_eq!(buf, [1u8; 2048], "the cache still shows the data");
            disk.crash(Crash::PowerLoss);
            let content = disk.read_file(&path("/f")).unwrap_or_default();
            if content != vec![1u8; 2048] {
                n_lost += 1;
            }
        }
        assert!(n_lost > 0, "a failed fsync never lost anything");
    }

    #[test]
    fn full_disk_writes_what_fits_then_fails_and_space_comes_back() {
        let disk = SimDisk::new(1);
        let storage = disk.storage();
        let file = storage.open(&path("/f"), true).expect("open");
        disk.set_capacity(Some(100));
        let error = file.write_all_at(&[7u8; 150], 0).expect_err("full");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert_eq!(file.size_bytes().expect("size"), 100);
        file.write_all_at(&[8u8; 50], 10)
            .expect("overwrite needs no space");
        file.set_size_bytes(20).expect("truncate");
        file.write_all_at(&[9u8; 60], 20).expect("space came back");
        storage.remove_file(&path("/f")).expect("unlink");
        assert_eq!(disk.used_bytes(), 80, "an open file keeps its space");
        drop(file);
        assert_eq!(disk.used_bytes(), 0);
    }

    #[test]
    fn locks_exclude_and_die_with_the_process() {
        let disk = SimDisk::new(3);
        let storage = disk.storage();
        let guard = storage.lock(&path("/lock")).expect("lock");
        let again = storage.lock(&path("/lock")).map(|_| ());
        assert_eq!(
            again.map_err(|error| error.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
        drop(guard);
        let guard = storage.lock(&path("/lock")).expect("relock");
        disk.crash(Crash::ProcessCrash);
        let storage = disk.storage();
        let _ = storage
            .lock(&path("/lock"))
            .expect("a crash releases the lock");
        drop(guard);
    }

    #[test]
    fn same_seed_same_faults() {
        let run = |seed| {
            let disk = SimDisk::new(seed);
            disk.set_faults(Faults {
                read_flip: 300_000,
                read_short: 300_000,
                ..Faults::default()
            });
            let storage = disk.storage();
            let file = storage.open(&path("/f"), true).expect("open");
            file.write_all_at(&[0u8; 4096], 0).expect("write");
            let mut out = Vec::new();
            for position in 0..50 {
                let mut buf = [0u8; 64];
                let n = file.read_at(&mut buf, position * 13).expect("read");
                out.push((n, buf));
            }
            out
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }
}
