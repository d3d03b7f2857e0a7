//! Limits, with Lambda's published values as defaults.

/// Largest request and response payload of a synchronous invocation (Lambda: 6 MB).
pub const MAX_SYNC_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// Largest code package accepted inline in a request (Lambda: 50 MB zipped).
pub const MAX_ZIP_BYTES: usize = 50 * 1024 * 1024;
/// Largest request body of CreateFunction/UpdateFunctionCode: the zip in base64 plus the JSON around it.
pub const MAX_CODE_REQUEST_BYTES: usize = MAX_ZIP_BYTES / 3 * 4 + 64 * 1024;
/// Largest unpacked size of a code package (Lambda: 250 MB).
pub const MAX_UNZIPPED_BYTES: u64 = 250 * 1024 * 1024;
/// Largest number of entries in a code package.
pub const MAX_ZIP_ENTRIES: usize = 20_000;
pub const MIN_MEMORY_MB: u32 = 128;
pub const MAX_MEMORY_MB: u32 = 10_240;
pub const DEFAULT_MEMORY_MB: u32 = 128;
pub const MIN_TIMEOUT_S: u32 = 1;
pub const MAX_TIMEOUT_S: u32 = 900;
pub const DEFAULT_TIMEOUT_S: u32 = 3;
/// Total size of a function's environment variables, keys and values (Lambda: 4 KB).
pub const MAX_ENVIRONMENT_BYTES: usize = 4 * 1024;
pub const MAX_DESCRIPTION_CHARS: usize = 256;
/// The log tail returned with `LogType: Tail`.
pub const LOG_TAIL_BYTES: usize = 4 * 1024;
/// What is kept of one invocation's own log output.
pub const MAX_FUNCTION_LOG_BYTES: usize = 256 * 1024;
