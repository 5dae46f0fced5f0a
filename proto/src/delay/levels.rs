//! RocketMQ's 18 delay levels: a leaf, so the validation rules ([`crate::validate`]) can name them
//! without depending on the delay arithmetic in [`super`].

/// Delay of each level, level 1 first (RocketMQ's default `messageDelayLevel`).
pub const LEVELS_MS: [i64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000, 480_000, 540_000,
    600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];

/// The levels as people write them, for errors and docs.
pub const LEVEL_NAMES: &str = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";
