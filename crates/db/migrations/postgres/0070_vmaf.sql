-- What a VMAF-targeted encode (optimize: vmaf) came to: JSON of
-- convertrilo_core::vmaf::VmafReport, written by the worker when the job succeeds. NULL for
-- every other job.
ALTER TABLE jobs ADD COLUMN vmaf TEXT;
