//! `sys::keep_freed_buffers` keeps chunk-sized buffers in the heap: after it, such a buffer is
//! no longer mapped on its own (and unmapped when freed). A test binary of its own, as the
//! allocator's counters are process-wide.
// Reading the counters is a C call.
#![allow(unsafe_code)]

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn chunk_sized_buffers_come_from_the_heap() {
    // Blocks the allocator holds as separate mappings.
    fn mapped() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        unsafe { libc::mallinfo2() }.hblks
    }
    // Without the setting, a 4 MiB buffer gets a mapping of its own (which also proves the
    // counter sees it). Freeing it raises glibc's dynamic threshold to 4 MiB.
    let before = mapped();
    let buf = std::hint::black_box(vec![1u8; 4 << 20]);
    assert_eq!(mapped(), before + 1, "the allocator's default changed");
    drop(buf);

    mover::sys::keep_freed_buffers();
    // 16 MiB, above the dynamic threshold: mapped without the setting, from the heap with it.
    let before = mapped();
    let buf = std::hint::black_box(vec![1u8; 16 << 20]);
    assert_eq!(mapped(), before, "a 16 MiB buffer was mapped on its own");
    drop(buf);
}
