//! Property: for random sizes, contents, layouts (holes), chunk sizes and thread counts, every
//! backup restores bit-exact, from an image or from stdin, to a file or to stdout.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

use crate::util::*;

#[derive(Clone, Debug)]
enum Content {
    Random,
    Zeros,
    /// A short pattern repeated.
    Repeat(usize),
    /// Random islands in holes.
    Sparse,
    /// Runs of zeros and random bytes.
    Mixed,
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        Just(Content::Random),
        Just(Content::Zeros),
        (1usize..5000).prop_map(Content::Repeat),
        Just(Content::Sparse),
        Just(Content::Mixed),
    ]
}

fn build(path: &std::path::Path, len: usize, seed: u64, kind: &Content) -> Vec<u8> {
    let data = match kind {
        Content::Random => random_bytes(len, seed),
        Content::Zeros => vec![0; len],
        Content::Repeat(p) => random_bytes(*p, seed)
            .into_iter()
            .cycle()
            .take(len)
            .collect(),
        Content::Sparse | Content::Mixed => {
            let mut d = vec![0u8; len];
            let noise = random_bytes(len, seed);
            let marks = random_bytes(64, seed ^ 1);
            for (i, m) in marks.iter().enumerate() {
                if m % 3 == 0 {
                    let (s, e) = (len * i / 64, len * (i + 1) / 64);
                    d[s..e].copy_from_slice(&noise[s..e]);
                }
            }
            d
        }
    };
    if matches!(kind, Content::Sparse) {
        // Only the non-zero 4 KiB blocks are written; the rest stay holes.
        let islands: Vec<(u64, &[u8])> = data
            .chunks(4096)
            .enumerate()
            .filter(|(_, c)| c.iter().any(|&b| b != 0))
            .map(|(i, c)| ((i * 4096) as u64, c))
            .collect();
        write_sparse(path, len as u64, &islands);
    } else {
        write_file(path, &data);
    }
    data
}

proptest! {
    #![proptest_config(Config {
        cases: 8,
        max_shrink_iters: 16,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    })]

    #[test]
    fn backup_then_restore_is_identity(
        len in prop_oneof![0usize..3000, 0usize..(3 * MIB)],
        seed in any::<u64>(),
        kind in content(),
        chunk in prop::sample::select(vec!["64KiB", "128KiB", "1MiB"]),
        threads in 1u16..4,
    ) {
        let env = Env::new();
        let src = env.path("src.img");
        let want = build(&src, len, seed, &kind);
        let threads = threads.to_string();
        let flags = ["--chunk-size", chunk, "--threads", threads.as_str()];

        let image = env.backup(&src, &flags);
        prop_assert_eq!(num(&image, "source_bytes"), len as u64);
        let stream = env.backup_stdin(&want, &flags);
        prop_assert_eq!(num(&stream, "source_bytes"), len as u64);

        for d in [&image, &stream] {
            let id = text(d, "snapshot_id");
            let dest = env.path(&format!("out-{id}"));
            env.cmd("restore", &[id, "--threads", threads.as_str(), "--to"])
                .arg(&dest)
                .run()
                .ok();
            assert_same(&read(&dest), &want, &format!("{kind:?} {len} -> file"));
            assert_same(&env.restore_stdout(id), &want, &format!("{kind:?} {len} -> stdout"));
        }
        // verify agrees
        env.cmd("verify", &["--json"]).run().ok();
    }
}
