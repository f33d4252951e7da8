//! Recorded passes (CUDA graphs). A decode pass launches the same kernels
//! with the same arguments for every batch of one shape, so it is recorded
//! once and replayed: the kernel launches then cost one graph launch.
//!
//! For a shape seen the first time, the pass runs eagerly and measures what
//! it allocates and uploads ("measure"); the second time it is captured
//! ("capture"): its buffers come from one device arena and its uploads from
//! one pinned host staging buffer, copied to the arena by copy nodes of the
//! graph; from the third time on, the pass only writes its uploads to the
//! staging buffer (the same offsets, in the same order) and launches the
//! graph ("replay"). A pass ends at its `to_host`, which launches the graph
//! and waits for it; the next pass then reuses the arena and staging bytes.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::driver::sys::{self, CUstreamCaptureMode};
use cudarc::driver::{CudaContext, CudaGraph, CudaSlice, CudaStream, DevicePtr, DeviceRepr, PinnedHostSlice};

use super::dev_err;
use crate::backend::{BackendError, Result};

/// A device buffer of one pass: owned (freed in stream order when dropped)
/// or a piece of the arena of a recorded pass.
pub enum DevBuf<T> {
    Own(CudaSlice<T>),
    Arena { ptr: u64, len: usize, _t: PhantomData<T> },
}

impl<T> DevBuf<T> {
    pub fn len(&self) -> usize {
        match self {
            DevBuf::Own(s) => s.len(),
            DevBuf::Arena { len, .. } => *len,
        }
    }
}

/// Something with a device address.
pub trait DevAddr {
    fn addr(&self, stream: &Arc<CudaStream>) -> u64;
}

impl<T> DevAddr for CudaSlice<T> {
    fn addr(&self, stream: &Arc<CudaStream>) -> u64 {
        self.device_ptr(stream).0
    }
}

impl<T> DevAddr for DevBuf<T> {
    fn addr(&self, stream: &Arc<CudaStream>) -> u64 {
        match self {
            DevBuf::Own(s) => s.device_ptr(stream).0,
            DevBuf::Arena { ptr, .. } => *ptr,
        }
    }
}

/// What a recorded pass depends on: rows (= sequences, one decode row each),
/// the longest context rounded up to a power of two (the decode attention's
/// shape), and a hash of the KV pools' addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PassKey {
    pub rows: usize,
    pub span: usize,
    pub kv: u64,
}

/// Graphs kept at most (older ones are dropped when a new shape exceeds it).
const MAX_GRAPHS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Eager = 0,
    Measure = 1,
    Capture = 2,
    Replay = 3,
}

/// A captured graph. SAFETY of Send: it is only touched under the recorder's mutex.
struct Graph(CudaGraph);
unsafe impl Send for Graph {}

const ALIGN: usize = 256;

#[derive(Default)]
struct State {
    key: Option<PassKey>,
    arena: Option<CudaSlice<u8>>,
    staging: Option<PinnedHostSlice<u8>>,
    /// Host address of `staging` (taken once: reading it later would
    /// synchronize, which a capturing stream does not allow).
    staging_ptr: usize,
    /// Bytes of the arena and of the staging buffer taken by the current pass.
    arena_used: usize,
    staging_used: usize,
    /// Bytes a pass of each measured shape needs.
    need: HashMap<PassKey, (usize, usize)>,
    graphs: HashMap<PassKey, Graph>,
    /// Shapes whose capture failed: they run eagerly from then on.
    broken: HashSet<PassKey>,
}

pub struct Recorder {
    mode: AtomicU8,
    state: Mutex<State>,
}

fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder { mode: AtomicU8::new(Mode::Eager as u8), state: Mutex::new(State::default()) }
    }

    pub fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Acquire) {
            1 => Mode::Measure,
            2 => Mode::Capture,
            3 => Mode::Replay,
            _ => Mode::Eager,
        }
    }

    fn set_mode(&self, m: Mode) {
        self.mode.store(m as u8, Ordering::Release);
    }

    fn state(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| BackendError::Invalid { op: "pass", detail: "lock poisoned".into() })
    }

    /// Start a pass of shape `key` (measure, capture or replay, see above).
    pub fn begin(&self, ctx: &Arc<CudaContext>, stream: &Arc<CudaStream>, key: PassKey) -> Result<()> {
        self.abort(stream)?;
        let mut st = self.state()?;
        st.key = Some(key);
        st.arena_used = 0;
        st.staging_used = 0;
        if st.broken.contains(&key) {
            return Ok(());
        }
        if st.graphs.contains_key(&key) {
            self.set_mode(Mode::Replay);
            return Ok(());
        }
        let Some(&(arena, staging)) = st.need.get(&key) else {
            self.set_mode(Mode::Measure);
            return Ok(());
        };
        // Grow the arena and staging buffer (outside any capture); graphs
        // recorded on the old arena are dropped.
        if st.arena.as_ref().map(|a| a.len() < arena).unwrap_or(true) {
            st.graphs.clear();
            st.arena = None;
            // SAFETY: every arena byte is written by a kernel or copy before it is read.
            st.arena = Some(unsafe { stream.alloc::<u8>(arena.max(ALIGN)) }.map_err(|e| dev_err("pass arena", e))?);
        }
        if st.staging.as_ref().map(|s| s.len() < staging).unwrap_or(true) {
            st.graphs.clear();
            st.staging = None;
            // SAFETY: staging bytes are written by the host before a copy reads them.
            let mut buf = unsafe { ctx.alloc_pinned::<u8>(staging.max(ALIGN)) }.map_err(|e| dev_err("pass staging", e))?;
            st.staging_ptr = buf.as_mut_ptr().map_err(|e| dev_err("pass staging", e))? as usize;
            st.staging = Some(buf);
        }
        stream.synchronize().map_err(|e| dev_err("pass", e))?;
        stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(|e| dev_err("begin capture", e))?;
        self.set_mode(Mode::Capture);
        Ok(())
    }

    /// End a pass left unfinished (an op failed): discard a partial capture.
    pub fn abort(&self, stream: &Arc<CudaStream>) -> Result<()> {
        let mode = self.mode();
        if mode == Mode::Eager {
            return Ok(());
        }
        self.set_mode(Mode::Eager);
        if mode == Mode::Capture {
            drop(stream.end_capture(sys::CUgraphInstantiate_flags(0)));
        }
        Ok(())
    }

    /// `n` elements of `T` from the arena (capture, replay), or `None` when
    /// the caller should allocate them itself (eager, measure: counted).
    pub fn alloc<T>(&self, stream: &Arc<CudaStream>, n: usize) -> Result<Option<DevBuf<T>>> {
        let bytes = round_up(n * std::mem::size_of::<T>());
        match self.mode() {
            Mode::Eager => Ok(None),
            Mode::Measure => {
                self.state()?.arena_used += bytes;
                Ok(None)
            }
            Mode::Capture | Mode::Replay => {
                let mut st = self.state()?;
                let off = st.arena_used;
                let arena = st.arena.as_ref().ok_or_else(|| BackendError::Invalid { op: "pass", detail: "no arena".into() })?;
                if off + bytes > arena.len() {
                    return Err(BackendError::Invalid { op: "pass", detail: format!("arena of {} bytes exceeded", arena.len()) });
                }
                let ptr = arena.addr(stream) + off as u64;
                st.arena_used += bytes;
                Ok(Some(DevBuf::Arena { ptr, len: n, _t: PhantomData }))
            }
        }
    }

    /// Upload `data` into the arena through the staging buffer (capture:
    /// recorded copy; replay: staging written only), or `None` (eager,
    /// measure: counted) when the caller should upload it itself.
    pub fn upload<T: DeviceRepr>(&self, stream: &Arc<CudaStream>, data: &[T]) -> Result<Option<DevBuf<T>>> {
        let bytes = std::mem::size_of_val(data);
        let mode = self.mode();
        if mode == Mode::Measure {
            self.state()?.staging_used += round_up(bytes);
        }
        let Some(buf) = self.alloc::<T>(stream, data.len())? else { return Ok(None) };
        let mut st = self.state()?;
        let off = st.staging_used;
        let cap = st.staging.as_ref().map(|s| s.len()).unwrap_or(0);
        if off + bytes > cap {
            return Err(BackendError::Invalid { op: "pass", detail: format!("staging buffer of {cap} bytes exceeded") });
        }
        let host = st.staging_ptr as *mut u8;
        // SAFETY: `off + bytes` is within the pinned buffer; the previous
        // pass's copies have completed (a pass ends by waiting for its graph).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr() as *const u8, host.add(off), bytes);
            if mode == Mode::Capture {
                sys::cuMemcpyHtoDAsync_v2(buf.addr(stream), host.add(off) as *const _, bytes, stream.cu_stream())
                    .result()
                    .map_err(|e| dev_err("pass upload", e))?;
            }
        }
        st.staging_used += round_up(bytes);
        Ok(Some(buf))
    }

    /// End the pass before its results are read: record the measured needs,
    /// or finish the capture, then launch the graph (capture, replay).
    pub fn finish(&self, stream: &Arc<CudaStream>) -> Result<()> {
        let mode = self.mode();
        if mode == Mode::Eager {
            return Ok(());
        }
        self.set_mode(Mode::Eager);
        let mut st = self.state()?;
        let key = st.key.take().ok_or_else(|| BackendError::Invalid { op: "pass", detail: "no pass key".into() })?;
        match mode {
            Mode::Measure => {
                let need = (st.arena_used, st.staging_used);
                st.need.insert(key, need);
            }
            Mode::Capture => {
                // A shape whose capture fails runs eagerly from then on (this
                // pass's kernels did not run: it fails).
                let captured = stream.end_capture(sys::CUgraphInstantiate_flags(0)).map_err(|e| dev_err("end capture", e));
                let g = match captured.and_then(|g| g.ok_or_else(|| BackendError::Invalid { op: "pass", detail: "empty capture".into() })) {
                    Ok(g) => g,
                    Err(e) => {
                        st.broken.insert(key);
                        return Err(e);
                    }
                };
                g.launch().map_err(|e| dev_err("graph launch", e))?;
                if st.graphs.len() >= MAX_GRAPHS {
                    st.graphs.clear();
                }
                st.graphs.insert(key, Graph(g));
            }
            Mode::Replay => {
                let g = st.graphs.get(&key).ok_or_else(|| BackendError::Invalid { op: "pass", detail: "graph missing".into() })?;
                g.0.launch().map_err(|e| dev_err("graph launch", e))?;
            }
            Mode::Eager => {}
        }
        Ok(())
    }
}
