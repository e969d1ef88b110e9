//! How the process's allocator treats the large buffers the kernels allocate every step.

/// Tells glibc's `malloc` (64-bit) to keep freed memory for the next allocation instead of
/// handing it back to the system; does nothing elsewhere. Buffers over 32 MB, glibc's largest
/// mmap threshold, are still mapped afresh. Call once, early, in a program that trains or
/// runs inference (the `cnnu` binary, the study example and the benchmarks do).
///
/// Why: a training step allocates and frees tens of MB of activations, `col` matrices and
/// gradients. By default glibc maps buffers over its (adaptive) threshold afresh and trims
/// the heap's top when it is freed, so every step the kernel zeroed new pages again: page
/// faults and `clear_page` were ~3% of a step at batch 64 (perf), ~0.4% with this setting.
/// The cost is that the process keeps its peak heap until it exits.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    #[allow(unsafe_code)] // two `mallopt` calls, glibc's documented tuning interface
    // SAFETY: `mallopt` only changes malloc's parameters; both values are in range (32 MB is
    // glibc's largest mmap threshold on 64-bit systems).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
