//! The job state machine: created → queued → running → success | failed | canceled.

crate::wire_enum!(JobStatus {
    Created => "created",
    Queued => "queued",
    Running => "running",
    Success => "success",
    Failed => "failed",
    Canceled => "canceled",
});

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Success | Self::Failed | Self::Canceled)
    }

    /// A user may cancel anything that has not finished.
    pub fn is_cancelable(self) -> bool {
        !self.is_terminal()
    }
}
