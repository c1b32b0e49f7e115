//! The NEU ledger: an append-only journal of token moves, from which every balance is derived.
//!
//! Kinds: `grant` adds tokens; `reserve` sets some aside for a job; `release` gives a job's
//! reservation back; `deduct` spends from a job's reservation; `expire` retires trial tokens
//! that outlived their trial. Per bucket (`trial`, `paid`) and in total:
//!
//! ```text
//! reserved  = reserve − release − deduct      spent = deduct      expired = expire
//! available = grant − reserved − spent − expired  ≥ 0
//! ```
//!
//! so `available + reserved + spent + expired == granted` by construction; what the code must
//! keep true is that no part goes negative, which every move checks inside one transaction
//! that holds the account's write lock.
//!
//! Reservations draw from the trial bucket first, then paid; deductions spend a job's trial
//! tokens first, and releases return its paid tokens first, so trial tokens are the ones used
//! up. A trial that passes its `expires_at` is closed lazily, by the next move or balance read
//! of that account: its available part becomes an `expire` entry. Trial tokens that were
//! reserved at that moment stay reserved (and can still be spent); if they are released later,
//! they expire instead of returning.

use crate::DbResult;
use async_trait::async_trait;
use convertrilo_core::{JobId, JobStatus, Neu, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Trial,
    Paid,
}

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Trial => "trial",
            Bucket::Paid => "paid",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Bucket::Trial, Bucket::Paid]
            .into_iter()
            .find(|b| b.as_str() == s)
    }
}

/// Declared in the order of [`EntryKind::ALL`], which indexes per-kind sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Grant,
    Reserve,
    Release,
    Deduct,
    Expire,
}

impl EntryKind {
    pub const ALL: [EntryKind; 5] = [
        EntryKind::Grant,
        EntryKind::Reserve,
        EntryKind::Release,
        EntryKind::Deduct,
        EntryKind::Expire,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Grant => "grant",
            EntryKind::Reserve => "reserve",
            EntryKind::Release => "release",
            EntryKind::Deduct => "deduct",
            EntryKind::Expire => "expire",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One journal line. `amount` is always positive; the kind gives its direction.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    pub id: uuid::Uuid,
    pub user_id: UserId,
    /// Set on `reserve`, `release` and `deduct`, and on an `expire` caused by a release.
    pub job_id: Option<JobId>,
    pub kind: EntryKind,
    pub bucket: Bucket,
    pub amount: Neu,
    /// Trial grants only.
    pub expires_at: Option<i64>,
    pub created_at: i64,
}

/// A trial grant for a new account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trial {
    pub amount: Neu,
    /// Milliseconds since the epoch; from then on its unreserved part is expired.
    pub expires_at: i64,
}

/// One bucket's totals; `available + reserved + spent + expired == granted`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BucketBalance {
    pub granted: Neu,
    pub available: Neu,
    pub reserved: Neu,
    pub spent: Neu,
    pub expired: Neu,
}

impl BucketBalance {
    /// Derives the totals from the sum of each kind of entry, indexed like [`EntryKind::ALL`].
    pub fn from_sums(sums: [i64; 5]) -> Self {
        let [grant, reserve, release, deduct, expire] = sums;
        let reserved = reserve - release - deduct;
        Self {
            granted: Neu::from_millis(grant),
            available: Neu::from_millis(grant - reserved - deduct - expire),
            reserved: Neu::from_millis(reserved),
            spent: Neu::from_millis(deduct),
            expired: Neu::from_millis(expire),
        }
    }
}

/// An account's tokens at one instant. The totals are the sums of the two buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balance {
    pub granted: Neu,
    pub available: Neu,
    pub reserved: Neu,
    pub spent: Neu,
    pub expired: Neu,
    /// The trial tokens still available to reserve (the contract's `trialGrantRemaining`).
    pub trial_remaining: Neu,
    pub trial_expires_at: Option<i64>,
    pub trial: BucketBalance,
    pub paid: BucketBalance,
}

impl Balance {
    pub fn new(trial: BucketBalance, paid: BucketBalance, trial_expires_at: Option<i64>) -> Self {
        let add =
            |f: fn(&BucketBalance) -> Neu| Neu::from_millis(f(&trial).millis() + f(&paid).millis());
        Self {
            granted: add(|b| b.granted),
            available: add(|b| b.available),
            reserved: add(|b| b.reserved),
            spent: add(|b| b.spent),
            expired: add(|b| b.expired),
            trial_remaining: trial.available,
            trial_expires_at,
            trial,
            paid,
        }
    }
}

/// What asking to reserve tokens for a job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The job now holds `held`; `added` of it was drawn from available by this call (zero
    /// when the job already held that much).
    Reserved { added: Neu, held: Neu },
    /// `required` more tokens are needed than are `available`; nothing was written.
    Insufficient { required: Neu, available: Neu },
    /// The job has finished, so a reservation would never be settled; nothing was written.
    Finished(JobStatus),
}

/// Token moves that are not tied to a job state change (those live in `JobRepo`: `enqueue`
/// reserves, `finish` deducts and releases, `cancel` and a given-up `claim` release).
///
/// Reservations are per job and idempotent: a job holds at most one live reservation (its
/// reserves minus its releases and deductions). Reserving `amount` for a job that holds less
/// tops it up to `amount`; reserving for a job that already holds `amount` or more changes
/// nothing, so a retried request never reserves twice. Only releases and deductions shrink it.
///
/// The `*_for_job` moves answer `DbError::NotFound` when the user has no such job and
/// `DbError::Invalid` for an amount of zero or less.
/// The largest single grant; keeps every sum far from integer overflow.
pub const MAX_GRANT: Neu = Neu::from_whole_const(1_000_000_000);

#[async_trait]
pub trait LedgerRepo: Send + Sync {
    /// The account's balance at `now_ms`, closing an expired trial first if one is still open
    /// (the only case in which reading writes). `now_ms` is meant to be the current time: a
    /// later one expires a trial early. An unknown user has an empty balance.
    async fn balance(&self, user: UserId, now_ms: i64) -> DbResult<Balance>;
    /// Adds paid tokens (admin). `DbError::NotFound` for an unknown user.
    async fn grant(&self, user: UserId, amount: Neu) -> DbResult<Balance>;
    /// Tops the job's reservation up to `amount` (see the trait notes), trial tokens first.
    async fn reserve_for_job(&self, user: UserId, job: JobId, amount: Neu)
        -> DbResult<Reservation>;
    /// Releases up to `amount` of the job's reservation, paid tokens first; returns what was
    /// released.
    async fn release_for_job(&self, user: UserId, job: JobId, amount: Neu) -> DbResult<Neu>;
    /// Spends up to `amount` from the job's reservation, trial tokens first; returns what was
    /// deducted.
    async fn deduct_for_job(&self, user: UserId, job: JobId, amount: Neu) -> DbResult<Neu>;
    /// What the job holds reserved now.
    async fn job_reserved(&self, job: JobId) -> DbResult<Neu>;
    /// What the job holds in reserve and what it has been charged, in one read.
    async fn job_totals(&self, job: JobId) -> DbResult<(Neu, Neu)>;
    /// The account's journal, oldest first (audits, admin views, tests).
    async fn entries(&self, user: UserId) -> DbResult<Vec<LedgerEntry>>;
}
