//! The serving core of Ferrum: KV block management with prefix caching, the
//! token-budget scheduler and the request lifecycle. Everything here is plain
//! CPU data (no tensors), so it is unit-tested with exact asserts.

pub mod blocks;
pub mod request;
pub mod runner;
pub mod sampler;
pub mod sched;

pub use blocks::{BlockCopy, BlockError, BlockId, BlockManager, PrefixCacheStats, PrefixHit, SeqId};
pub use request::{FinishReason, Request, RequestError, RequestId, RequestStatus};
pub use sched::{ScheduledSeq, Scheduler, SchedulerConfig, SchedulerError, StepPlan, UpdateOutput};
