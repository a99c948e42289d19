//! Block devices as source and destination (loop devices; needs root).

use crate::util::*;

/// Attaches `img`, or reports why it cannot.
fn attach(img: &std::path::Path, what: &str) -> Option<LoopDev> {
    match LoopDev::attach(img) {
        Ok(d) => Some(d),
        Err(e) => {
            skip(what, &format!("cannot attach a loop device: {e}"));
            None
        }
    }
}

/// 8 MiB: random data, a run of zeros (zero chunks), a repeated chunk, random data.
fn device_image() -> Vec<u8> {
    let mut d = random_bytes(8 * MIB, 801);
    d[2 * MIB..4 * MIB].fill(0);
    let chunk = d[..CHUNK].to_vec();
    d[5 * MIB..5 * MIB + CHUNK].copy_from_slice(&chunk);
    d
}

#[test]
fn block_device_source_and_destination() {
    let what = "block device backup and restore";
    if !have_root(what) {
        return;
    }
    let _serial = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    let want = device_image();
    let img = env.path("disk.img");
    write_file(&img, &want);
    let Some(src) = attach(&img, what) else {
        return;
    };
    assert_eq!(src.size(), want.len() as u64);

    let d = env.backup(&src.dev, &["--name", "loop"]);
    assert_eq!(num(&d, "source_bytes"), src.size(), "{d}");
    // A device has no holes: every byte is read; zero chunks are still not stored.
    assert_eq!(num(&d, "bytes_read"), want.len() as u64, "{d}");
    assert_eq!(num(&d, "chunks_zero"), (2 * MIB / CHUNK) as u64, "{d}");
    assert_eq!(num(&d, "chunks_reused"), 1, "{d}");
    let id = text(&d, "snapshot_id").to_string();
    let listed = env.snapshots();
    assert_eq!(num(&listed[0], "source_bytes"), want.len() as u64);

    let file = env.path("restored.img");
    env.restore_to(&id, &file);
    assert_same(&read(&file), &want, "device -> file");
    assert_same(&env.restore_stdout(&id), &want, "device -> stdout");

    // Onto a second device of the same size, full of other data: zero chunks must be
    // written as zeros there, not skipped. No --force is needed for a device.
    let img2 = env.path("target.img");
    write_file(&img2, &random_bytes(want.len(), 802));
    let Some(dst) = attach(&img2, what) else {
        return;
    };
    let out = env
        .cmd("restore", &[id.as_str(), "--to"])
        .arg(&dst.dev)
        .run()
        .ok();
    assert!(out.stdout.is_empty(), "{out}");
    assert_same(&dst.contents(), &want, "restored device");
    drop(dst); // detach: the backing file must hold the image too
    assert_same(&read(&img2), &want, "backing file of the restored device");

    // Onto a larger device: the image, and the rest untouched.
    let img3 = env.path("larger.img");
    let tail = random_bytes(MIB, 803);
    write_file(
        &img3,
        &[random_bytes(want.len(), 804), tail.clone()].concat(),
    );
    let Some(dst) = attach(&img3, what) else {
        return;
    };
    env.cmd("restore", &[id.as_str(), "--to"])
        .arg(&dst.dev)
        .run()
        .ok();
    let got = dst.contents();
    assert_same(&got[..want.len()], &want, "larger device: image");
    assert_same(
        &got[want.len()..],
        &tail,
        "larger device: the rest is untouched",
    );
}

#[test]
fn restore_onto_a_smaller_device_is_refused() {
    let what = "restore onto a smaller block device";
    if !have_root(what) {
        return;
    }
    let _serial = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    let src = env.path("a.img");
    write_file(&src, &random_bytes(2 * MIB, 811));
    let id = text(&env.backup(&src, &[]), "snapshot_id").to_string();
    let small = env.path("small.img");
    let before = random_bytes(MIB, 812);
    write_file(&small, &before);
    let Some(dst) = attach(&small, what) else {
        return;
    };
    let out = env
        .cmd("restore", &[id.as_str(), "--to"])
        .arg(&dst.dev)
        .run();
    out.assert_error(1, &["larger device"]);
    assert_same(
        &dst.contents(),
        &before,
        "a refused restore must not write the device",
    );
}
